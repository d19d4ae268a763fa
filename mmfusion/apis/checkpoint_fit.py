"""A checkpoint must fit the model it is loaded into: MMEngine's ``load_checkpoint(strict=False)`` only logs weights
of another shape or missing ones and goes on with a partly random model, so a test or an inference with the
checkpoint of another config prints plausible but meaningless results. Here the checkpoint is compared with the model
before it is loaded, and refused with one line when it does not fit.

Used by the tools' Runner (:class:`CheckpointFitHook`, registered by
:func:`mmfusion.apis.runner_utils.build_runner`) and by :class:`mmfusion.apis.inference.FusionInferencer`.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from typing import Optional

from mmengine.hooks import Hook

from mmfusion.utils.errors import UserError

__all__ = ['CHECKPOINT_TOLERANCE', 'checkpoint_mismatch', 'refuse_mismatch', 'CheckpointFitHook']

# Share of a model's state-dict entries that may be absent from (or unknown to) a checkpoint before loading it is
# refused; any entry with another shape is refused.
CHECKPOINT_TOLERANCE = 0.01


def checkpoint_mismatch(model, checkpoint: Mapping, tolerance: float = CHECKPOINT_TOLERANCE,
                        revise_keys: Sequence = ((r'^module\.', ''), )) -> tuple[Optional[str], Optional[str]]:
    """Compare a checkpoint's weights with ``model``'s before they are loaded (MMEngine only logs mismatches).

    Args:
        model (nn.Module): The model the checkpoint is for, or its wrapper (DDP, FSDP).
        checkpoint (Mapping): A loaded checkpoint (``{'state_dict': ...}`` or a bare state dict).
        tolerance (float): Share of the model's entries that may be missing from the checkpoint, and of unknown
            checkpoint entries, before the checkpoint is refused. Default: ``CHECKPOINT_TOLERANCE`` (0.01).
        revise_keys (Sequence): ``(pattern, replacement)`` applied to checkpoint keys, as MMEngine does.
            Default: strip ``module.``.

    Returns:
        tuple: ``(refusal, note)``: the one-line reason it does not fit (None if it fits) and a one-line note on a
        tolerated difference (None if there is none).
    """
    state = checkpoint.get('state_dict', checkpoint)
    for pattern, repl in revise_keys:
        state = {re.sub(pattern, repl, k): v for k, v in state.items()}
    from mmfusion.engine.fsdp import state_dict_shapes
    own = state_dict_shapes(model)  # unwraps DDP; under FSDP the full shapes, without gathering weights
    shape = [f'{k} {tuple(state[k].shape)} vs {v}' for k, v in own.items()
             if k in state and hasattr(state[k], 'shape') and tuple(state[k].shape) != v]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if shape:
        parts.append(f'{len(shape)} of {len(own)} weights have another shape (checkpoint vs model: '
                     f'{_few(shape)})')
    if missing:
        parts.append(f'{len(missing)} of the model\'s {len(own)} weights are missing ({_few(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} checkpoint weights are unknown to the model ({_few(unexpected)})')
    if not parts:
        return None, None
    limit = int(tolerance * len(own))
    if shape or len(missing) > limit or len(unexpected) > limit:
        return '; '.join(parts), None
    return None, '; '.join(parts)


def _few(keys: Sequence[str], n: int = 3) -> str:
    return ', '.join(keys[:n]) + (', ...' if len(keys) > n else '')


def refuse_mismatch(model, checkpoint: Mapping, source: str, config: str) -> None:
    """Raise :class:`UserError` when the checkpoint ``source`` does not fit ``model`` (built from ``config``);
    print a note for a tolerated difference."""
    refusal, note = checkpoint_mismatch(model, checkpoint)
    if refusal:
        raise UserError(f'checkpoint {source} does not fit the model of {config}: {refusal}; this checkpoint was not '
                        'trained with this config: pass the config it was trained with')
    if note:
        print(f'note: checkpoint {source}: {note}', file=sys.stderr)


class CheckpointFitHook(Hook):
    """Check every checkpoint the Runner loads (``load_from``, ``resume``) against the model before it is loaded.

    Args:
        config (str): The config the model was built from (named in the message).
        strict (bool): Refuse a checkpoint that does not fit (testing, resuming); False only prints a note (training
            from a checkpoint of another task, where a new head is expected). Default: True.
    """

    priority = 'VERY_LOW'  # after hooks that may convert the checkpoint, just before MMEngine loads it

    def __init__(self, config: str, strict: bool = True) -> None:
        self.config = config
        self.strict = strict

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model
        source = runner._load_from or 'the latest checkpoint of the work dir'
        if self.strict:
            refuse_mismatch(model, checkpoint, source, self.config)
            return
        refusal, note = checkpoint_mismatch(model, checkpoint)
        if refusal or note:
            print(f'note: checkpoint {source} only partly fits the model of {self.config}: {refusal or note}',
                  file=sys.stderr)
