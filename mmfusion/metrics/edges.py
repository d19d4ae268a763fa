"""Image/edge preparation shared by the Edge Fidelity metrics (SPEC §1).

Everything works on batches (B, H, W) on the device of the input. Masks are bool tensors.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import check_params

# Sobel kernels. The image one (SPEC §1.4) and the feature one (SPEC §3) differ in sign and scale; only the magnitude
# is ever used, so the sign is irrelevant, but the scale is kept for parity.
IMAGE_SOBEL_X = torch.tensor([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]]) / 4.0
FEAT_SOBEL_X = torch.tensor([[-1., 0., 1.], [-2., 0., 2.], [-1., 0., 1.]]) / 8.0

LUMA = (0.2126, 0.7152, 0.0722)


def valid_mask(height: int, width: int, device=None) -> Tensor:
    """Feature pixels that are scored: every pixel except a 1-pixel border (SPEC §1.1).

    Args:
        height (int): map height H.
        width (int): map width W.
        device (torch.device, optional): device of the mask. Defaults to None (CPU).

    Returns:
        Tensor: (H, W) bool; all False when H or W is below 3.
    """
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[1:-1, 1:-1] = True
    return mask


def _linear_taps(n_in: int, n_out: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weight of 1-D linear resampling, as ``F.interpolate(..., align_corners=False)`` has them.

    Output i samples the input at s = (i + 0.5) * n_in / n_out - 0.5 (clamped at 0): i0 = floor(s),
    i1 = min(i0 + 1, n_in - 1), weight of i1 = s - i0.
    """
    # float32 scale, then s = scale * (i + 0.5) - 0.5 rounded once (exact in float64), as PyTorch's kernel has it.
    scale = float(torch.tensor(n_in / n_out, dtype=torch.float32))
    src = ((torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * scale - 0.5).float().clamp_min(0)
    i0 = src.long().clamp_max(n_in - 1)
    return i0, (i0 + 1).clamp_max(n_in - 1), src - i0


def resize_image(image: Tensor, size: tuple[int, int], antialias: bool = False) -> Tensor:
    """Bilinear resize of an image batch to the feature grid (SPEC §1.2).

    Without antialias this is ``F.interpolate(image, size, mode='bilinear', align_corners=False)`` computed
    separably from the two source rows and columns each output pixel uses, so only those are read (and converted,
    for a uint8 image); the values agree with ``F.interpolate`` to float rounding.

    Args:
        image (Tensor): (B, 3, H0, W0) float sRGB in [0, 1], or uint8 in [0, 255] (then divided by 255).
        size (tuple[int, int]): target (H, W).
        antialias (bool): low-pass before downsampling. Defaults to False, as the reference does.

    Returns:
        Tensor: (B, 3, H, W) float in [0, 1] (float input keeps its dtype).
    """
    u8 = image.dtype == torch.uint8
    if tuple(image.shape[-2:]) == tuple(size):
        return image.float() / 255.0 if u8 else image
    if antialias:
        image = image.float() / 255.0 if u8 else image
        return F.interpolate(image, size=tuple(size), mode='bilinear', align_corners=False, antialias=True)
    (h0, w0), (h, w) = image.shape[-2:], size
    dtype = torch.float32 if u8 else image.dtype
    y0, y1, wy = _linear_taps(h0, h, image.device)
    x0, x1, wx = _linear_taps(w0, w, image.device)
    # The four source pixels of every output pixel (views when the taps are regular), converted only there.
    top, bottom = _take(image, 2, y0), _take(image, 2, y1)
    wx = wx.to(dtype)
    top = torch.lerp(_take(top, 3, x0).to(dtype), _take(top, 3, x1).to(dtype), wx)
    bottom = torch.lerp(_take(bottom, 3, x0).to(dtype), _take(bottom, 3, x1).to(dtype), wx)
    out = torch.lerp(top, bottom, wy.to(dtype).view(-1, 1))  # (B, 3, H, W)
    return out.div_(255.0) if u8 else out


def _take(x: Tensor, dim: int, idx: Tensor) -> Tensor:
    """``x.index_select(dim, idx)``, as a strided view when ``idx`` is an arithmetic progression (integer scale
    factors, the usual case), which avoids a slow gather along the last axis."""
    if idx.numel() > 1:
        step = idx[1:] - idx[:-1]
        s = int(step[0])
        if s > 0 and bool((step == s).all()):
            start = int(idx[0])
            return x.narrow(dim, start, (idx.numel() - 1) * s + 1)[(slice(None), ) * dim + (slice(None, None, s), )]
    return x.index_select(dim, idx)


def srgb_to_luminance(rgb: Tensor) -> Tensor:
    """Relative luminance of sRGB in [0, 1] (SPEC §1.3): linearise, then Y = 0.2126R + 0.7152G + 0.0722B.

    Args:
        rgb (Tensor): (B, 3, H, W) sRGB in [0, 1].

    Returns:
        Tensor: (B, H, W) luminance.
    """
    # x^2.4 as exp(2.4 ln x): the same to float rounding, and vectorised (pow with a float exponent is not).
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055).clamp_min(0).log_().mul_(2.4).exp_())
    w = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (lin * w).sum(dim=1)


def sobel_magnitude(x: Tensor, kernel_x: Tensor = FEAT_SOBEL_X) -> Tensor:
    """Sobel gradient magnitude with replicate padding.

    Args:
        x (Tensor): (B, H, W) single map or (B, C, H, W); channels are combined as sqrt(sum_c gx_c^2 + gy_c^2).
        kernel_x (Tensor): 3x3 x-kernel; the y-kernel is its transpose. Defaults to the feature Sobel (/8).

    Returns:
        Tensor: (B, H, W) magnitude.
    """
    if x.dim() == 3:
        x = x.unsqueeze(1)
    b, c, h, w = x.shape
    k = kernel_x.to(dtype=x.dtype, device=x.device)
    weight = torch.stack([k, k.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    padded = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode='replicate')
    g = F.conv2d(padded, weight)  # (B*C, 2, H, W)
    return g.pow(2).reshape(b, c * 2, h, w).sum(dim=1).sqrt()


def minmax_valid(x: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
    """Min-max normalise each map over its valid pixels (SPEC §1.4).

    Args:
        x (Tensor): (B, H, W).
        valid (Tensor): (H, W) or (B, H, W) bool.
        eps (float): a range at or below ``eps`` is replaced by 1 (the map is only shifted). Defaults to 1e-8.

    Returns:
        Tensor: (B, H, W); invalid pixels are normalised with the same constants.
    """
    valid = valid.expand_as(x)
    if not bool(valid.any()):
        return x
    inf = torch.tensor(float('inf'), dtype=x.dtype, device=x.device)
    lo = torch.where(valid, x, inf).flatten(1).amin(dim=1)
    hi = torch.where(valid, x, -inf).flatten(1).amax(dim=1)
    rng = hi - lo
    rng = torch.where(rng <= eps, torch.ones_like(rng), rng)
    return (x - lo.view(-1, 1, 1)) / rng.view(-1, 1, 1)


def top_count(q: float, n_valid: int) -> int:
    """Size of a top-fraction set: ceil(q * n_valid), without the float round-up of e.g. 0.4 * 100 = 40.000000000000007.

    Args:
        q (float): fraction in [0, 1].
        n_valid (int): number of candidates.
    """
    return min(n_valid, max(0, math.ceil(q * n_valid - 1e-9)))


def _valid_values(x: Tensor, valid: Tensor) -> tuple[Tensor, object]:
    """The valid pixels of each map (B, n_valid), in row-major order, and where they sit (slices or the mask).

    The usual mask (all but a 1-pixel border) is read by slicing, any other by boolean indexing.
    """
    h, w = x.shape[-2:]
    if h >= 3 and w >= 3 and torch.equal(valid, valid_mask(h, w, device=valid.device)):
        where = (slice(None), slice(1, h - 1), slice(1, w - 1))
        return x[where].reshape(x.shape[0], -1), where
    return x[:, valid], (slice(None), valid)


def top_k_mask(vals: Tensor, k: int) -> Tensor:
    """Mask of exactly ``k`` largest values of each row; ties at the threshold go to the lowest indices.

    The threshold is the k-th largest value (``torch.kthvalue``, linear time), not a sort.

    Args:
        vals (Tensor): (B, n) values.
        k (int): how many to keep per row, 0 <= k <= n.

    Returns:
        Tensor: (B, n) bool.
    """
    n = vals.shape[1]
    if k <= 0:
        return torch.zeros_like(vals, dtype=torch.bool)
    thr = vals.kthvalue(n - k + 1, dim=1, keepdim=True).values
    above = vals > thr
    tie = vals == thr
    need = k - above.sum(1, keepdim=True)
    return above | (tie & (tie.cumsum(1) <= need))


def top_q(x: Tensor, q: float, valid: Tensor, min_range: float = 1e-6) -> Tensor:
    """Top-fraction mask (SPEC §1.5): exactly ceil(q * #valid) largest valid values per map.

    The mask is empty when fewer than 4 pixels are valid or when the valid values span less than ``min_range``
    (a flat map has no edges). Ties at the threshold go to the first pixels in row-major order, so the count is
    always exact.

    Args:
        x (Tensor): (B, H, W) scores.
        q (float): fraction in [0, 1].
        valid (Tensor): (H, W) bool, shared by the batch.
        min_range (float): minimum max - min over valid pixels. Defaults to 1e-6.

    Returns:
        Tensor: (B, H, W) bool.
    """
    check_params(q=q)
    b = x.shape[0]
    out = torch.zeros_like(x, dtype=torch.bool)
    vals, where = _valid_values(x, valid)  # (B, n_valid)
    n = vals.shape[1]
    k = top_count(q, n)
    if n < 4 or k == 0:
        return out
    sel = top_k_mask(vals, k)
    flat = (vals.amax(dim=1) - vals.amin(dim=1)) >= min_range
    sel &= flat.view(b, 1)
    if isinstance(where[1], slice):
        out[where] = sel.view(out[where].shape)
    else:
        out[where] = sel
    return out


def max_filter(x: Tensor, radius: int) -> Tensor:
    """Square (2r+1)x(2r+1) moving maximum of each map, out-of-map pixels ignored: ``max_pool2d(x, 2r+1, 1, r)``.

    Computed separably with two 1-D max-pools (the 2-D max-pool of PyTorch's CPU backend is an order of magnitude
    slower at these kernel sizes).

    Args:
        x (Tensor): (B, H, W) float.
        radius (int): half-width r >= 1.

    Returns:
        Tensor: (B, H, W).
    """
    k = 2 * radius + 1
    x = F.max_pool1d(x, k, stride=1, padding=radius)
    return F.max_pool1d(x.transpose(1, 2), k, stride=1, padding=radius).transpose(1, 2)


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Square dilation by ``radius`` pixels, i.e. a (2r+1)x(2r+1) max-pool (SPEC §1.7: dilate(centre, 2), (.., 4)).

    Args:
        mask (Tensor): (B, H, W) bool.
        radius (int): half-width of the square in pixels; 0 returns the mask.
    """
    check_params(radius=radius)
    if radius <= 0:
        return mask
    return max_filter(mask.float(), radius) > 0


def centreline(gi: Tensor, q_img: float, valid: Tensor, tol: float = 1e-6) -> Tensor:
    """Image-edge centreline (SPEC §1.6): valid & top_q_img(GI) & non-strict 3x3 local maximum of GI.

    As in the reference, when fewer than q_img of the pixels have a gradient the top set is filled up with flat
    pixels, and those pass the non-strict maximum test, so flat areas of mostly-flat images join the centreline.

    Args:
        gi (Tensor): (B, H, W) normalised image gradient magnitude.
        q_img (float): top fraction of the image gradient.
        valid (Tensor): (H, W) bool.
        tol (float): slack of the local-maximum test. Defaults to 1e-6.

    Returns:
        Tensor: (B, H, W) bool.
    """
    check_params(q_img=q_img)
    local_max = max_filter(gi, 1)
    return valid & top_q(gi, q_img, valid) & (gi >= local_max - tol)


def edge_zones(centre: Tensor, valid: Tensor, d_in: int = 2, d_out: int = 4) -> dict[str, Tensor]:
    """Zones around the image-edge centreline, in feature pixels (SPEC §1.7).

    Args:
        centre (Tensor): (B, H, W) bool centreline.
        valid (Tensor): (H, W) bool.
        d_in (int): radius of the inner (core) dilation. Defaults to 2.
        d_out (int): radius of the outer dilation. Defaults to 4.

    Returns:
        dict[str, Tensor]: ``inner`` = dilate(centre, d_in), ``outer`` = dilate(centre, d_out),
        ``ring`` = outer & ~inner & valid, ``far`` = ~outer & valid; all (B, H, W) bool.
    """
    check_params(d_in=d_in, d_out=d_out)
    inner = dilate(centre, d_in)
    # Square dilations compose (radius a, then b = radius a + b, also at the map border), so the outer zone grows
    # from the inner one with a smaller window.
    outer = dilate(inner, d_out - d_in) if d_out >= d_in else dilate(centre, d_out)
    return dict(inner=inner, outer=outer, ring=outer & ~inner & valid, far=~outer & valid)


def image_gradient(image: Tensor, size: tuple[int, int], antialias: bool = False) -> Tensor:
    """Normalised image gradient GI on the feature grid (SPEC §1.2-1.4).

    Args:
        image (Tensor): (B, 3, H0, W0) float sRGB in [0, 1], or uint8 (divided by 255 after the resize).
        size (tuple[int, int]): feature grid (H, W).
        antialias (bool): see :func:`resize_image`. Defaults to False.

    Returns:
        Tensor: (B, H, W) Sobel magnitude of the luminance, min-max normalised over the valid pixels.
    """
    lum = srgb_to_luminance(resize_image(image, size, antialias=antialias))
    gi = sobel_magnitude(lum, IMAGE_SOBEL_X)
    return minmax_valid(gi, valid_mask(*size, device=gi.device))
