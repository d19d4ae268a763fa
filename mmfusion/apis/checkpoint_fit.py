"""A checkpoint must fit the model it is loaded into, exactly: MMEngine's ``load_checkpoint(strict=False)`` only logs
weights of another shape or missing ones and goes on with a partly random model, so a test, an inference or a
resumed training with a checkpoint of another config (or of the same config with a model key changed, e.g.
``--cfg-options model.backbone.align=conv``) prints plausible but meaningless results.

Here the checkpoint is compared with the model before it is loaded:

- any weight of the model missing from the checkpoint, or of another shape, is refused with one line naming the
  keys and the likely cause (the model keys whose value differs from the config saved in the checkpoint);
- weights of the checkpoint that the model does not have get a one-line warning naming them (they are ignored);
- a fine-tuning ``load_from`` that is meant to be partial (a new head, another number of classes) is allowed with
  the explicit switch ``partial_load=True`` (``tools/train.py --partial-load``); what is not loaded is then listed
  in a note. Testing, inference and resuming are always exact.

Used by :func:`mmfusion.apis.runner_utils.build_runner` (before the Runner is built, and by
:class:`CheckpointFitHook` for what the Runner loads) and by :class:`mmfusion.apis.inference.FusionInferencer`.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from mmengine.hooks import Hook

from mmfusion.utils.errors import UserError

__all__ = ['CheckpointFit', 'compare_checkpoint', 'checkpoint_mismatch', 'likely_cause', 'refuse_mismatch',
           'CheckpointFitHook', 'PARTIAL_SWITCH']

#: How a user allows a partial fine-tuning ``load_from`` (named in the refusal).
PARTIAL_SWITCH = 'tools/train.py --partial-load (or partial_load = True in the config)'


@dataclass
class CheckpointFit:
    """How a checkpoint's weights compare with a model's: keys of another shape (``'key (ckpt) vs (model)'``),
    keys of the model the checkpoint lacks, keys of the checkpoint the model lacks, and the model's entry count."""
    shape: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    total: int = 0

    @property
    def exact(self) -> bool:
        return not (self.shape or self.missing or self.unexpected)


def _state(checkpoint: Mapping, revise_keys: Sequence) -> dict:
    state = checkpoint.get('state_dict', checkpoint)
    for pattern, repl in revise_keys:
        state = {re.sub(pattern, repl, k): v for k, v in state.items()}
    return state


def compare_checkpoint(model, checkpoint: Mapping, revise_keys: Sequence = ((r'^module\.', ''), ),
                       shapes: Optional[Mapping] = None) -> CheckpointFit:
    """Compare a checkpoint's weights with ``model``'s (names and shapes; no weight is read or gathered).

    Args:
        model (nn.Module | None): The model, or its wrapper (DDP, FSDP); None when ``shapes`` is given.
        checkpoint (Mapping): A loaded checkpoint (``{'state_dict': ...}`` or a bare state dict).
        revise_keys (Sequence): ``(pattern, replacement)`` applied to checkpoint keys, as MMEngine does.
        shapes (Mapping, optional): The model's state-dict key -> shape, when already known.
    """
    state = _state(checkpoint, revise_keys)
    if shapes is None:
        from mmfusion.engine.fsdp import state_dict_shapes
        shapes = state_dict_shapes(model)  # unwraps DDP; under FSDP the full shapes, without gathering weights
    return CheckpointFit(
        shape=[f'{k} {tuple(state[k].shape)} vs {tuple(v)}' for k, v in shapes.items()
               if k in state and hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(v)],
        missing=[k for k in shapes if k not in state],
        unexpected=[k for k in state if k not in shapes],
        total=len(shapes))


def checkpoint_mismatch(model, checkpoint: Mapping,
                        revise_keys: Sequence = ((r'^module\.', ''), )) -> tuple[Optional[str], Optional[str]]:
    """``(refusal, warning)``: why the checkpoint does not fit ``model`` (a weight missing or of another shape;
    None if it fits) and a warning on checkpoint weights the model does not have (None if there are none)."""
    fit = compare_checkpoint(model, checkpoint, revise_keys)
    return _refusal(fit), _unexpected(fit)


def _few(keys: Sequence[str], n: int = 3) -> str:
    return ', '.join(keys[:n]) + (', ...' if len(keys) > n else '')


def _refusal(fit: CheckpointFit) -> Optional[str]:
    parts = []
    if fit.missing:
        parts.append(f"{len(fit.missing)} of the model's {fit.total} weights are missing from it "
                     f'({_few(fit.missing)})')
    if fit.shape:
        parts.append(f'{len(fit.shape)} of {fit.total} weights have another shape (checkpoint vs model: '
                     f'{_few(fit.shape)})')
    if parts and fit.unexpected:  # context for a refusal (alone, unknown weights only warn)
        parts.append(_unexpected(fit))
    return '; '.join(parts) or None


def _unexpected(fit: CheckpointFit) -> Optional[str]:
    if not fit.unexpected:
        return None
    return f'{len(fit.unexpected)} checkpoint weights are unknown to the model ({_few(fit.unexpected)})'


# --- the likely cause: what differs between the model config saved in the checkpoint and this one -----------------


def _flatten(node: Any, prefix: str, out: dict) -> dict:
    if isinstance(node, Mapping):
        for k, v in node.items():
            _flatten(v, f'{prefix}.{k}', out)
    elif isinstance(node, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in node):
        for i, v in enumerate(node):
            _flatten(v, f'{prefix}.{i}', out)
    else:
        out[prefix] = node
    return out


def _literal(node) -> Any:
    """The value of a config expression made of literals, lists, tuples and ``dict(...)`` calls; anything else is
    kept as its source text. Nothing is executed (the text comes from the checkpoint file)."""
    import ast
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args \
            and all(kw.arg is not None for kw in node.keywords):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    return ast.unparse(node)


def _saved_model_cfg(checkpoint: Mapping) -> Optional[Mapping]:
    """The ``model`` of the config MMEngine saved in the checkpoint (``meta.cfg``, its ``pretty_text``), read
    without executing it; None when there is none."""
    import ast
    meta = checkpoint.get('meta')
    text = meta.get('cfg') if isinstance(meta, Mapping) else None
    if not isinstance(text, str) or 'model' not in text:
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, 'id', None) == 'model' for t in stmt.targets):
            value = _literal(stmt.value)
            return value if isinstance(value, Mapping) else None
    return None


def _relevance(path: str, keys: Sequence[str]) -> int:
    """How many leading components of the config path ``model.a.b`` name a module of one of ``keys``."""
    parts = path.split('.')[1:]
    best = 0
    for key in keys[:50]:
        names, n = key.split('.'), 0
        for a, b in zip(parts, names):
            if a != b and not b.startswith(a):
                break
            n += 1
        best = max(best, n)
    return best


def likely_cause(model_cfg: Optional[Mapping], checkpoint: Mapping, keys: Sequence[str]) -> Optional[str]:
    """The model config keys that differ between ``model_cfg`` and the config saved in ``checkpoint``, those
    nearest to the mismatching weights ``keys`` first, as ``model.x is A here but B in the checkpoint's config``."""
    saved = _saved_model_cfg(checkpoint)
    if saved is None or model_cfg is None:
        return None
    ours = _flatten(model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else dict(model_cfg), 'model', {})
    theirs = _flatten(saved.to_dict() if hasattr(saved, 'to_dict') else dict(saved), 'model', {})
    missing = object()
    diffs = [p for p in sorted(set(ours) | set(theirs)) if ours.get(p, missing) != theirs.get(p, missing)]
    if not diffs:
        return None
    diffs.sort(key=lambda p: -_relevance(p, keys))

    def said(node, path):
        v = node.get(path, missing)
        return 'not set' if v is missing else repr(v)

    return '; '.join(f'{p} is {said(ours, p)} here but {said(theirs, p)} in the checkpoint\'s config'
                     for p in diffs[:3]) + (f' (and {len(diffs) - 3} more model keys differ)' if len(diffs) > 3 else '')


def refuse_mismatch(model, checkpoint: Mapping, source: str, config: str, partial: bool = False,
                    model_cfg: Optional[Mapping] = None, shapes: Optional[Mapping] = None) -> CheckpointFit:
    """Raise :class:`UserError` when the checkpoint ``source`` does not fit ``model`` (built from ``config``) exactly;
    warn in one line about checkpoint weights the model does not have.

    Args:
        model (nn.Module | None): The model (or wrapper); None when ``shapes`` is given.
        checkpoint (Mapping): The loaded checkpoint.
        source (str): Where it comes from (named in the message).
        config (str): The config the model was built from (named in the message).
        partial (bool): A fine-tuning load that may leave weights out (only a note lists them). Default: False.
        model_cfg (Mapping, optional): The model config, compared with the one saved in the checkpoint to name the
            likely cause. Default: None.
        shapes (Mapping, optional): The model's state-dict key -> shape, instead of ``model``.

    Returns:
        CheckpointFit: The comparison.
    """
    fit = compare_checkpoint(model, checkpoint, shapes=shapes)
    refusal = _refusal(fit)
    if refusal and partial:
        print(f'note: partial load (partial_load=True) of checkpoint {source}: {refusal}; those weights keep '
              'their initial values', file=sys.stderr, flush=True)
    elif refusal:
        cause = likely_cause(model_cfg, checkpoint, fit.missing + [s.split(' ')[0] for s in fit.shape])
        cause = (f'likely cause: {cause}' if cause else
                 'likely cause: it was trained with another config, or a model key was changed (e.g. with '
                 '--cfg-options)')
        raise UserError(f'checkpoint {source} does not fit the model of {config}: {refusal}; {cause}; this '
                        'checkpoint was not trained with this config: pass the config it was trained with (for a '
                        f'fine-tuning load_from that is meant to be partial: {PARTIAL_SWITCH})')
    unexpected = _unexpected(fit)
    if unexpected:
        print(f'warning: checkpoint {source}: {unexpected}; they are ignored', file=sys.stderr, flush=True)
    return fit


class CheckpointFitHook(Hook):
    """Check every checkpoint the Runner loads (``load_from``, ``resume``) against the model before it is loaded.

    Args:
        config (str): The config the model was built from (named in the message).
        partial (bool): Allow a partial ``load_from`` (fine-tuning; never for resuming). Default: False.
        model_cfg (Mapping, optional): The model config, to name the likely cause of a mismatch. Default: None.
        checked (Sequence[str]): Checkpoints already compared before the Runner was built (not said twice).
    """

    priority = 'VERY_LOW'  # after hooks that may convert the checkpoint, just before MMEngine loads it

    def __init__(self, config: str, partial: bool = False, model_cfg: Optional[Mapping] = None,
                 checked: Sequence[str] = ()) -> None:
        self.config = config
        self.partial = partial
        self.model_cfg = model_cfg
        self.checked = set(checked)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        source = runner._load_from or 'the latest checkpoint of the work dir'
        if source in self.checked:
            return
        refuse_mismatch(runner.model, checkpoint, source, self.config,
                        partial=self.partial and not getattr(runner, '_resume', False), model_cfg=self.model_cfg)
