"""Shared by the metric functions (plain PyTorch): input checks, per-map preparation, z-scores."""
import math
import numbers
import warnings
from typing import NamedTuple

import torch
from torch import Tensor


class MetricWarning(UserWarning):
    """A metric was given a map (or an image) too small for its value to mean anything."""


# Messages already shown by :func:`warn_once` (a profile computes the same metrics on the same sizes many times).
_WARNED: set[str] = set()


def reset_warnings() -> None:
    """Forget which warnings :func:`warn_once` has shown (each shows again once)."""
    _WARNED.clear()


def warn_once(message: str) -> None:
    """``warnings.warn(message, MetricWarning)`` the first time this process sees ``message``, whatever the filters.

    Args:
        message (str): what is wrong and what to change.
    """
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, MetricWarning, stacklevel=3)


class _Range(NamedTuple):
    """Valid values of a metric hyper-parameter: ``low`` .. ``high``, each end open or closed."""
    kind: str  # 'int', 'real' or 'ints' (a non-empty sequence of ints)
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    optional: bool = False  # None allowed

    def describe(self) -> str:
        what = {'int': 'an integer', 'real': 'a number', 'ints': 'a non-empty sequence of integers, each'}[self.kind]
        if math.isinf(self.low) and math.isinf(self.high):
            bounds = ''
        elif math.isinf(self.high):
            bounds = f' {">" if self.low_open else ">="} {self.low:g}'
        else:
            bounds = (f' in {"(" if self.low_open else "["}{self.low:g}, {self.high:g}'
                      f'{")" if self.high_open else "]"}')
        return what + bounds + (' (or None)' if self.optional else '')

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == 'ints':
            if isinstance(value, (str, bytes)) or not hasattr(value, '__len__') or len(value) == 0:
                return False
            return all(_Range('int', self.low, self.high, self.low_open, self.high_open).accepts(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind == 'int' and not isinstance(value, numbers.Integral):
            return False
        if math.isnan(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


_FRACTION = _Range('real', 0, 1, low_open=True)
_POSITIVE = _Range('real', 0, low_open=True)
# The valid range of every metric hyper-parameter, by the name the public functions give it.
PARAM_RANGES: dict[str, _Range] = {
    'q': _FRACTION,
    'q_img': _FRACTION,
    'tau': _FRACTION,
    'r_frac': _FRACTION,
    'frac': _FRACTION,
    'rho_low': _Range('real', 0, 1, high_open=True),
    'ks': _Range('ints', 2),
    'n_samples': _Range('int', 2),
    'n_silhouette': _Range('int', 2),
    'pca_dim': _Range('int', 1),
    'restarts': _Range('int', 1),
    'max_iter': _Range('int', 1),
    'tol': _Range('real', 0),
    'prune_after': _Range('int', 1, optional=True),
    'prune_keep': _Range('int', 1),
    'seed': _Range('int'),
    'cell': _Range('int', 1),
    'grid': _Range('int', 1, optional=True),
    'clip': _POSITIVE,
    'fc_clip': _Range('real', 0, low_open=True, optional=True),
    'num_radii': _Range('int', 1),
    'num': _Range('int', 1),
    'radii': _Range('ints', 1),
    'radius': _Range('int', 0),
    'd_in': _Range('int', 0),
    'd_out': _Range('int', 1),
    'sp_scale': _POSITIVE,
    'scale': _POSITIVE,
    'alpha': _POSITIVE,
    'ignore_index': _Range('int'),
}


def check_params(**params) -> None:
    """Raise ``ValueError`` for a metric hyper-parameter outside its valid range (see :data:`PARAM_RANGES`).

    The message names the parameter, the value given and the valid range, e.g.
    ``q=1.5 is not valid: q must be a number in (0, 1]``.

    Args:
        **params: parameter name -> value; every name must have an entry in :data:`PARAM_RANGES`.
    """
    for name, value in params.items():
        rule = PARAM_RANGES[name]
        if not rule.accepts(value):
            raise ValueError(f'{name}={value!r} is not valid: {name} must be {rule.describe()}.')


# EF scores every pixel but a 1-pixel border and needs 3x3 of them.
MIN_EF_SIDE = 5


def map_size_problems(height: int, width: int, cell: int = 8, ks=(6, 8, 10)) -> list[str]:
    """Why SC or EF cannot score an ``height`` x ``width`` map with the default options (empty: all can).

    Args:
        height (int): map height H.
        width (int): map width W.
        cell (int): SFC cell side. Defaults to 8.
        ks (Sequence[int]): SCS numbers of clusters. Defaults to (6, 8, 10).

    Returns:
        list[str]: one phrase per metric that would be 0 (or meaningless) on such a map.
    """
    problems = []
    if min(height, width) < MIN_EF_SIDE:
        problems.append(f'EF needs {MIN_EF_SIDE}x{MIN_EF_SIDE} at least')
    cells = (height // min(cell, height)) * (width // min(cell, width))
    if cells < 2:
        problems.append(f'SFC needs 2 cells of {cell}x{cell} px, i.e. one side of {2 * cell} at least')
    if height * width < 2 * min(ks):
        problems.append(f'SCS needs {2 * min(ks)} pixels at least')
    return problems


def check_options(opts: dict) -> None:
    """:func:`check_params` on the options of ``opts`` that have a range (the others are left to their function)."""
    check_params(**{k: v for k, v in opts.items() if k in PARAM_RANGES})


def as_feature(feat: Tensor, name: str = 'feat') -> tuple[Tensor, Tensor]:
    """Validate a (B, C, H, W) feature map and bring it to float32.

    Non-finite values cannot be scored: the affected images are flagged, their values are replaced by zeros so the
    batched computation stays finite, and the caller sets their metrics to 0. A ``RuntimeWarning`` says so.

    Args:
        feat (Tensor): feature map of shape (B, C, H, W), any floating dtype, any memory layout.
        name (str): name used in error messages. Defaults to ``'feat'``.

    Returns:
        tuple[Tensor, Tensor]: the float32 contiguous features and a (B,) bool mask of the images that held NaN/inf.
    """
    if not isinstance(feat, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor of shape (B, C, H, W), got {type(feat).__name__}.')
    if feat.dim() != 4:
        raise ValueError(f'{name} must have shape (B, C, H, W), got {tuple(feat.shape)}; '
                         'add a batch axis with feat[None] for a single map.')
    if not feat.is_floating_point():
        raise ValueError(f'{name} must be a floating tensor (float16/bfloat16/float32/float64), got {feat.dtype}; '
                         'cast it with .float().')
    if min(feat.shape) == 0:
        raise ValueError(f'{name} has an empty dimension: {tuple(feat.shape)}.')
    feat = feat.detach().float().contiguous()
    # A sum propagates NaN and inf and is the cheapest full reduction; only a non-finite sum needs a closer look.
    suspect = ~torch.isfinite(feat.view(feat.shape[0], -1).sum(dim=1))
    bad = torch.zeros_like(suspect)
    if bool(suspect.any()):
        bad = suspect & ~torch.isfinite(feat).flatten(1).all(dim=1)
        huge = suspect & ~bad
        if bool(huge.any()):
            # Finite values so large that sums overflow: every metric is invariant to a positive global scale of an
            # image's features, so bring them to max |x| = 1.
            scale = feat.abs().flatten(1).amax(dim=1).clamp_min(1e-30)
            feat = torch.where(huge.view(-1, 1, 1, 1), feat / scale.view(-1, 1, 1, 1), feat)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        warnings.warn(f'{name} holds NaN/inf values in image(s) {idx}; their metrics are set to 0.',
                      RuntimeWarning, stacklevel=3)
        feat = torch.where(torch.isfinite(feat), feat, torch.zeros((), dtype=feat.dtype, device=feat.device))
    return feat, bad


def check_image(image: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Validate a uint8 RGB image batch and return it, still uint8, as (B, 3, H0, W0) on ``device``.

    Args:
        image (Tensor): uint8 RGB of shape (B, 3, H0, W0) or (3, H0, W0); a single image is shared by the batch.
        batch_size (int): the feature batch size B the image must match.
        device (torch.device): device of the features.

    Returns:
        Tensor: (B, 3, H0, W0) uint8 (a single image is expanded, not copied).
    """
    if not isinstance(image, Tensor):
        raise ValueError(f'image must be a uint8 torch.Tensor (B, 3, H0, W0), got {type(image).__name__}.')
    if image.dtype != torch.uint8:
        raise ValueError(f'image must be uint8 RGB in [0, 255], got {image.dtype}; pass the raw image, e.g. '
                         '(img * 255).round().clamp(0, 255).to(torch.uint8) for a [0, 1] float image.')
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f'image must have shape (B, 3, H0, W0) or (3, H0, W0), got {tuple(image.shape)}; '
                         'channel-last images need .permute(0, 3, 1, 2).')
    if image.shape[0] == 1 and batch_size > 1:
        image = image.expand(batch_size, -1, -1, -1)
    if image.shape[0] != batch_size:
        raise ValueError(f'image batch size {image.shape[0]} does not match the feature batch size {batch_size}; '
                         'pass one image per feature map.')
    if image.shape[2] == 0 or image.shape[3] == 0:
        raise ValueError(f'image is empty: {tuple(image.shape)}.')
    return image.to(device=device)


def as_image(image: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Validate a uint8 RGB image batch (see :func:`check_image`) and return it as float32 in [0, 1] on ``device``.

    Args:
        image (Tensor): uint8 RGB of shape (B, 3, H0, W0) or (3, H0, W0); a single image is shared by the batch.
        batch_size (int): the feature batch size B the image must match.
        device (torch.device): device of the features.

    Returns:
        Tensor: (B, 3, H0, W0) float32 in [0, 1].
    """
    return check_image(image, batch_size, device).to(torch.float32) / 255.0


def zscore(x: Tensor, dim, unbiased: bool = True, min_std: float = 1e-6) -> Tensor:
    """Z-score ``x`` along ``dim`` with the standard deviation clamped from below.

    Args:
        x (Tensor): input.
        dim (int | tuple[int]): reduction dimension(s).
        unbiased (bool): Bessel-corrected std. Defaults to True. A single element gives std 0 (clamped).
        min_std (float): lower bound of the std. Defaults to 1e-6.
    """
    mean = x.mean(dim=dim, keepdim=True)
    numel = 1
    for d in (dim if isinstance(dim, (tuple, list)) else (dim, )):
        numel *= x.shape[d]
    var = (x - mean).pow(2).sum(dim=dim, keepdim=True) / max(numel - (1 if unbiased else 0), 1)
    return (x - mean) / var.sqrt().clamp_min(min_std)


def channel_chunks(feat: Tensor, max_elems: int = 1 << 18):
    """Yield channel slices of a (B, C, H, W) tensor of about ``max_elems`` elements each.

    Full-size temporaries of a large feature map (tens of MB) cost more than the arithmetic on CPU (each fresh
    allocation is page-faulted in); chunks small enough to be recycled by the allocator avoid that.

    Args:
        feat (Tensor): (B, C, H, W).
        max_elems (int): elements per chunk (at least one channel). Defaults to 2**18.
    """
    b, c, h, w = feat.shape
    step = max(1, max_elems // max(1, b * h * w))
    for i in range(0, c, step):
        yield feat[:, i:i + step]


def channel_moments(x: Tensor, max_elems: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """Mean and sum of squared deviations of each row of a (B, C, N) tensor, two-pass (no cancellation), in chunks.

    Args:
        x (Tensor): (B, C, N).
        max_elems (int): elements per chunk. Defaults to 2**18.

    Returns:
        tuple[Tensor, Tensor]: mean and sum of squared deviations, (B, C, 1) each.
    """
    b, c, n = x.shape
    mean = x.mean(dim=-1, keepdim=True)
    sq = torch.empty_like(mean)
    step = max(1, max_elems // max(1, b * n))
    for i in range(0, c, step):
        d = x[:, i:i + step] - mean[:, i:i + step]
        sq[:, i:i + step] = torch.einsum('bcn,bcn->bc', d, d).unsqueeze(-1)
    return mean, sq


def channel_stats(x: Tensor, unbiased: bool = False, max_elems: int = 1 << 18) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each row of a (B, C, N) tensor, two-pass (no cancellation), in row chunks.

    Args:
        x (Tensor): (B, C, N).
        unbiased (bool): Bessel-corrected std. Defaults to False.
        max_elems (int): elements per chunk. Defaults to 2**18.

    Returns:
        tuple[Tensor, Tensor]: mean and std, (B, C, 1) each.
    """
    mean, sq = channel_moments(x, max_elems)
    return mean, (sq / max(x.shape[-1] - (1 if unbiased else 0), 1)).sqrt()


def norm_map(feat: Tensor) -> Tensor:
    """Per-pixel L2 norm over the channels of a (B, C, H, W) tensor, (B, H, W), in channel chunks."""
    acc = torch.zeros(feat.shape[0], *feat.shape[2:], dtype=feat.dtype, device=feat.device)
    for chunk in channel_chunks(feat):
        acc += chunk.pow(2).sum(dim=1)
    return acc.sqrt_()


class PreparedFeatures:
    """A feature map validated and brought to float32 once, with the per-map quantities SC and EF share.

    Every metric function accepts either a (B, C, H, W) tensor or this object; :func:`prepare_features` builds it.
    Passing the same object to :func:`~mmfusion.metrics.structural_coherence` and
    :func:`~mmfusion.metrics.edge_fidelity` (as :func:`~mmfusion.metrics.metrics_per_image` does) checks the input,
    warns about non-finite values, and computes the per-channel statistics and the channel-L2 map once instead of
    once per metric. The quantities are computed on first use and cached; the object must not be reused after the
    features are modified in place.

    Attributes:
        feat (Tensor): (B, C, H, W) float32 contiguous features (non-finite values replaced by 0).
        bad (Tensor): (B,) bool, the images whose features held NaN/inf (their metrics are set to 0).
    """

    def __init__(self, feat: Tensor, name: str = 'feat'):
        self.feat, self.bad = as_feature(feat, name)
        self._stats: tuple[Tensor, Tensor] | None = None
        self._norm: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        """(B, C, H, W)."""
        return self.feat.shape

    def channel_stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean over H*W and sum of squared deviations, (B, C, 1) each (two-pass, no cancellation)."""
        if self._stats is None:
            self._stats = channel_moments(self.feat.flatten(2))
        return self._stats

    def channel_std(self, unbiased: bool) -> Tensor:
        """Per-channel standard deviation over H*W, (B, C, 1); Bessel-corrected when ``unbiased``."""
        _, ssd = self.channel_stats()
        n = self.feat.shape[2] * self.feat.shape[3]
        return (ssd / max(n - (1 if unbiased else 0), 1)).sqrt()

    def norm_map(self) -> Tensor:
        """Per-pixel L2 norm over the channels, (B, H, W) (the map M of SFC, FC and SP)."""
        if self._norm is None:
            self._norm = norm_map(self.feat)
        return self._norm


def prepare_features(feat, name: str = 'feat') -> PreparedFeatures:
    """Validate a (B, C, H, W) feature map once for several metrics (see :class:`PreparedFeatures`).

    Args:
        feat (Tensor | PreparedFeatures): features; a prepared object is returned as it is.
        name (str): name used in error messages. Defaults to ``'feat'``.

    Returns:
        PreparedFeatures: the prepared map.
    """
    return feat if isinstance(feat, PreparedFeatures) else PreparedFeatures(feat, name)


def zero_bad(out: dict, bad: Tensor) -> dict:
    """Set every (B,) entry of ``out`` to 0 where ``bad`` is True.

    Args:
        out (dict): metric name -> (B,) tensor.
        bad (Tensor): (B,) bool, the images to zero.
    """
    if bool(bad.any()):
        out = {k: torch.where(bad, torch.zeros_like(v), v) for k, v in out.items()}
    return out
