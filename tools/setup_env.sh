#!/usr/bin/env bash
# Creates/updates .venv with the pinned OpenMMLab stack. Idempotent: a second run on a ready machine only checks
# the imports (seconds). The first run compiles mmcv 2.1.0's ops (~25 min on 2 cores); pip's wheel cache keeps the
# result, so a fresh clone on the same machine reuses it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMFUSION_VENV:-$ROOT/.venv}"
PY_BOOT="${PYTHON:-python3.11}"
STAMP="$VENV/.mmfusion-env"
log() { printf '[setup_env %(%H:%M:%S)T] %s\n' -1 "$*"; }

want="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.cfg" "$0" | sha256sum | cut -c1-16)"
check_imports() {
  "$VENV/bin/python" - <<'PY'
import importlib, warnings
warnings.filterwarnings('ignore')
import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, sam2, panopticapi  # noqa: F401
from mmcv.ops import MultiScaleDeformableAttention  # noqa: F401
from transformers import DINOv3ViTConfig, DINOv3ViTModel  # noqa: F401
from sam2.modeling.backbones.hieradet import Hiera  # noqa: F401
import onnx, onnxruntime  # noqa: F401  (requirements/deploy.txt)
import mmfusion  # noqa: F401
print(f'stack ok: torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__} (ops), '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, '
      f'transformers {importlib.import_module("transformers").__version__}')
PY
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && check_imports 2>/dev/null; then
  log "environment ready ($VENV); nothing to install"
  exit 0
fi

t0=$SECONDS
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $PY_BOOT"
  "$PY_BOOT" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off)

log "build tools, torch 2.13.0 (CPU build from local disk when present), numpy"
"${PIP[@]}" -q -r "$ROOT/requirements/build.txt" -r "$ROOT/requirements/torch.txt" numpy==1.26.4

if "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  log "mmcv 2.1.0 with ops already installed"
else
  cuda=0
  if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    cuda=1
  fi
  log "mmcv 2.1.0 with compiled ops (CUDA ops: $cuda). From source this takes ~25 min on 2 cores;" \
      "a cached wheel installs in seconds."
  t1=$SECONDS
  # --no-build-isolation: build against the torch above (an isolated build would fetch another torch).
  MMCV_WITH_OPS=1 FORCE_CUDA=$cuda MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
    "${PIP[@]}" --no-build-isolation -c "$ROOT/requirements/runtime.txt" mmcv==2.1.0 2>&1 | while IFS= read -r line; do
      printf '  [mmcv +%ss] %s\n' "$((SECONDS - t1))" "$line"; done
  log "mmcv done in $((SECONDS - t1)) s"
fi

log "runtime deps, mmengine/mmdet/mmseg, test, optional and deployment (onnx, onnxruntime) deps"
"${PIP[@]}" -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/mminstall.txt" \
  -r "$ROOT/requirements/optional.txt" -r "$ROOT/requirements/tests.txt" -r "$ROOT/requirements/deploy.txt"

log "sam2 1.1.0 (no CUDA extension, no second torch) and panopticapi, without their declared deps"
SAM2_BUILD_CUDA=0 "${PIP[@]}" -q --no-deps --no-build-isolation -r "$ROOT/requirements/sam2.txt"

log "mmfusion (editable)"
"${PIP[@]}" -q --no-deps --no-build-isolation -e "$ROOT"

check_imports
echo "$want" > "$STAMP"
log "environment ready in $((SECONDS - t0)) s"
