"""Edge Fidelity EF = alpha * clamp(NC * EC * FC * SP, 0, 1) and its parts (SPEC §3).

Every function takes (B, C, H, W) features of any floating dtype, computes in float32 on their device and returns
(B,) tensors. Images whose features hold NaN/inf get a ``RuntimeWarning`` and metrics 0.

Quirks of the reference implementation, kept for parity (see the docstrings of the functions):

- EC is 1 - (share of the feature-edge energy far from the image edges), i.e. the energy inside the outer zone
  D_out; there is no core-only term although the paper speaks of the core zone. ``ec_core=True`` gives the share
  inside the inner zone D_in instead.
- NC is the share in the ring only, so energy exactly on the edge core counts through EC alone: a feature whose
  edges sit on the image edges scores NC ~ 0, and a slight blur that spills energy into the ring raises NC (and
  often EF); strong blur lowers EC and FC, so EF is not monotonic in sharpness.
- SP is measured on a 3x3 high-passed map, which decorrelates after one pixel for nearly every feature, so r_tau is
  almost always 1 and SP almost constant (64/65). ``sp_highpass=False`` measures the un-filtered map.
- r_tau is in feature pixels, so SP is not comparable across strides in image units.
- The FC radius is built from linspace(-1, 1, n) while the spectrum is centred by fftshift, so the DC bin sits at
  rho = 1/(n-1)-ish rather than 0; on maps of a few pixels it falls above rho_low.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import (
    PreparedFeatures,
    channel_chunks,
    channel_stats,
    check_image,
    check_params,
    prepare_features,
    warn_once,
    zero_bad,
    zscore,
)
from .edges import (
    IMAGE_SOBEL_X,
    centreline,
    edge_zones,
    image_gradient,
    minmax_valid,
    sobel_magnitude,
    top_q,
    valid_mask,
)

PRESETS = {
    # The configuration of the published profiles (SPEC §3, §4).
    'profiling': dict(q=0.40, q_img=0.40, gradient='channels', fc_map='l2', fc_clip=math.inf),
    # The reference's on-the-fly s* selection: everything on the first PCA component, sparser edges.
    'selection': dict(q=0.10, q_img=0.10, gradient='pca1', fc_map='pca1', fc_clip=8.0),
}


def _preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f'unknown EF preset {name!r}; choose one of {sorted(PRESETS)}.')
    return PRESETS[name]


def first_component_map(feat: Tensor) -> Tensor:
    """First principal component of each image's per-channel z-scored pixel vectors, as a map (SPEC §3).

    Exactly the reference's: X = (H*W, C) pixels of one image, each channel z-scored (population std + 1e-6), so the
    axis is the top eigenvector of the correlation matrix, not of the covariance (without the z-score, channels of
    large scale dominate and EF moves by up to 2x); the axis is fitted on all pixels (no sampling) and every pixel is
    projected on it. Its sign is arbitrary; every use here (min-max + gradient magnitude, power spectrum) ignores it.

    Args:
        feat (Tensor): (B, C, H, W) float32.

    Returns:
        Tensor: (B, H, W) scores.
    """
    b, c, h, w = feat.shape
    x = feat.flatten(2)  # (B, C, HW)
    mean = x.mean(dim=2, keepdim=True)
    z = (x - mean) / (x.std(dim=2, unbiased=False, keepdim=True) + 1e-6)
    cov = z @ z.transpose(1, 2) / (h * w)  # (B, C, C)
    _, vecs = torch.linalg.eigh(cov.double())
    axis = vecs[..., -1:].to(z.dtype)  # eigh sorts eigenvalues ascending: the last is the top one
    return (axis.transpose(1, 2) @ z).view(b, h, w)


def pca1_gradient(pc1: Tensor) -> Tensor:
    """Feature gradient of the ``'selection'`` preset: the Sobel magnitude (/4 kernel, replicate padding) of the
    first-component map min-max normalised to [0, 1] over all pixels (SPEC §3).

    Args:
        pc1 (Tensor): (B, H, W) output of :func:`first_component_map`.

    Returns:
        Tensor: (B, H, W).
    """
    full = torch.ones(pc1.shape[-2:], dtype=torch.bool, device=pc1.device)
    return sobel_magnitude(minmax_valid(pc1, full), IMAGE_SOBEL_X)


def multichannel_sobel(feat: Tensor, std: Tensor | None = None) -> Tensor:
    """sqrt(sum_c gx_c^2 + gy_c^2) of the per-channel z-scored features with the feature Sobel (/8), replicate pad.

    Computed without the full-size z-scored copy: with replicate padding the Sobel of a constant is 0 and the Sobel
    is linear, so Sobel(z-score(x_c)) = Sobel(x_c) / std_c (unbiased std, at least 1e-6). Channels are processed in
    chunks (separable slicing, no convolution), which keeps the temporaries small; the 1 / std_c^2 weights enter
    through one matrix-vector product per chunk, which also sums over the channels.

    Args:
        feat (Tensor): (B, C, H, W) float32.
        std (Tensor, optional): (B, C, 1) unbiased per-channel std over H*W (e.g.
            :meth:`PreparedFeatures.channel_std`); computed when None. Defaults to None.

    Returns:
        Tensor: (B, H, W) gradient magnitude.
    """
    b, c, h, w = feat.shape
    if std is None:
        _, std = channel_stats(feat.flatten(2), unbiased=True)
    inv_var = std.clamp_min(1e-6).pow(-2).view(b, 1, c)
    acc = torch.zeros(b, 1, h * w, dtype=feat.dtype, device=feat.device)
    start = 0
    for chunk in channel_chunks(feat):
        n = chunk.shape[1]
        p = F.pad(chunk, (1, 1, 1, 1), mode='replicate')
        dx = p[..., 2:] - p[..., :-2]  # [1, 0, -1] along x, then [1, 2, 1] along y
        gx = torch.add(dx[..., :-2, :], dx[..., 2:, :]).add_(dx[..., 1:-1, :], alpha=2)
        dy = p[..., 2:, :] - p[..., :-2, :]
        gy = torch.add(dy[..., :-2], dy[..., 2:]).add_(dy[..., 1:-1], alpha=2)
        g2 = gx.mul_(gx).addcmul_(gy, gy)
        acc.baddbmm_(inv_var[:, :, start:start + n], g2.view(b, n, h * w))  # acc += sum_c g2_c / var_c
        start += n
    return acc.view(b, h, w).sqrt_().div_(8.0)


def feature_gradient(feat: Tensor, mode: str = 'channels') -> Tensor:
    """Feature gradient magnitude G (SPEC §3).

    Args:
        feat (Tensor): (B, C, H, W) float32.
        mode (str): ``'channels'``: per-channel z-score (unbiased std >= 1e-6), Sobel (/8) per channel,
            G = sqrt(sum_c gx_c^2 + gy_c^2). ``'pca1'``: :func:`pca1_gradient` of :func:`first_component_map`.
            Defaults to ``'channels'``.

    Returns:
        Tensor: (B, H, W).
    """
    if mode == 'channels':
        return multichannel_sobel(feat)
    if mode == 'pca1':
        return pca1_gradient(first_component_map(feat))
    raise ValueError(f"unknown gradient mode {mode!r}; use 'channels' or 'pca1'.")


def concentration(grad: Tensor, zones: dict[str, Tensor], valid: Tensor, q: float,
                  ec_core: bool = False) -> tuple[Tensor, Tensor]:
    """Edge Concentration EC and Near-edge Concentration NC (SPEC §3).

    Feature edges E = top_q(minmax(G)); weights w = G on E & valid; T = sum w. NC = sum_ring w / T and
    EC = 1 - sum_far w / T. Reference quirk: EC therefore counts all energy inside D_out (the core and the ring), not
    the core alone as the paper's wording says; ``ec_core=True`` uses sum_{D_in & valid} w / T instead. NC counts
    the ring only, so energy on the core itself raises EC but not NC. Both are 0 when T = 0 (flat features).

    Args:
        grad (Tensor): (B, H, W) feature gradient G.
        zones (dict[str, Tensor]): output of :func:`~mmfusion.metrics.edges.edge_zones`.
        valid (Tensor): (H, W) bool.
        q (float): top fraction of feature edges.
        ec_core (bool): core-only EC variant. Defaults to False.

    Returns:
        tuple[Tensor, Tensor]: EC and NC, (B,) each, in [0, 1].
    """
    check_params(q=q)
    edges = top_q(minmax_valid(grad, valid), q, valid) & valid
    w = grad * edges
    total = w.sum(dim=(1, 2))
    ok = total > 1e-12
    safe = torch.where(ok, total, torch.ones_like(total))
    nc = (w * zones['ring']).sum(dim=(1, 2)) / safe
    if ec_core:
        ec = (w * (zones['inner'] & valid)).sum(dim=(1, 2)) / safe
    else:
        ec = 1 - (w * zones['far']).sum(dim=(1, 2)) / safe
    zero = torch.zeros_like(total)
    return torch.where(ok, ec.clamp(0, 1), zero), torch.where(ok, nc.clamp(0, 1), zero)


def frequency_content(m: Tensor, rho_low: float = 0.15, clip: float = math.inf) -> Tensor:
    """Frequency Content FC: share of the windowed power spectrum at normalised radius >= ``rho_low`` (SPEC §3).

    M is z-scored over H*W (unbiased std >= 1e-6), clamped to +-``clip``, multiplied by the outer product of two
    non-periodic Hann windows; P = |FFT2|^2, fftshift-centred; rho = sqrt(u^2 + v^2) / sqrt(2) with
    u = linspace(-1, 1, H), v = linspace(-1, 1, W), so the corners are at 1 (reference quirk: the DC bin is at a small
    non-zero rho). FC = 0 when the spectrum is empty.

    Args:
        m (Tensor): (B, H, W) scalar map (channel-L2 norm, or the first PCA component).
        rho_low (float): low-frequency cut. Defaults to 0.15.
        clip (float): clamp of the z-scored map. Defaults to inf (no clamp).

    Returns:
        Tensor: (B,) FC in [0, 1].
    """
    check_params(rho_low=rho_low, clip=clip)
    _, h, w = m.shape
    m = zscore(m, dim=(1, 2), unbiased=True)
    if math.isfinite(clip):
        m = m.clamp(-clip, clip)
    win = torch.outer(torch.hann_window(h, periodic=False, device=m.device),
                      torch.hann_window(w, periodic=False, device=m.device))
    power = torch.fft.fftshift(torch.fft.fft2(m * win).abs().pow(2), dim=(-2, -1))
    u = torch.linspace(-1, 1, h, device=m.device)
    v = torch.linspace(-1, 1, w, device=m.device)
    rho = (u[:, None].pow(2) + v[None, :].pow(2)).sqrt() / math.sqrt(2)
    total = power.sum(dim=(1, 2))
    high = (power * (rho >= rho_low)).sum(dim=(1, 2))
    ok = total > 1e-12
    return torch.where(ok, high / torch.where(ok, total, torch.ones_like(total)), torch.zeros_like(total))


def sp_radii(height: int, width: int, num: int = 16, frac: float = 0.6) -> list[int]:
    """Shift radii: unique(round(logspace(0, log10 r_max, num))) in [1, r_max], r_max = max(1, floor(frac * min(H, W))).

    Rounding is Python's (half to even, as numpy's).

    Args:
        height (int): map height H.
        width (int): map width W.
        num (int): points of the log-spaced grid. Defaults to 16.
        frac (float): r_max as a fraction of min(H, W). Defaults to 0.6.

    Returns:
        list[int]: increasing radii.
    """
    check_params(num=num, frac=frac)
    r_max = max(1, math.floor(frac * min(height, width)))
    if num <= 1:
        return [1]
    vals = {min(r_max, max(1, round(10**(i / (num - 1) * math.log10(r_max))))) for i in range(num)}
    return sorted(vals)


def shift_ncc(m: Tensor, radii: list[int]) -> Tensor:
    """Mean normalised cross-correlation of a map with itself shifted by r in 8 directions, for each radius.

    For shift (dy, dx) the map is cropped to the overlap (no padding) and the Pearson correlation of the two crops
    is taken. Diagonal shifts move r pixels along both axes. A shift and its opposite pair the same pixels, so the 8
    directions reduce to 4. All shifts come from one FFT autocorrelation and summed-area tables (no Python loop
    over shifts). A direction whose overlap has fewer than 2 pixels or no variance is left out of the mean; a radius
    with none left gets NCC 0.

    Args:
        m (Tensor): (B, H, W) map.
        radii (list[int]): shift radii in pixels.

    Returns:
        Tensor: (B, len(radii)) mean NCC.
    """
    check_params(radii=radii)
    b, h, w = m.shape
    dev = m.device
    r = torch.tensor(radii, device=dev)
    zero = torch.zeros_like(r)
    # (dy, dx) for +x, +y, +x+y, +x-y; the opposite directions give the same numbers.
    dy = torch.stack([zero, r, r, r], dim=1).flatten()
    dx = torch.stack([r, zero, r, -r], dim=1).flatten()
    # Rows/columns of the first crop; the second is the same box moved by (dy, dx). Radii beyond the map leave an
    # empty overlap.
    dy, dx = dy.clamp(-h, h), dx.clamp(-w, w)
    ay0, ay1 = (-dy).clamp_min(0), h - dy.clamp_min(0)
    ax0, ax1 = (-dx).clamp_min(0), w - dx.clamp_min(0)
    nh, nw = (ay1 - ay0).clamp_min(0), (ax1 - ax0).clamp_min(0)
    count = (nh * nw).to(m.dtype)

    def box_sums(x: Tensor) -> tuple[Tensor, Tensor]:
        sat = F.pad(x.cumsum(1).cumsum(2), (1, 0, 1, 0))  # (B, H+1, W+1)

        def rect(y0, y1, x0, x1):
            y1, x1 = y0 + (y1 - y0).clamp_min(0), x0 + (x1 - x0).clamp_min(0)
            return sat[:, y1, x1] - sat[:, y0, x1] - sat[:, y1, x0] + sat[:, y0, x0]

        return rect(ay0, ay1, ax0, ax1), rect(ay0 + dy, ay1 + dy, ax0 + dx, ax1 + dx)

    # Centre first: the sums are then small and float32 keeps the correlations accurate.
    m = m - m.mean(dim=(1, 2), keepdim=True)
    sa, sb = box_sums(m)
    qa, qb = box_sums(m * m)
    fh, fw = 2 * h, 2 * w  # zero padding: linear, not circular, correlation
    spec = torch.fft.rfft2(m, s=(fh, fw))
    corr = torch.fft.irfft2(spec.conj() * spec, s=(fh, fw))  # corr[dy, dx] = sum_p m[p] m[p + (dy, dx)]
    sab = corr[:, dy % fh, dx % fw]
    n = count.clamp_min(1)
    cov = sab / n - sa * sb / n.pow(2)
    var_a = (qa / n - (sa / n).pow(2)).clamp_min(0)
    var_b = (qb / n - (sb / n).pow(2)).clamp_min(0)
    denom = (var_a * var_b).sqrt()
    ok = (count >= 2) & (denom > 1e-10)
    ncc = torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov))
    ncc = ncc.view(b, len(radii), 4)
    ok = ok.view(b, len(radii), 4)
    n_ok = ok.sum(-1)
    return torch.where(n_ok > 0, ncc.sum(-1) / n_ok.clamp_min(1), torch.zeros_like(ncc[..., 0]))


def _ncc_one_radius(m: Tensor, r: int) -> Tensor:
    """:func:`shift_ncc` for a single radius, from the cropped overlaps directly (no FFT): (B, H, W) -> (B,)."""
    b, h, w = m.shape
    vals, oks = [], []
    for dy, dx in ((0, r), (r, 0), (r, r), (r, -r)):  # +x, +y, +x+y, +x-y; the opposites give the same numbers
        dy, dx = min(dy, h), max(-w, min(dx, w))
        ay0, ay1, ax0, ax1 = max(0, -dy), h - max(dy, 0), max(0, -dx), w - max(dx, 0)
        if max(0, ay1 - ay0) * max(0, ax1 - ax0) < 2:
            vals.append(torch.zeros(b, dtype=m.dtype, device=m.device))
            oks.append(torch.zeros(b, dtype=torch.bool, device=m.device))
            continue
        crop_a = m[:, ay0:ay1, ax0:ax1]
        crop_b = m[:, ay0 + dy:ay1 + dy, ax0 + dx:ax1 + dx]
        a = (crop_a - crop_a.mean(dim=(1, 2), keepdim=True)).reshape(b, 1, -1)
        c = (crop_b - crop_b.mean(dim=(1, 2), keepdim=True)).reshape(b, -1, 1)
        cov = torch.bmm(a, c).view(b)
        var_a = torch.bmm(a, a.transpose(1, 2)).view(b)
        var_b = torch.bmm(c.transpose(1, 2), c).view(b)
        denom = (var_a * var_b).sqrt()  # the 1/n of the means cancel in the ratio; compare at the per-pixel scale
        n = a.shape[-1]
        ok = denom / n > 1e-10
        vals.append(torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov)))
        oks.append(ok)
    ncc, ok = torch.stack(vals, dim=1), torch.stack(oks, dim=1)
    n_ok = ok.sum(-1)
    return torch.where(n_ok > 0, ncc.sum(-1) / n_ok.clamp_min(1), torch.zeros_like(ncc[:, 0]))


def decorrelation_radius(m: Tensor, tau: float = 0.5, num_radii: int = 16, r_frac: float = 0.6) -> Tensor:
    """r_tau: the first radius whose mean 8-direction NCC falls below ``tau``, else the largest radius.

    The smallest radius is measured first on its own (a few slices of the map); only when some map is still
    correlated there are all radii measured (:func:`shift_ncc`). On high-passed maps r_tau is nearly always the
    smallest radius, so the full measurement is rarely needed.

    Args:
        m (Tensor): (B, H, W) map (already filtered and normalised as wanted).
        tau (float): correlation threshold. Defaults to 0.5.
        num_radii (int): points of the log-spaced radius grid. Defaults to 16.
        r_frac (float): r_max = floor(r_frac * min(H, W)). Defaults to 0.6.

    Returns:
        Tensor: (B,) r_tau in feature pixels (float).
    """
    check_params(tau=tau, num_radii=num_radii, r_frac=r_frac)
    radii = sp_radii(m.shape[1], m.shape[2], num_radii, r_frac)
    r = torch.tensor(radii, dtype=m.dtype, device=m.device)
    first_ncc = _ncc_one_radius(m, radii[0])
    if bool((first_ncc < tau).all()):
        return r[:1].expand(m.shape[0]).clone()
    ncc = shift_ncc(m, radii)
    ncc[:, 0] = first_ncc  # the same decision at the first radius whichever path a batch takes
    below = ncc < tau  # (B, R)
    first = torch.where(below.any(1), below.float().argmax(1), torch.full_like(below[:, 0], len(radii) - 1,
                                                                                 dtype=torch.long))
    return r[first]


def spatial_precision(m0: Tensor,
                      tau: float = 0.5,
                      scale: float = 64.0,
                      num_radii: int = 16,
                      r_frac: float = 0.6,
                      highpass: bool = True) -> tuple[Tensor, Tensor]:
    """Spatial Precision SP = 1 / (1 + r_tau / scale) (SPEC §3).

    The channel-L2 map M0 is high-passed as M0 - avgpool3x3(M0) (zero padding counted in the average), z-scored
    (unbiased std >= 1e-6), and r_tau is its :func:`decorrelation_radius`. Reference quirks: the high-pass leaves
    almost no spatial correlation, so r_tau is almost always 1 and SP almost always 64/65; r_tau is in feature
    pixels, so SP does not compare strides in image units. ``highpass=False`` skips the filter.

    Args:
        m0 (Tensor): (B, H, W) channel-L2 map.
        tau (float): NCC threshold. Defaults to 0.5.
        scale (float): r_tau scale (the paper's 1 / gamma). Defaults to 64.0.
        num_radii (int): radius grid size. Defaults to 16.
        r_frac (float): largest radius as a fraction of min(H, W). Defaults to 0.6.
        highpass (bool): apply the 3x3 high-pass. Defaults to True.

    Returns:
        tuple[Tensor, Tensor]: SP and r_tau, (B,) each.
    """
    check_params(tau=tau, scale=scale, num_radii=num_radii, r_frac=r_frac)
    if highpass:
        # 3x3 mean with zero padding counted = 1-D 3-means along x then y (separable, and much faster on CPU).
        box = F.avg_pool1d(m0, 3, stride=1, padding=1, count_include_pad=True)
        box = F.avg_pool1d(box.transpose(1, 2), 3, stride=1, padding=1, count_include_pad=True).transpose(1, 2)
        m0 = m0 - box
    r_tau = decorrelation_radius(zscore(m0, dim=(1, 2), unbiased=True), tau, num_radii, r_frac)
    return 1.0 / (1.0 + r_tau / scale), r_tau


def _warn_small_inputs(h: int, w: int, image_size: tuple[int, int]) -> None:
    """Warn when the map leaves fewer than 3x3 scored pixels, or the image is much smaller than the map."""
    if h < 5 or w < 5:
        warn_once(f'EF: a {h}x{w} feature map has {max(h - 2, 0)}x{max(w - 2, 0)} scored pixels (its 1-pixel border '
                  'is left out) and EF needs 3x3 at least, i.e. a 5x5 map; its EF is 0 or meaningless. Use a larger '
                  'input image or a finer stride.')
    ih, iw = image_size
    if 2 * ih <= h or 2 * iw <= w:
        warn_once(f'EF: the {ih}x{iw} image is much smaller than the {h}x{w} feature map it is compared with; its '
                  'edges are upsampled guesses. Pass the image the features were computed from.')


def edge_fidelity(feat: Tensor | PreparedFeatures,
                  image: Tensor,
                  preset: str = 'profiling',
                  *,
                  q: float | None = None,
                  q_img: float | None = None,
                  gradient: str | None = None,
                  fc_map: str | None = None,
                  fc_clip: float | None = None,
                  d_in: int = 2,
                  d_out: int = 4,
                  rho_low: float = 0.15,
                  tau: float = 0.5,
                  sp_scale: float = 64.0,
                  num_radii: int = 16,
                  r_frac: float = 0.6,
                  sp_highpass: bool = True,
                  alpha: float = 100.0,
                  antialias: bool = False,
                  ec_core: bool = False) -> dict[str, Tensor]:
    """Edge Fidelity EF = alpha * clamp(NC * EC * FC * SP, 0, 1) of features against their images (SPEC §1, §3).

    The image is resized (bilinear) to the feature grid, turned into luminance, and its Sobel magnitude GI gives the
    edge centreline (top ``q_img`` fraction, non-strict 3x3 maxima) and the zones: inner = dilate(centre, d_in),
    ring = dilate(centre, d_out) minus inner, far = outside dilate(centre, d_out); all within the valid pixels (no
    1-pixel border). See :func:`concentration` (EC, NC), :func:`frequency_content` (FC) and
    :func:`spatial_precision` (SP, r_tau) for the parts and the reference quirks they keep (EC counts the whole
    outer zone, SP is nearly constant, r_tau is in feature pixels).

    Args:
        feat (Tensor | PreparedFeatures): (B, C, H, W) features, any floating dtype, or the map prepared by
            :func:`~mmfusion.metrics.prepare_features` (shared with :func:`~mmfusion.metrics.structural_coherence`).
        image (Tensor): uint8 RGB, (B, 3, H0, W0) or (3, H0, W0) (shared by the batch); any size.
        preset (str): ``'profiling'`` (the published profiles: multi-channel gradient, q = q_img = 0.40, FC on the
            channel-L2 map) or ``'selection'`` (first-PCA-component gradient, q = q_img = 0.10, FC on the PCA map
            clamped to +-8 std). Defaults to ``'profiling'``.
        q (float, optional): top fraction of feature edges. Defaults to the preset's.
        q_img (float, optional): top fraction of image edges. Defaults to the preset's.
        gradient (str, optional): ``'channels'`` or ``'pca1'``. Defaults to the preset's.
        fc_map (str, optional): ``'l2'`` or ``'pca1'``. Defaults to the preset's.
        fc_clip (float, optional): clamp of the FC map in std (inf: none). Defaults to the preset's.
        d_in (int): inner zone radius in feature pixels. Defaults to 2.
        d_out (int): outer zone radius in feature pixels. Defaults to 4.
        rho_low (float): FC low-frequency cut. Defaults to 0.15.
        tau (float): SP correlation threshold. Defaults to 0.5.
        sp_scale (float): SP scale. Defaults to 64.0.
        num_radii (int): SP radius grid size. Defaults to 16.
        r_frac (float): SP largest radius as a fraction of min(H, W). Defaults to 0.6.
        sp_highpass (bool): SP on the 3x3 high-passed map (reference). Defaults to True.
        alpha (float): EF scale; 100 gives the paper's table. Defaults to 100.0.
        antialias (bool): antialiased image resize (the reference has none). Defaults to False.
        ec_core (bool): core-only EC instead of the reference's. Defaults to False.

    Returns:
        dict[str, Tensor]: (B,) float32 tensors ``EC``, ``NC``, ``FC``, ``SP``, ``r_tau`` (feature pixels) and
        ``EF`` (0-100 scale).
    """
    cfg = dict(_preset(preset))
    for key, val in dict(q=q, q_img=q_img, gradient=gradient, fc_map=fc_map, fc_clip=fc_clip).items():
        if val is not None:
            cfg[key] = val
    check_params(q=cfg['q'], q_img=cfg['q_img'], fc_clip=cfg['fc_clip'], d_in=d_in, d_out=d_out, rho_low=rho_low,
                 tau=tau, sp_scale=sp_scale, num_radii=num_radii, r_frac=r_frac, alpha=alpha)
    prep = prepare_features(feat)
    feat, bad = prep.feat, prep.bad
    b, _, h, w = feat.shape
    img = check_image(image, b, feat.device)  # uint8: only the pixels the resize reads are converted
    _warn_small_inputs(h, w, tuple(img.shape[-2:]))
    valid = valid_mask(h, w, device=feat.device)

    gi = image_gradient(img, (h, w), antialias=antialias)
    zones = edge_zones(centreline(gi, cfg['q_img'], valid), valid, d_in, d_out)
    if cfg['fc_map'] not in ('l2', 'pca1'):
        raise ValueError(f"unknown fc_map {cfg['fc_map']!r}; use 'l2' or 'pca1'.")
    pc1 = first_component_map(feat) if 'pca1' in (cfg['gradient'], cfg['fc_map']) else None
    if cfg['gradient'] == 'pca1':
        grad = pca1_gradient(pc1)
    elif cfg['gradient'] == 'channels':
        grad = multichannel_sobel(feat, prep.channel_std(unbiased=True))
    else:
        grad = feature_gradient(feat, cfg['gradient'])
    ec, nc = concentration(grad, zones, valid, cfg['q'], ec_core=ec_core)

    m0 = prep.norm_map()
    fc_src = m0 if cfg['fc_map'] == 'l2' else pc1
    fc = frequency_content(fc_src, rho_low=rho_low, clip=cfg['fc_clip'])
    sp, r_tau = spatial_precision(m0, tau, sp_scale, num_radii, r_frac, highpass=sp_highpass)
    ef = alpha * (nc * ec * fc * sp).clamp(0, 1)
    return zero_bad(dict(EC=ec, NC=nc, FC=fc, SP=sp, r_tau=r_tau, EF=ef), bad)
