"""One image normalisation: the data preprocessor normalises, every encoder states what it expects.

Training, testing and inference normalise the images with ``model.data_preprocessor``'s mean/std (a config key).
An encoder's pretrained weights only mean something on images normalised the way it was pretrained, so each
encoder states that input as ``input_mean``/``input_std`` (RGB, 0-255 scale, the preprocessor's terms):
:class:`~mmfusion.models.backbones.DINOv3ViT` and :class:`~mmfusion.models.backbones.SAM2Hiera` ImageNet's,
:class:`~mmfusion.models.backbones.HFBackbone` its ``input_mean``/``input_std`` arguments (from which it renormalises
to its encoder's own ``image_mean``/``image_std``). A mismatch does not fail at run time, it silently gives other
features, so :func:`check_input_normalisation` refuses it where models are built (train/test runners, the
inferencer); the profiler and the SC/EF hook normalise with the same values.
"""
from __future__ import annotations

import inspect
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn

from .errors import UserError
from .images import IMAGENET_MEAN, IMAGENET_STD

__all__ = ['Normalisation', 'IMAGENET', 'IDENTITY', 'preprocessor_normalisation', 'encoder_normalisations',
           'normalisation_mismatches', 'describe', 'renormalises', 'check_input_normalisation',
           'check_runner_normalisation']

#: ``(mean, std)``, three values each, RGB, 0-255 scale.
Normalisation = Tuple[Tuple[float, ...], Tuple[float, ...]]
IMAGENET: Normalisation = (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))
#: What a preprocessor that does not normalise gives: the pixels as they are.
IDENTITY: Normalisation = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
# Absolute tolerance on the 0-255 scale (configs write 123.675; a float32 buffer reads back 123.67500305).
_TOL = 1e-3


def _three(values, what: str) -> Tuple[float, ...]:
    values = [float(v) for v in (values.flatten().tolist() if hasattr(values, 'flatten') else values)]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f'{what} must have 3 values (R, G, B) or 1, got {values}')
    return tuple(values)


def preprocessor_normalisation(model: nn.Module) -> Optional[Normalisation]:
    """``(mean, std)`` that ``model.data_preprocessor`` applies to the images, 0-255 scale.

    MMEngine/mmdet/mmseg image preprocessors say whether they normalise (``_enable_normalize``) and with which
    ``mean``/``std``; one that does not normalise (``mean=None``, or a ``BaseDataPreprocessor``) hands the pixels on
    as they are, i.e. :data:`IDENTITY`.

    Args:
        model (nn.Module): The model (a model wrapper is looked through).

    Returns:
        tuple | None: ``(mean, std)``; None when the model has no ``data_preprocessor``.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    pre = getattr(model, 'data_preprocessor', None)
    if pre is None:
        return None
    enabled = getattr(pre, '_enable_normalize', None)
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if enabled is False or mean is None or std is None:
        return IDENTITY
    return _three(mean, 'data_preprocessor.mean'), _three(std, 'data_preprocessor.std')


def _clean(name: str) -> str:
    """A module's name without the wrappers' own levels (FSDP's ``_fsdp_wrapped_module``, checkpoint wrappers)."""
    return '.'.join(p for p in name.split('.') if not (p.startswith('_') and p.endswith('_wrapped_module')))


def encoder_normalisations(model: nn.Module, prefix: str = 'model') -> List[Tuple[str, nn.Module, Normalisation]]:
    """Every module of ``model`` (itself included) that states the input it expects, by its ``input_mean`` and
    ``input_std`` attributes: ``(name, module, (mean, std))``.

    Attributes are read statically: FSDP's wrapper forwards unknown attributes to the module it wraps, which must not
    count twice.
    """
    found = []
    for name, module in model.named_modules():
        mean = inspect.getattr_static(module, 'input_mean', None)
        std = inspect.getattr_static(module, 'input_std', None)
        if mean is None or std is None:
            continue
        where = '.'.join(p for p in (prefix, _clean(name)) if p)
        found.append((where, module, (_three(mean, f'{where}.input_mean'), _three(std, f'{where}.input_std'))))
    return found


def _close(a: Normalisation, b: Normalisation) -> bool:
    return all(abs(x - y) <= _TOL for u, v in zip(a, b) for x, y in zip(u, v))


def normalisation_mismatches(model: nn.Module, given: Normalisation,
                             prefix: str = 'model') -> List[Tuple[str, nn.Module, Normalisation]]:
    """The encoders of ``model`` that expect another input normalisation than ``given``."""
    return [(name, m, norm) for name, m, norm in encoder_normalisations(model, prefix) if not _close(norm, given)]


def _fmt(values: Sequence[float]) -> str:
    return '[' + ', '.join(f'{v:g}' for v in values) + ']'


def describe(norm: Normalisation) -> str:
    """``mean=[...] std=[...]``, for messages."""
    return f'mean={_fmt(norm[0])} std={_fmt(norm[1])}'


def renormalises(module: nn.Module) -> bool:
    """Whether the encoder takes ``input_mean``/``input_std`` arguments (HFBackbone: it renormalises any input to its
    own), so that a mismatch can also be fixed on its side."""
    return 'input_mean' in inspect.signature(type(module).__init__).parameters


def check_input_normalisation(model: nn.Module) -> None:
    """Refuse a model whose data preprocessor normalises the images otherwise than one of its encoders expects.

    Encoders are found by their ``input_mean``/``input_std`` attributes (see :func:`encoder_normalisations`), a model
    wrapper (DDP, FSDP) is looked through; a model without a data preprocessor is not checked.

    Raises:
        UserError: One line naming both normalisations and the fix.
    """
    from mmengine.model import is_model_wrapper
    if is_model_wrapper(model):
        model = model.module
    given = preprocessor_normalisation(model) if isinstance(model, nn.Module) else None
    if given is None:
        return
    wrong = normalisation_mismatches(model, given)
    if wrong:
        name, module, expected = wrong[0]
        alt = (f', or {name}.input_mean/input_std to the preprocessor\'s (it renormalises to its own)'
               if renormalises(module) else '')
        more = f' ({len(wrong) - 1} more encoder(s) disagree too)' if len(wrong) > 1 else ''
        raise UserError(f'model.data_preprocessor normalises images with {describe(given)}, but {name} '
                        f'({type(module).__name__}) expects {describe(expected)}, the input it was pretrained on; set '
                        f'model.data_preprocessor.mean={_fmt(expected[0])} std={_fmt(expected[1])}{alt}{more}')


def check_runner_normalisation(runner) -> None:
    """:func:`check_input_normalisation` on a runner's model: at once when the runner has built it (MMEngine's
    ``Runner``), else (``FlexibleRunner`` builds it in ``train()``/``test()``) before the run starts."""
    if isinstance(runner.model, nn.Module):
        check_input_normalisation(runner.model)
        return
    from mmengine.hooks import Hook

    class _CheckInputNormalisation(Hook):
        priority = 'VERY_HIGH'

        def before_run(self, runner) -> None:
            check_input_normalisation(runner.model)

    runner.register_hook(_CheckInputNormalisation())
