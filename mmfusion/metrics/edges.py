"""Image/edge preparation shared by the Edge Fidelity metrics (SPEC §1).

Everything works on batches (B, H, W) on the device of the input. Masks are bool tensors.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor

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


def resize_image(image: Tensor, size: tuple[int, int], antialias: bool = False) -> Tensor:
    """Bilinear resize of a float image batch to the feature grid (SPEC §1.2).

    Args:
        image (Tensor): (B, 3, H0, W0) float sRGB in [0, 1].
        size (tuple[int, int]): target (H, W).
        antialias (bool): low-pass before downsampling. Defaults to False, as the reference does.

    Returns:
        Tensor: (B, 3, H, W).
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=tuple(size), mode='bilinear', align_corners=False, antialias=antialias)


def srgb_to_luminance(rgb: Tensor) -> Tensor:
    """Relative luminance of sRGB in [0, 1] (SPEC §1.3): linearise, then Y = 0.2126R + 0.7152G + 0.0722B.

    Args:
        rgb (Tensor): (B, 3, H, W) sRGB in [0, 1].

    Returns:
        Tensor: (B, H, W) luminance.
    """
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055).clamp_min(0).pow(2.4))
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


def top_q(x: Tensor, q: float, valid: Tensor, min_range: float = 1e-6) -> Tensor:
    """Top-fraction mask (SPEC §1.5): exactly ceil(q * #valid) largest valid values per map.

    The mask is empty when fewer than 4 pixels are valid or when the valid values span less than ``min_range``
    (a flat map has no edges). Ties at the threshold are broken by ``torch.topk``, so the count is always exact.

    Args:
        x (Tensor): (B, H, W) scores.
        q (float): fraction in [0, 1].
        valid (Tensor): (H, W) bool, shared by the batch.
        min_range (float): minimum max - min over valid pixels. Defaults to 1e-6.

    Returns:
        Tensor: (B, H, W) bool.
    """
    b = x.shape[0]
    out = torch.zeros_like(x, dtype=torch.bool)
    vals = x[:, valid]  # (B, n_valid)
    n = vals.shape[1]
    k = top_count(q, n)
    if n < 4 or k == 0:
        return out
    idx = vals.topk(k, dim=1).indices
    sel = torch.zeros_like(vals, dtype=torch.bool).scatter_(1, idx, True)
    flat = (vals.amax(dim=1) - vals.amin(dim=1)) >= min_range
    sel &= flat.view(b, 1)
    out[:, valid] = sel
    return out


def dilate(mask: Tensor, radius: int) -> Tensor:
    """Square dilation by ``radius`` pixels, i.e. a (2r+1)x(2r+1) max-pool (SPEC §1.7: dilate(centre, 2), (.., 4)).

    Args:
        mask (Tensor): (B, H, W) bool.
        radius (int): half-width of the square in pixels; 0 returns the mask.
    """
    if radius <= 0:
        return mask
    m = mask.unsqueeze(1).float()
    return F.max_pool2d(m, kernel_size=2 * radius + 1, stride=1, padding=radius).squeeze(1) > 0


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
    local_max = F.max_pool2d(gi.unsqueeze(1), kernel_size=3, stride=1, padding=1).squeeze(1)
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
    inner = dilate(centre, d_in)
    outer = dilate(centre, d_out)
    return dict(inner=inner, outer=outer, ring=outer & ~inner & valid, far=~outer & valid)


def image_gradient(image: Tensor, size: tuple[int, int], antialias: bool = False) -> Tensor:
    """Normalised image gradient GI on the feature grid (SPEC §1.2-1.4).

    Args:
        image (Tensor): (B, 3, H0, W0) float sRGB in [0, 1].
        size (tuple[int, int]): feature grid (H, W).
        antialias (bool): see :func:`resize_image`. Defaults to False.

    Returns:
        Tensor: (B, H, W) Sobel magnitude of the luminance, min-max normalised over the valid pixels.
    """
    lum = srgb_to_luminance(resize_image(image, size, antialias=antialias))
    gi = sobel_magnitude(lum, IMAGE_SOBEL_X)
    return minmax_valid(gi, valid_mask(*size, device=gi.device))
