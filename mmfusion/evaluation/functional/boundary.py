"""Mask boundaries and Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021), as the reference implementation (``boundary-iou-api``) defines them.

The boundary of a binary mask G of an H x W image is G minus its erosion by d pixels, with

    d = max(1, round(dilation_ratio * sqrt(H^2 + W^2)))

(``round`` is Python's / numpy's: halves go to the even neighbour, as in the reference). The erosion is the one of
``cv2.erode`` with a 3x3 square kernel applied d times after padding the mask with one row/column of zeros, i.e.
a (2d+1) x (2d+1) square erosion that treats everything outside the image as background: a mask that touches the
image border has a boundary along that border. So the boundary is the set of mask pixels within Chebyshev distance
d of a background pixel or of the image border. A structure thinner than 2d+1 pixels is all boundary; a non-empty
mask always has a non-empty boundary.

Boundary IoU of a ground truth G and a prediction P is |G_d & P_d| / |G_d | P_d| with X_d the boundary of X.

Empty masks: the union is empty only when both masks are empty. The reference computes Boundary IoU through
``pycocotools.mask.iou``, which gives 0 for two empty masks; :func:`boundary_iou` follows it (0, not 1 nor NaN).
An empty mask against a non-empty one also gives 0.

Arrays on the CPU (numpy arrays, CPU tensors) are eroded with OpenCV's rectangular erosion (the reference's own
library, one call instead of d); CUDA tensors stay on their device and are eroded with box sums (two cumulative
sums), whose cost does not depend on d either. Both give the reference's result exactly.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = Union[np.ndarray, Tensor]

# How CPU inputs are eroded: 'cv2' (fast) or 'torch' (the CUDA path, also run on CPU by the tests).
_CPU_BACKEND = 'cv2'

__all__ = ['dilation_pixels', 'mask_to_boundary', 'label_boundary', 'boundary_iou']


def dilation_pixels(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """The erosion depth d, in pixels, for an image of the given size.

    Args:
        height (int): image height H.
        width (int): image width W.
        dilation_ratio (float): d as a fraction of the image diagonal. Defaults to 0.02 (the Boundary IoU
            authors' value for COCO and LVIS; they evaluate Cityscapes with 0.005, docs/boundary_metrics.md).

    Returns:
        int: ``max(1, round(dilation_ratio * sqrt(H^2 + W^2)))``.
    """
    check_dilation_ratio(dilation_ratio)
    return max(1, int(round(dilation_ratio * math.sqrt(height ** 2 + width ** 2))))


def mask_to_boundary(mask: ArrayLike, dilation_ratio: float = 0.02, *, dilation: Optional[int] = None) -> ArrayLike:
    """The inner boundary of binary masks: the mask minus its erosion by d pixels (see the module docstring).

    Args:
        mask (np.ndarray | Tensor): (H, W) or (N, H, W) masks; any dtype, non-zero is foreground.
        dilation_ratio (float): d as a fraction of the diagonal of the (H, W) image. Defaults to 0.02.
        dilation (int, optional): d in pixels, overriding ``dilation_ratio``; use it for a crop of a larger image,
            whose d comes from the full image (a crop around the mask's bounding box has the same boundary, the
            area outside the box being background anyway). Defaults to None.

    Returns:
        np.ndarray | Tensor: bool boundary masks of the input's type, shape and device.
    """
    _check_maps(mask, 'mask')
    d = _resolve_dilation(mask.shape[-2:], dilation_ratio, dilation)
    if _use_cv2(mask):
        fg = _to_numpy(mask) != 0
        return _like(mask, fg & ~_eroded_cv2(fg, d))
    fg = _to_tensor(mask) != 0
    return _like(mask, fg & ~_eroded_torch(fg, d))


def label_boundary(labels: ArrayLike, dilation_ratio: float = 0.02, *, dilation: Optional[int] = None) -> ArrayLike:
    """For label maps: whether each pixel lies on the boundary of the region of its own label.

    A pixel with label c is on the boundary of the mask ``labels == c`` exactly when its (2d+1) x (2d+1)
    neighbourhood leaves the image or holds another label, so ``mask_to_boundary(labels == c)`` equals
    ``label_boundary(labels) & (labels == c)`` for every c. One pass gives the boundaries of all classes.

    Args:
        labels (np.ndarray | Tensor): (H, W) or (N, H, W) integer label maps.
        dilation_ratio (float): d as a fraction of the diagonal of the (H, W) image. Defaults to 0.02.
        dilation (int, optional): d in pixels, overriding ``dilation_ratio``. Defaults to None.

    Returns:
        np.ndarray | Tensor: bool map of the input's type, shape and device.
    """
    _check_maps(labels, 'labels')
    if isinstance(labels, np.ndarray):
        integer = labels.dtype.kind in 'iub'
    else:
        integer = not (labels.is_floating_point() or labels.is_complex())
    if not integer:
        raise ValueError(f'labels must be an integer map, got dtype {labels.dtype}; pass the class-index map '
                         '(e.g. labels.long())')
    d = _resolve_dilation(labels.shape[-2:], dilation_ratio, dilation)
    if _use_cv2(labels):
        return _like(labels, ~_uniform_window_cv2(_to_numpy(labels), d))
    return _like(labels, ~_uniform_window_torch(_to_tensor(labels), d))


def boundary_iou(gt: ArrayLike, pred: ArrayLike, dilation_ratio: float = 0.02) -> Union[float, ArrayLike]:
    """Boundary IoU of ground-truth and predicted binary masks of the same size.

    Args:
        gt (np.ndarray | Tensor): (H, W) or (N, H, W) ground-truth masks; non-zero is foreground.
        pred (np.ndarray | Tensor): predicted masks of the same shape.
        dilation_ratio (float): d as a fraction of the image diagonal. Defaults to 0.02.

    Returns:
        float | np.ndarray | Tensor: a float for one (H, W) pair; for (N, H, W) inputs, N values as a float64
        numpy array (numpy ``gt``) or a float32 tensor on ``gt``'s device. 0 when both masks are empty (the
        reference's convention, see the module docstring).
    """
    _check_maps(gt, 'gt')
    _check_maps(pred, 'pred')
    if tuple(gt.shape) != tuple(pred.shape):
        raise ValueError(f'gt and pred shapes differ: {tuple(gt.shape)} vs {tuple(pred.shape)}; resize the '
                         'prediction to the ground-truth size first')
    d = _resolve_dilation(gt.shape[-2:], dilation_ratio, None)
    if _use_cv2(gt):
        gb = mask_to_boundary(_to_numpy(gt), dilation=d)
        pb = mask_to_boundary(_to_numpy(pred), dilation=d)
        inter = (gb & pb).reshape(*gb.shape[:-2], -1).sum(-1)
        union = (gb | pb).reshape(*gb.shape[:-2], -1).sum(-1)
        iou = torch.from_numpy(np.asarray(np.where(union > 0, inter / np.maximum(union, 1), 0.0)))
    else:
        device = gt.device if isinstance(gt, Tensor) else torch.device('cpu')
        gb = mask_to_boundary(_to_tensor(gt, device), dilation=d)
        pb = mask_to_boundary(_to_tensor(pred, device), dilation=d)
        inter = (gb & pb).flatten(-2).sum(-1)
        union = (gb | pb).flatten(-2).sum(-1)
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros((), device=device))
    if iou.dim() == 0:
        return float(iou)
    return iou.double().cpu().numpy() if isinstance(gt, np.ndarray) else iou.float().to(gt.device)


# ---------------------------------------------------------------------------------------------------------------------


def check_dilation_ratio(dilation_ratio: float) -> None:
    """Refuse a dilation ratio that is not a finite number > 0 (one-line ValueError)."""
    if isinstance(dilation_ratio, bool) or not isinstance(dilation_ratio, numbers.Real) or not (
            dilation_ratio > 0 and math.isfinite(dilation_ratio)):
        raise ValueError(f'dilation_ratio must be a finite number > 0, got {dilation_ratio!r}; pass a fraction of '
                         'the image diagonal such as 0.02')


def _resolve_dilation(hw, dilation_ratio: float, dilation: Optional[int]) -> int:
    if dilation is None:
        return dilation_pixels(int(hw[0]), int(hw[1]), dilation_ratio)
    if isinstance(dilation, bool) or not isinstance(dilation, numbers.Integral) or dilation < 1:
        raise ValueError(f'dilation must be an int >= 1 (pixels), got {dilation!r}; or leave it None to derive it '
                         'from dilation_ratio')
    return int(dilation)


def _check_maps(x: ArrayLike, name: str) -> None:
    if not isinstance(x, (np.ndarray, Tensor)):
        raise ValueError(f'{name} must be a numpy array or a torch tensor, got {type(x).__name__}; convert it with '
                         'np.asarray')
    if x.ndim not in (2, 3) or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f'{name} must have shape (H, W) or (N, H, W) with H, W > 0, got {tuple(x.shape)}; '
                         'squeeze channel dimensions first')


def _use_cv2(x: ArrayLike) -> bool:
    """CPU data go through numpy and OpenCV (unless the tests select the torch path)."""
    return _CPU_BACKEND == 'cv2' and (isinstance(x, np.ndarray) or x.device.type == 'cpu')


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def _to_tensor(x: ArrayLike, device=None) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t if device is None else t.to(device)


def _like(ref: ArrayLike, out: ArrayLike) -> ArrayLike:
    """``out`` as the type (and device) of ``ref``."""
    if isinstance(ref, np.ndarray):
        return _to_numpy(out)
    return (torch.from_numpy(out) if isinstance(out, np.ndarray) else out).to(ref.device)


def _cv2_per_map(fn, x: np.ndarray) -> np.ndarray:
    """Apply an OpenCV filter to every (H, W) map of an (N, H, W) array."""
    return np.stack([fn(m) for m in x]) if x.ndim == 3 else fn(x)


def _eroded_cv2(fg: np.ndarray, d: int) -> np.ndarray:
    """Erosion of bool masks by a (2d+1)^2 square, outside the image counted as background (OpenCV)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * d + 1, 2 * d + 1))
    x = np.ascontiguousarray(fg).view(np.uint8)
    out = _cv2_per_map(lambda m: cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), x)
    return out.view(np.bool_)


def _uniform_window_cv2(labels: np.ndarray, d: int) -> np.ndarray:
    """True where the (2d+1)^2 window around the pixel lies in the image and holds only the pixel's label (OpenCV).

    The window is uniform when its minimum and its maximum are the pixel's label; labels are shifted to >= 1 so that
    a window leaving the image has minimum 0 (the border value).
    """
    x = labels.astype(np.int64) - int(labels.min()) + 1
    x = x.astype(np.float64 if int(x.max()) > np.iinfo(np.uint16).max else np.uint16)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * d + 1, 2 * d + 1))
    lo = _cv2_per_map(lambda m: cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), x)
    hi = _cv2_per_map(lambda m: cv2.dilate(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), x)
    return (lo == x) & (hi == x)


def _box_sum(x: Tensor, k: int) -> Tensor:
    """Sums over every k x k window of the last two dimensions ('valid' windows only), by cumulative sums."""
    c = F.pad(x.cumsum(-1, dtype=x.dtype), (1, 0))
    rows = c[..., k:] - c[..., :-k]
    c = F.pad(rows.cumsum(-2, dtype=x.dtype), (0, 0, 1, 0))
    return c[..., k:, :] - c[..., :-k, :]


def _eroded_torch(fg: Tensor, d: int) -> Tensor:
    """The erosion of :func:`_eroded_cv2` by box sums, on the tensor's device."""
    k = 2 * d + 1
    x = F.pad(fg.to(torch.int32), (d, d, d, d))  # zero padding: the image border is background
    return _box_sum(x, k) == k * k


def _uniform_window_torch(labels: Tensor, d: int) -> Tensor:
    """The test of :func:`_uniform_window_cv2` by box sums, on the tensor's device.

    With n window cells, sum (v - c)^2 = S2 - 2 c S1 + n c^2 over the window is 0 exactly when every value v equals
    the centre's label c; cells outside the image hold 0, which no (shifted) label has. Integers keep it exact.
    """
    k = 2 * d + 1
    x = labels.to(torch.int64)
    x = x - x.amin() + 1
    xp = F.pad(x, (d, d, d, d))
    s1 = _box_sum(xp, k)
    s2 = _box_sum(xp * xp, k)
    return s2 - 2 * x * s1 + (k * k) * x * x == 0
