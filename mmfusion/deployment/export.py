"""ONNX export of mmfusion's Mask2Former models (fused, and single-encoder baselines) with standard operators only.

What the graph computes: the data preprocessor's output (a normalised, padded (B, 3, H, W) float image) in, the
head's outputs before the task's post-processing out (:mod:`mmfusion.deployment.postprocess` says which, and runs
the rest for both ONNX Runtime and PyTorch).

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which records the model as it
runs. The ``torch.export``-based one (``dynamo=True``) is not used: tried on the tiny fused semantic model (torch
2.13, onnxscript 0.7.2, dynamic height and width), ``torch.export`` itself failed in both strict and non-strict mode
("Cannot access data pointer of Tensor (e.g. FakeTensor ...)"), and the encoders' and mmcv's Python arithmetic on
sizes (padding to a multiple, Hiera's window partition, the deformable attention's split by level) would need
rewrites before shapes could stay symbolic. Multi-scale deformable
attention then goes through mmcv's pure-PyTorch path on the CPU (``F.grid_sample``), which opset >= 16 exports as the
standard ``GridSample``: no custom domain, so stock ONNX Runtime needs no plugin (mmdeploy instead emits its own
``MMCVMultiScaleDeformableAttention``). The export therefore always runs on the CPU: on a GPU, mmcv would call its
CUDA kernel, whose symbolic is a custom op.

Sizes the TorchScript exporter records as constants cannot vary at run time. ``dynamic='all'`` asks for a dynamic
batch, height and width, ``dynamic='batch'`` for a dynamic batch only; either is checked against PyTorch at a second
batch (and size), and refused in one line, naming the code that fixed the size (the exporter's ``TracerWarning``
locations), where the model keeps it static.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
import tempfile
import time
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from mmfusion.utils.errors import UserError

from .postprocess import INSTANCE, PANOPTIC, SEMANTIC

__all__ = ['DEFAULT_OPSET', 'MIN_OPSET', 'META_KEY', 'OUTPUT_NAMES', 'EXTERNAL_DATA_BYTES', 'ExportWrapper',
           'model_task', 'default_shape', 'preprocess_record', 'export_onnx', 'relative_diff', 'graph_domains',
           'read_spec', 'external_data_file', 'save_onnx']

DEFAULT_OPSET = 17  # LayerNormalization is one op from 17 (the ViT's norms stay single nodes)
MIN_OPSET = 16  # GridSample (multi-scale deformable attention) is standard from 16
META_KEY = 'mmfusion'  # metadata_props key holding the export record (JSON)
INPUT_NAME = 'input'
OUTPUT_NAMES = {SEMANTIC: ('seg_logits', ), INSTANCE: ('cls_logits', 'mask_logits'),
                PANOPTIC: ('cls_logits', 'mask_logits')}
# Where a dynamic export is checked: this much larger input (px, h and w) and this batch, besides the export's own.
DYNAMIC_CHECK_GROW = (32, 64)
DYNAMIC_CHECK_BATCH = 2
DYNAMIC_CHOICES = ('batch', 'all')
# ONNX Runtime vs PyTorch on the export check: max |diff| relative to the output's largest magnitude.
CHECK_TOLERANCE = 1e-3
# Weights above this many bytes go to one external file beside the .onnx: protobuf cannot serialise a message over
# 2 GiB, and the graph itself needs room (e.g. a DINOv3 ViT-7B master).
EXTERNAL_DATA_BYTES = 1_800_000_000


def _type(cfg_type) -> str:
    return str(cfg_type or '').split('.')[-1]


def model_task(cfg, config_name: str = 'the config') -> str:
    """The task of an mmfusion config, or a one-line refusal for a model the ONNX path does not handle.

    Reads only the config (the ONNX Runtime side calls it without building a model).

    Raises:
        UserError: not a Mask2Former model (mmseg ``EncoderDecoder`` + ``Mask2FormerHead`` in ``'whole'`` test mode,
            or mmdet ``Mask2Former`` with instance or panoptic output).
    """
    scope = cfg.get('default_scope')
    model = cfg.get('model') or {}
    fix = ('tools/deployment/ exports Mask2Former models: mmseg EncoderDecoder + Mask2FormerHead (semantic) or mmdet '
           'Mask2Former (instance, panoptic)')
    if scope == 'mmseg':
        head = _type((model.get('decode_head') or {}).get('type'))
        if _type(model.get('type')) != 'EncoderDecoder' or head != 'Mask2FormerHead':
            raise UserError(f'{config_name}: model {_type(model.get("type"))} with decode head {head or None} is not '
                            f'supported for ONNX export; {fix}')
        mode = (model.get('test_cfg') or {}).get('mode', 'whole')
        if mode != 'whole':
            raise UserError(f"{config_name}: model.test_cfg.mode={mode!r} is not supported for ONNX export (the graph "
                            "runs whole images); set --cfg-options model.test_cfg.mode=whole")
        return SEMANTIC
    if scope == 'mmdet':
        if _type(model.get('type')) != 'Mask2Former':
            raise UserError(f'{config_name}: model {_type(model.get("type")) or None} is not supported for ONNX '
                            f'export; {fix}')
        test_cfg = model.get('test_cfg') or {}
        if test_cfg.get('semantic_on', False):
            raise UserError(f'{config_name}: model.test_cfg.semantic_on=True (mmdet has no semantic output for '
                            'Mask2Former); set it False, or use an mmseg semantic config')
        if test_cfg.get('panoptic_on', True):
            return PANOPTIC
        if test_cfg.get('instance_on', False):
            return INSTANCE
        raise UserError(f'{config_name}: model.test_cfg has neither panoptic_on nor instance_on; set one True')
    raise UserError(f"{config_name}: default_scope is {scope!r}; ONNX export needs an mmseg or mmdet mmfusion config")


def default_shape(cfg) -> tuple[int, int]:
    """(H, W) of the graph's input for the config's test size: the data preprocessor's fixed ``size`` when it has
    one, else the test pipeline's ``Resize`` scale, padded to the preprocessor's size divisor."""
    prep = cfg.model.get('data_preprocessor') or {}
    test_cfg = prep.get('test_cfg') or {}
    size = test_cfg.get('size')
    if size is None:
        from mmfusion.apis.inference import test_resize
        resize = test_resize(cfg)
        if resize is None:
            raise UserError(f'{cfg.filename or "the config"}: its test pipeline has no Resize with a fixed scale, so '
                            'there is no test size to export at; pass --shape H W')
        (w, h), _ = resize
        size = (h, w)
    div = prep.get('pad_size_divisor') or test_cfg.get('size_divisor') or 1
    h, w = (int(v) for v in size)
    return (-(-h // div) * div, -(-w // div) * div)


def preprocess_record(cfg) -> dict:
    """What the config's data preprocessor does to an image before the graph (normalisation, channel order,
    padding): stored with the export, so ONNX Runtime inference can refuse a config that prepares images otherwise."""
    prep = cfg.model.get('data_preprocessor') or {}
    keys = ('type', 'mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr', 'pad_size_divisor', 'pad_val', 'test_cfg')
    return json.loads(json.dumps({k: prep.get(k) for k in keys}, default=str))


class ExportWrapper(nn.Module):
    """The part of an mmfusion Mask2Former model that the graph holds: backbone (and neck) and the head up to the
    outputs named in :data:`OUTPUT_NAMES`.

    Args:
        model (nn.Module): The built mmseg ``EncoderDecoder`` or mmdet ``Mask2Former``, in eval mode, on the CPU.
        task (str): ``'semantic'``, ``'instance'`` or ``'panoptic'`` (:func:`model_task`).
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, inputs: torch.Tensor):
        feats = self.model.extract_feat(inputs)
        if self.task == SEMANTIC:
            size = inputs.shape[-2:]  # the batch's padded size, what pad_shape holds in mmseg's test metas
            metas = [dict(img_shape=size, pad_shape=size)]
            return self.model.decode_head.predict(feats, metas, self.model.test_cfg)
        cls_scores, mask_preds = self.model.panoptic_head(feats, [])
        return cls_scores[-1], mask_preds[-1]


def _refuse_unexportable(model: nn.Module, config_name: str) -> None:
    """Refuse what the graph cannot hold, before a long export fails on it."""
    backbone = getattr(model, 'backbone', None)
    if getattr(backbone, 'aux_dtype', None) == 'qint8':
        raise UserError(f"{config_name}: model.backbone.aux_dtype='qint8' runs PyTorch's own int8 kernels "
                        "(quantized::linear_dynamic), which ONNX cannot hold; export the float model "
                        '(--cfg-options model.backbone.aux_dtype=None) and quantise the .onnx instead (README, Deploy)')


def relative_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: the ONNX Runtime vs PyTorch difference relative to the output's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f'shapes differ: {a.shape} vs {b.shape}')
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def graph_domains(model_proto) -> set:
    """The operator domains the graph's nodes use (``''`` is the default ONNX domain), subgraphs included."""
    domains = set()

    def walk(graph):
        for node in graph.node:
            domains.add(node.domain or '')
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model_proto.graph)
    return domains


def read_spec(model_proto, path: str) -> dict:
    """The export record pytorch2onnx.py stores in the file's metadata.

    Raises:
        UserError: the file has none (it was not exported by tools/deployment/pytorch2onnx.py).
    """
    props = {p.key: p.value for p in model_proto.metadata_props}
    if META_KEY not in props:
        raise UserError(f'{path} has no mmfusion export record (metadata {META_KEY!r}): it was not written by '
                        'tools/deployment/pytorch2onnx.py; export the model with it')
    return json.loads(props[META_KEY])


def _run_torch(wrapper: nn.Module, x: torch.Tensor) -> list:
    with torch.no_grad():
        out = wrapper(x)
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out, ))]


def _check_against_torch(session, wrapper: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict:
    """ONNX Runtime vs PyTorch on ``x``: ``{output: relative max |diff|}``."""
    ort_out = session.run(list(names), {INPUT_NAME: x.numpy()})
    return {n: relative_diff(o, t) for n, o, t in zip(names, ort_out, _run_torch(wrapper, x))}


def _fmt(diffs: dict) -> str:
    return ', '.join(f'{n} {d:.2e}' for n, d in diffs.items())


def _dynamic_check(session, wrapper: nn.Module, x: torch.Tensor, names: Sequence[str]) -> tuple:
    """``(diffs, problem)`` of ONNX Runtime vs PyTorch on ``x``; ``problem`` is None when they agree."""
    try:
        diffs = _check_against_torch(session, wrapper, x, names)
    except Exception as e:  # noqa: BLE001 (onnxruntime's own error types)
        return None, f'ONNX Runtime fails there ({" ".join(str(e).split())[:160]})'
    worst = max(diffs.values())
    return diffs, None if worst <= CHECK_TOLERANCE else f'ONNX Runtime differs from PyTorch by {worst:.2e} there'


def _static_sites(caught: Sequence) -> list:
    """``file:line`` of the TracerWarnings the exporter raised: where Python turned a traced size into a constant."""
    sites = []
    for w in caught:
        if issubclass(w.category, torch.jit.TracerWarning):
            where = f'{osp.relpath(w.filename) if not osp.relpath(w.filename).startswith("..") else w.filename}' \
                    f':{w.lineno}'
            if where not in sites:
                sites.append(where)
    return sites


def external_data_file(onnx_path: str) -> str:
    """The one file an export keeps its weights in when they are stored outside the ``.onnx``: ``FILE.onnx.data``
    beside it (the ``.onnx`` names it relative to its own folder, so the two move together)."""
    return onnx_path + '.data'


def _weight_bytes(model_proto) -> int:
    return sum(len(t.raw_data) for t in model_proto.graph.initializer)


def _needs_external_data(model_proto) -> bool:
    """Whether the (loaded) weights are too large for one ``.onnx``: above :data:`EXTERNAL_DATA_BYTES`."""
    return _weight_bytes(model_proto) > EXTERNAL_DATA_BYTES


def save_onnx(model_proto, path: str, external: Optional[bool] = None) -> Optional[str]:
    """Write ``model_proto`` to ``path``, its weights inline or in one external file.

    Weights must be in memory (``onnx.load(..., load_external_data=True)``): torch's exporter writes one file per
    tensor for a model over 2 GiB; this gathers them into :func:`external_data_file` (and leaves the per-tensor
    files for the caller to remove).

    Args:
        model_proto (onnx.ModelProto): The model, weights loaded.
        path (str): The ``.onnx`` to write.
        external (bool, optional): True: weights in :func:`external_data_file`; False: inline; None: external when
            they exceed :data:`EXTERNAL_DATA_BYTES`.

    Returns:
        str | None: The external data file's name (relative to ``path``'s folder), or None.

    Raises:
        UserError: ``external=False`` with weights too large for one file.
    """
    import onnx
    too_large = _needs_external_data(model_proto)
    if external is None:
        external = too_large
    elif not external and too_large:
        raise UserError(f'the weights take {_weight_bytes(model_proto) / 2**30:.2f} GiB, more than one .onnx file '
                        'can hold (protobuf messages stop at 2 GiB); save them to an external file (external=True or '
                        'None)')
    if not external:
        onnx.save_model(model_proto, path)
        return None
    location = osp.basename(external_data_file(path))
    if osp.lexists(osp.join(osp.dirname(path), location)):
        os.remove(osp.join(osp.dirname(path), location))  # onnx appends to an existing file
    onnx.save_model(model_proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=1024)
    return location


def export_onnx(model: nn.Module, task: str, out: str, shape: Sequence[int], dynamic: Optional[str] = None,
                opset: int = DEFAULT_OPSET, extra_spec: Optional[dict] = None, config_name: str = 'the config',
                log: Callable[[str], None] = print, seed: int = 0, external_data: Optional[bool] = None) -> dict:
    """Export ``model`` to ``out``, check the file, and compare ONNX Runtime with PyTorch on a random input.

    The file is written in a temporary folder beside ``out`` and moved to ``out`` only after every check passed, so a
    failed or refused export leaves nothing behind. Weights over :data:`EXTERNAL_DATA_BYTES` (or any, with
    ``external_data=True``) go to one file, :func:`external_data_file` (``FILE.onnx.data``), moved with it.

    Args:
        model (nn.Module): An mmseg ``EncoderDecoder`` / mmdet ``Mask2Former`` with its weights loaded.
        task (str): From :func:`model_task`.
        out (str): The ``.onnx`` to write.
        shape (Sequence[int]): (H, W) of the graph's input (the preprocessed, padded image).
        dynamic (str, optional): ``'batch'``: dynamic batch; ``'all'``: dynamic batch, height and width. Checked
            against PyTorch at batch :data:`DYNAMIC_CHECK_BATCH` (and, for ``'all'``, at ``shape`` +
            :data:`DYNAMIC_CHECK_GROW`); refused where ONNX Runtime fails or disagrees there. Default: None (batch 1
            at ``shape``).
        opset (int): ONNX opset, at least :data:`MIN_OPSET`. Default: :data:`DEFAULT_OPSET`.
        extra_spec (dict, optional): More entries for the export record (dataset_meta, post-processing settings).
        config_name (str): Named in refusals.
        log (Callable): Progress lines. Default: print.
        seed (int): Seed of the random check inputs.
        external_data (bool, optional): True: weights in ``FILE.onnx.data``; None: only when they are too large for
            one file. Default: None.

    Returns:
        dict: ``export_s``, ``size_mb`` (with the external data), ``external_data`` (its path, or None),
        ``max_rel_diff`` (per output, at ``shape``) and, with ``dynamic``,
        ``dynamic_rel_diff`` (at the second batch / size), ``domains``, the record stored (``spec``).

    Raises:
        UserError: a model or option the ONNX path cannot hold (quantised auxiliary, opset < 16, a custom operator
            in the graph, a dynamic export whose sizes stay static), or an export that fails.
    """
    import onnx
    import onnxruntime as ort

    if opset < MIN_OPSET:
        raise UserError(f'--opset {opset}: multi-scale deformable attention needs GridSample, which ONNX has from '
                        f'opset {MIN_OPSET}; pass --opset {MIN_OPSET} or higher (default {DEFAULT_OPSET})')
    if dynamic not in (None, ) + DYNAMIC_CHOICES:
        raise ValueError(f'dynamic must be None or one of {DYNAMIC_CHOICES}, got {dynamic!r}')
    h, w = (int(v) for v in shape)
    if h < 32 or w < 32:
        raise UserError(f'--shape {h} {w}: the input must be at least 32x32 px (the OS32 level); pass a larger shape')
    _refuse_unexportable(model, config_name)
    names = OUTPUT_NAMES[task]
    model = model.cpu().eval()  # on a GPU mmcv's deformable attention would call its CUDA op (a custom ONNX op)
    wrapper = ExportWrapper(model, task).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, h, w, generator=gen)
    spatial = dynamic == 'all'
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {0: 'batch', 2: 'height', 3: 'width'} if spatial else {0: 'batch'}}
        for n in names:
            dynamic_axes[n] = {0: 'batch', 2: 'out_height', 3: 'out_width'} if spatial and n != 'cls_logits' \
                else {0: 'batch'}

    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    # A private folder: torch writes a large model's weights as one file per tensor beside the graph.
    work = tempfile.mkdtemp(prefix='.' + osp.basename(out) + '.', suffix='.tmp', dir=folder)
    tmp = osp.join(work, osp.basename(out))
    try:
        what = {None: '', 'batch': ' (dynamic batch)', 'all': ' (dynamic batch, height, width)'}[dynamic]
        log(f'exporting {config_name} ({task}) at 1x3x{h}x{w}{what}, opset {opset}, TorchScript exporter')
        t0 = time.perf_counter()
        try:
            with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter('always')  # TracerWarnings: where a size became a constant (named if refused)
                torch.onnx.export(wrapper, (x, ), tmp, input_names=[INPUT_NAME], output_names=list(names),
                                  opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True,
                                  dynamo=False)
        except Exception as e:  # noqa: BLE001 (the exporter raises many types; all mean "cannot export this")
            msg = ' '.join(str(e).split())[:300]
            raise UserError(f'{config_name}: the ONNX exporter failed ({type(e).__name__}: {msg}); this model '
                            'cannot be exported as configured (run with --debug for the traceback)') from e
        export_s = time.perf_counter() - t0
        sites = _static_sites(caught)

        proto = onnx.load(tmp)  # weights too (torch's per-tensor files, if any): save_onnx writes them once
        domains = graph_domains(proto)
        custom = sorted(d for d in domains if d not in ('', 'ai.onnx'))
        if custom:
            raise UserError(f'{config_name}: the exported graph uses custom operator domains {custom}, which stock '
                            'ONNX Runtime does not run; export on the CPU with mmcv ops in their PyTorch path')
        if external_data is None:  # decided here: the record in the file names the weights' file
            external_data = _needs_external_data(proto)
        spec = dict(format=1, task=task, input=[INPUT_NAME, 1, 3, h, w], outputs=list(names),
                    dynamic=dict(batch=bool(dynamic), spatial=spatial), opset=opset,
                    exporter=f'torch.onnx TorchScript (torch {torch.__version__})', config=config_name,
                    external_data=osp.basename(external_data_file(out)) if external_data else None,
                    **(extra_spec or {}))
        from mmfusion.version import __version__
        spec['mmfusion'] = __version__
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(spec)
        for name in os.listdir(work):  # torch's per-tensor weight files: their contents are in proto now
            path = osp.join(work, name)
            shutil.rmtree(path) if osp.isdir(path) else os.remove(path)
        save_onnx(proto, tmp, external=external_data)
        del proto
        onnx.checker.check_model(tmp, full_check=False)  # the path form: no 2 GiB protobuf limit

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(tmp, opts, providers=['CPUExecutionProvider'])
        x_check = torch.randn(1, 3, h, w, generator=gen)
        diffs = _check_against_torch(session, wrapper, x_check, names)
        log(f'ONNX Runtime vs PyTorch at 1x3x{h}x{w}, max |diff| / max |PyTorch|: {_fmt(diffs)}')
        result = dict(export_s=export_s, max_rel_diff=diffs, domains=sorted(domains), spec=spec)
        if max(diffs.values()) > CHECK_TOLERANCE:
            raise UserError(f'{config_name}: ONNX Runtime differs from PyTorch by {max(diffs.values()):.2e} '
                            f'(relative, > {CHECK_TOLERANCE:g}) on the check input; the export is not faithful '
                            '(nothing was written)')
        if dynamic:
            h2, w2 = (h + DYNAMIC_CHECK_GROW[0], w + DYNAMIC_CHECK_GROW[1]) if spatial else (h, w)
            d2, problem = _dynamic_check(session, wrapper, torch.randn(DYNAMIC_CHECK_BATCH, 3, h2, w2, generator=gen),
                                         names)
            if problem:
                static, fix = 'the batch', 'export one file per batch size (without --dynamic)'
                if spatial:
                    _, batch_problem = _dynamic_check(session, wrapper,
                                                      torch.randn(DYNAMIC_CHECK_BATCH, 3, h, w, generator=gen), names)
                    static = 'the height and width' + (' and the batch' if batch_problem else '')
                    fix = ('export one file per input size with --shape H W'
                           + ('' if batch_problem else ' (--dynamic batch gives a dynamic batch)'))
                named = f' (sizes fixed at {", ".join(sites[:3])}{", ..." if len(sites) > 3 else ""})' \
                    if sites else ''
                raise UserError(f'--dynamic {dynamic}: the graph of {config_name} keeps {static} it was traced at '
                                f'(1x3x{h}x{w}){named}; checked at {DYNAMIC_CHECK_BATCH}x3x{h2}x{w2}, {problem}; '
                                f'{fix} (nothing was written)')
            log(f'ONNX Runtime vs PyTorch at {DYNAMIC_CHECK_BATCH}x3x{h2}x{w2} (dynamic check): {_fmt(d2)}')
            result['dynamic_rel_diff'] = d2
        del session
        data = external_data_file(out)
        if external_data:  # the weights first: a .onnx in place always finds its own
            os.replace(external_data_file(tmp), data)
        elif osp.lexists(data):
            log(f'note: {data} is not used by the new {osp.basename(out)} (its weights are inside it)')
        os.replace(tmp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result['external_data'] = external_data_file(out) if external_data else None
    result['size_mb'] = (osp.getsize(out) + (osp.getsize(result['external_data']) if external_data else 0)) / 2**20
    return result
