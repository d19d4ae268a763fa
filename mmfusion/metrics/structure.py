"""Structural Coherence: SFC, SCS, SC and the supervised SC_GT (SPEC §2).

All functions take a (B, C, H, W) feature map of any floating dtype, compute in float32 on its device and return
(B,) tensors. Images whose features hold NaN/inf get a ``RuntimeWarning`` and metrics 0.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from .cluster import (
    compact,
    kmeans_multi,
    pca_axes,
    pca_project,
    silhouette,
    stratified_keep,
    stratified_silhouettes,
)
from .common import (
    PreparedFeatures,
    channel_moments,
    check_params,
    norm_map,
    prepare_features,
    warn_once,
    zero_bad,
    zscore,
)


def channel_norm_map(feat: Tensor) -> Tensor:
    """Per-pixel L2 norm over channels (the map M of SFC, FC and SP).

    Args:
        feat (Tensor): (B, C, H, W) float32.

    Returns:
        Tensor: (B, H, W).
    """
    return norm_map(feat)


def _sfc(m0: Tensor, cell: int, grid: int | None, clip: float) -> Tensor:
    """SFC of a channel-L2 map (B, H, W)."""
    b, h, w = m0.shape
    m = zscore(m0, dim=(1, 2), unbiased=True).clamp(-clip, clip)
    if grid is None:
        ch, cw = min(cell, h), min(cell, w)
        nh, nw = h // ch, w // cw
    else:
        ch, cw = max(1, h // grid), max(1, w // grid)
        nh, nw = min(grid, h // ch), min(grid, w // cw)
    if nh * nw < 2:
        change = 'a larger grid=' if grid is not None else 'a smaller cell='
        warn_once(f'SFC: a {h}x{w} feature map holds {nh * nw} cell of {ch}x{cw} px, and SFC needs 2 cells at least '
                  f'(it is 0 here); use {change} or a larger input image.')
    cells = m[:, :nh * ch, :nw * cw].reshape(b, nh, ch, nw, cw)
    means = cells.mean(dim=(2, 4)).reshape(b, -1)
    variances = cells.var(dim=(2, 4), unbiased=False).reshape(b, -1)
    inter = means.var(dim=1, unbiased=False)
    intra = variances.mean(dim=1).clamp_min(1e-6)
    return inter / (inter + intra)


def structured_feature_contrast(feat: Tensor | PreparedFeatures,
                                *,
                                cell: int = 8,
                                grid: int | None = None,
                                clip: float = 5.0) -> Tensor:
    """Structured Feature Contrast SFC = inter / (inter + intra) in [0, 1] (SPEC §2).

    M is the channel-L2 map, z-scored over H*W (unbiased std, at least 1e-6) and clamped to +-``clip``. It is cut
    into non-overlapping cells (the remainder is cropped); inter = variance of the cell means, intra = mean of the
    cell variances (at least 1e-6). Both variances are population (biased) ones, so inter + intra is the variance of
    the cropped map and SFC is the share of it explained by the cells. A map that fits in one cell scores 0.

    Args:
        feat (Tensor | PreparedFeatures): (B, C, H, W) features, or the map prepared by
            :func:`~mmfusion.metrics.prepare_features`.
        cell (int): cell side in pixels, min(cell, H) x min(cell, W). Defaults to 8.
        grid (int, optional): use a fixed grid x grid cells instead (cells of H // grid x W // grid pixels, at least
            1); the reference's second variant, which tends to 1 on small maps. Defaults to None.
        clip (float): clamp of the z-scored map, in std. Defaults to 5.0.

    Returns:
        Tensor: (B,) SFC.
    """
    check_params(cell=cell, grid=grid, clip=clip)
    prep = prepare_features(feat)
    return zero_bad(dict(v=_sfc(prep.norm_map(), cell, grid, clip)), prep.bad)['v']


def sample_points(feat: Tensor | PreparedFeatures,
                  n_samples: int,
                  generator: torch.Generator,
                  raster: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
    """Per-channel z-scored pixel vectors (B, n, C), at most ``n_samples`` of them (same pixels for the batch).

    The mean and the population std of each channel are those of all H*W pixels (taken from the prepared map when
    given one); the pixels are drawn with ``torch.randperm`` from ``generator``, and come in draw order. The result
    is a transposed view of a (B, C, n) tensor.

    With ``raster=True`` the drawn pixels come in raster order instead, with the permutation ``perm`` that puts
    them in draw order (``points[:, perm]``; None when all pixels are kept): the clustering permutes its small
    PCA scores rather than the (C, n) points.
    """
    if isinstance(feat, PreparedFeatures):
        mean, ssd = feat.channel_stats()
        feat = feat.feat
    else:
        mean, ssd = channel_moments(feat.flatten(2))
    x = feat.flatten(2)  # (B, C, HW)
    n = x.shape[-1]
    std = (ssd / n).sqrt_()
    perm = None
    if n > n_samples:
        idx = torch.randperm(n, generator=generator)[:n_samples].to(x.device)
        # Read the pixels in raster order (cache-friendly on a large map).
        srt, order = idx.sort()
        x = x.reshape(-1, n).index_select(1, srt).view(*x.shape[:2], -1)
        perm = torch.argsort(order)
        if not raster:
            x = x.view(-1, x.shape[-1]).index_select(1, perm).view_as(x)
    else:
        x = x.clone()
    # A transposed view, not a copy: the consumers are matrix products (which take either layout) and elementwise
    # ops on the (C, n) layout, and a (C, n) -> (n, C) copy costs more than the rest of the preparation.
    x = x.sub_(mean).div_(std.add_(1e-6)).transpose(1, 2)
    return (x, perm) if raster else x


def centred(x: Tensor) -> tuple[Tensor, Tensor]:
    """Points (N, n, C) minus their mean, and their total variance (N,).

    The elementwise work follows the memory layout of ``x`` (elementwise ops on a transposed view are slow), and
    the sum of squares is a reduction without a full-size temporary (a multi-MB temporary costs page faults).
    """
    t = x.transpose(1, 2)
    if t.is_contiguous():  # (N, C, n) storage, as sample_points gives
        tc = t - t.mean(dim=2, keepdim=True)
        return tc.transpose(1, 2), torch.einsum('bcn,bcn->b', tc, tc) / x.shape[1]
    x = x.contiguous()
    xc = x - x.mean(dim=1, keepdim=True)
    return xc, torch.einsum('bnc,bnc->b', xc, xc) / x.shape[1]


def _median_ignore_nan(vals: Tensor) -> Tensor:
    """Median over the last dim of the finite values (mean of the two middle ones); NaN where none."""
    ok = torch.isfinite(vals)
    count = ok.sum(-1, keepdim=True)
    srt = torch.where(ok, vals, torch.full_like(vals, float('inf'))).sort(-1).values
    lo = srt.gather(-1, ((count - 1) // 2).clamp_min(0))
    hi = srt.gather(-1, (count // 2).clamp_max(vals.shape[-1] - 1))
    med = ((lo + hi) / 2).squeeze(-1)
    return torch.where(count.squeeze(-1) > 0, med, torch.full_like(med, float('nan')))


def clustering_score_points(x: Tensor,
                            *,
                            ks: tuple[int, ...] = (6, 8, 10),
                            pca_dim: int = 32,
                            restarts: int = 10,
                            n_silhouette: int = 2000,
                            max_iter: int = 100,
                            tol: float = 1e-4,
                            prune_after: int | None = 3,
                            prune_keep: int = 2,
                            generator: torch.Generator | None = None) -> Tensor:
    """SCS of already prepared point sets: PCA, k-means++ with restarts per k, stratified silhouette, median.

    Args:
        x (Tensor): (N, n, C) points (z-scored, sampled).
        ks (tuple[int]): numbers of clusters. Defaults to (6, 8, 10).
        pca_dim (int): PCA dimension, clipped to min(pca_dim, C, n - 1). Defaults to 32.
        restarts (int): k-means runs per k. Defaults to 10.
        n_silhouette (int): about this many points enter the silhouette. Defaults to 2000.
        max_iter (int): Lloyd iterations at most. Defaults to 100.
        tol (float): k-means tolerance. Defaults to 1e-4.
        prune_after (int, optional): k-means iterations after which only the ``prune_keep`` best restarts per k go
            on; None runs every restart to convergence (as scikit-learn). Defaults to 3.
        prune_keep (int): restarts kept per k after pruning. Defaults to 2.
        generator (torch.Generator, optional): CPU generator; seeded with 0 if None.

    Returns:
        Tensor: (N,) SCS in [0, 1]; 0 where no k survives or the points are constant.
    """
    check_params(ks=ks, pca_dim=pca_dim, restarts=restarts, n_silhouette=n_silhouette, max_iter=max_iter, tol=tol,
                 prune_after=prune_after, prune_keep=prune_keep)
    if x.dim() != 3:
        raise ValueError(f'x must be (N, n, C) point sets, got shape {tuple(x.shape)}.')
    _warn_few_points(x.shape[1], ks, f'{x.shape[1]} points')
    return _clustering_score(x, None, ks=ks, pca_dim=pca_dim, restarts=restarts, n_silhouette=n_silhouette,
                             max_iter=max_iter, tol=tol, prune_after=prune_after, prune_keep=prune_keep,
                             generator=generator)


def _clustering_score(x: Tensor, perm: Tensor | None, *, ks: tuple[int, ...], pca_dim: int, restarts: int,
                      n_silhouette: int, max_iter: int, tol: float, prune_after: int | None, prune_keep: int,
                      generator: torch.Generator | None) -> Tensor:
    """:func:`clustering_score_points` of the points ``x[:, perm]`` (``x`` itself when ``perm`` is None).

    PCA does not depend on the order of the points, so it runs on ``x`` as given and only the (N, n, dim) scores
    are permuted.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    num, n, c = x.shape
    dim = min(pca_dim, c, n - 1)
    if dim < 1:
        return torch.zeros(num, device=x.device)
    xc, total_var = centred(x)
    constant = total_var <= 1e-10
    z = xc @ pca_axes(xc, dim)
    if perm is not None:
        z = z.index_select(1, perm)
    sil = torch.full((num, len(ks)), float('nan'), device=x.device)
    run = [j for j, k in enumerate(ks) if n >= 2 * k]  # otherwise some cluster has fewer than 2 members
    if run:
        run_ks = tuple(ks[j] for j in run)
        results = kmeans_multi(z, run_ks, restarts=restarts, max_iter=max_iter, tol=tol, generator=generator,
                               prune_after=prune_after, prune_keep=prune_keep)
        keys = torch.rand(n, generator=generator)
        labelings = [lab for lab, _ in results]
        s = stratified_silhouettes(z, labelings, run_ks, n_silhouette, keys)
        for col, (j, lab, k) in enumerate(zip(run, labelings, run_ks)):
            ok = F.one_hot(lab, k).sum(1).amin(-1) >= 2
            sil[:, j] = torch.where(ok, s[:, col], torch.full_like(s[:, col], float('nan')))
    med = _median_ignore_nan(sil)
    scs = (med + 1) / 2
    return torch.where(torch.isfinite(scs) & ~constant, scs, torch.zeros_like(scs))


def _warn_few_points(n: int, ks: tuple[int, ...], source: str) -> None:
    """Warn when no k of ``ks`` can give every cluster 2 members out of ``n`` points (SCS is then 0)."""
    k = min(ks)
    if n < 2 * k:
        warn_once(f'SCS: {source} cannot form k={k} clusters of 2 points each (the smallest k needs {2 * k} '
                  'points), so SCS is 0; use a larger input image or smaller ks=.')


def structural_clustering_score(feat: Tensor | PreparedFeatures,
                                *,
                                ks: tuple[int, ...] = (6, 8, 10),
                                n_samples: int = 4096,
                                pca_dim: int = 32,
                                restarts: int = 10,
                                n_silhouette: int = 2000,
                                seed: int = 0,
                                max_iter: int = 100,
                                tol: float = 1e-4,
                                prune_after: int | None = 3,
                                prune_keep: int = 2) -> Tensor:
    """Structural Clustering Score SCS = (median_k silhouette_k + 1) / 2 in [0, 1] (SPEC §2).

    Per image: pixel vectors (H*W, C), per-channel z-score (population std + 1e-6), ``n_samples`` pixels drawn
    without replacement when there are more (the same pixels for every image of the batch), PCA to
    min(pca_dim, C, n - 1) dimensions (exact, or seeded randomized above 256 dimensions), then for each k: k-means
    (greedy k-means++ seeding, ``restarts`` seeded runs, lowest inertia kept), skipped when a cluster has fewer than
    2 members; Euclidean silhouette on about ``n_silhouette`` points sampled stratified by cluster. Everything is
    seeded by ``seed``: same input, same numbers, and an image's numbers do not depend on the rest of the batch.

    Speed: all k and restarts run as one batched Lloyd iteration, and by default only the 2 best restarts per k
    continue after 3 iterations (``prune_after``); ``prune_after=None`` runs all of them to convergence, as
    scikit-learn's ``KMeans(n_init=10)``. Either way SCS agrees with scikit-learn's PCA + KMeans + silhouette_score
    on the same points to well within 0.02 (tests/test_metrics/test_structure.py; benchmarks/bench_metrics.py).

    Args:
        feat (Tensor | PreparedFeatures): (B, C, H, W) features, or the map prepared by
            :func:`~mmfusion.metrics.prepare_features`.
        ks (tuple[int]): numbers of clusters. Defaults to (6, 8, 10).
        n_samples (int): pixels kept per image. Defaults to 4096.
        pca_dim (int): PCA dimension. Defaults to 32.
        restarts (int): k-means runs per k. Defaults to 10.
        n_silhouette (int): silhouette sample size. Defaults to 2000.
        seed (int): seed of every random draw. Defaults to 0.
        max_iter (int): Lloyd iterations at most. Defaults to 100.
        tol (float): k-means relative tolerance. Defaults to 1e-4.
        prune_after (int, optional): k-means iterations after which only the ``prune_keep`` best restarts per k go
            on; None runs every restart to convergence (as scikit-learn). Defaults to 3.
        prune_keep (int): restarts kept per k after pruning. Defaults to 2.

    Returns:
        Tensor: (B,) SCS; 0 when no k survives, or the features are constant or non-finite.
    """
    check_params(ks=ks, n_samples=n_samples, pca_dim=pca_dim, restarts=restarts, n_silhouette=n_silhouette,
                 seed=seed, max_iter=max_iter, tol=tol, prune_after=prune_after, prune_keep=prune_keep)
    prep = prepare_features(feat)
    h, w = prep.shape[-2:]
    _warn_few_points(min(h * w, n_samples), ks, f'a {h}x{w} feature map ({min(h * w, n_samples)} points)')
    gen = torch.Generator().manual_seed(seed)
    x, perm = sample_points(prep, n_samples, gen, raster=True)
    scs = _clustering_score(x, perm, ks=ks, pca_dim=pca_dim, restarts=restarts, n_silhouette=n_silhouette,
                            max_iter=max_iter, tol=tol, prune_after=prune_after, prune_keep=prune_keep,
                            generator=gen)
    return zero_bad(dict(v=scs), prep.bad)['v']


def structural_coherence(feat: Tensor | PreparedFeatures,
                         *,
                         cell: int = 8,
                         grid: int | None = None,
                         clip: float = 5.0,
                         ks: tuple[int, ...] = (6, 8, 10),
                         n_samples: int = 4096,
                         pca_dim: int = 32,
                         restarts: int = 10,
                         n_silhouette: int = 2000,
                         seed: int = 0,
                         max_iter: int = 100,
                         tol: float = 1e-4,
                         prune_after: int | None = 3,
                         prune_keep: int = 2) -> dict[str, Tensor]:
    """Structural Coherence SC = sqrt(SFC * SCS) (SPEC §2; the reference never forms SC, mmfusion does).

    Args:
        feat (Tensor | PreparedFeatures): (B, C, H, W) features, any floating dtype, or the map prepared by
            :func:`~mmfusion.metrics.prepare_features` (shared with :func:`~mmfusion.metrics.edge_fidelity`).
        cell (int): SFC cell side. Defaults to 8.
        grid (int, optional): SFC fixed grid instead of cells. Defaults to None.
        clip (float): SFC clamp in std. Defaults to 5.0.
        ks (tuple[int]): SCS numbers of clusters. Defaults to (6, 8, 10).
        n_samples (int): SCS pixels per image. Defaults to 4096.
        pca_dim (int): SCS PCA dimension. Defaults to 32.
        restarts (int): SCS k-means runs per k. Defaults to 10.
        n_silhouette (int): SCS silhouette sample size. Defaults to 2000.
        seed (int): SCS seed. Defaults to 0.
        max_iter (int): k-means iterations at most. Defaults to 100.
        tol (float): k-means tolerance. Defaults to 1e-4.
        prune_after (int, optional): SCS restart pruning, see :func:`structural_clustering_score`. Defaults to 3.
        prune_keep (int): restarts kept per k after pruning. Defaults to 2.

    Returns:
        dict[str, Tensor]: (B,) float32 tensors ``SFC``, ``SCS``, ``SC``.
    """
    check_params(cell=cell, grid=grid, clip=clip)  # the SCS options are checked by structural_clustering_score
    prep = prepare_features(feat)
    sfc = _sfc(prep.norm_map(), cell, grid, clip)
    scs = structural_clustering_score(prep, ks=ks, n_samples=n_samples, pca_dim=pca_dim, restarts=restarts,
                                      n_silhouette=n_silhouette, seed=seed, max_iter=max_iter, tol=tol,
                                      prune_after=prune_after, prune_keep=prune_keep)
    out = dict(SFC=sfc, SCS=scs, SC=(sfc * scs).clamp_min(0).sqrt())
    return zero_bad(out, prep.bad)


def structural_coherence_gt(feat: Tensor,
                            seg: Tensor,
                            *,
                            ignore_index: int = 255,
                            clip: float = 5.0,
                            n_samples: int = 4096,
                            pca_dim: int = 32,
                            n_silhouette: int = 2000,
                            seed: int = 0) -> dict[str, Tensor]:
    """Supervised Structural Coherence SC_GT = sqrt(SFC_GT * SCS_GT) (the paper's Table 7; mmfusion's definition).

    The label-free SC replaces ground truth by grid cells (SFC) and k-means clusters (SCS); SC_GT puts the ground-
    truth segments back in their place:

    - The segment map is brought to the feature grid by nearest resize. Void pixels (``ignore_index`` or negative)
      are left out everywhere.
    - SFC_GT: M is prepared as for SFC (channel-L2, z-score, clamp). With the segments s of the non-void pixels,
      between = sum_s n_s (mean_s - mean)^2 / N and within = sum_s sum_{i in s} (M_i - mean_s)^2 / N (at least
      1e-6), i.e. the pixel-weighted law of total variance; SFC_GT = between / (between + within) (the correlation
      ratio eta^2 of M on the segments).
    - SCS_GT: pixel vectors z-scored per channel as for SCS, non-void pixels only, at most ``n_samples`` drawn
      (seeded), PCA to min(pca_dim, C, n - 1) dimensions; silhouette of these points labelled by their GT segment
      (about ``n_silhouette`` points, stratified by segment); SCS_GT = (silhouette + 1) / 2.
    - Fewer than two segments (or fewer than two non-void pixels) give 0.

    Args:
        feat (Tensor): (B, C, H, W) features.
        seg (Tensor): (B, H', W') or (B, 1, H', W') integer segment ids (semantic or instance ids).
        ignore_index (int): void label. Defaults to 255.
        clip (float): clamp of the z-scored M. Defaults to 5.0.
        n_samples (int): pixels kept per image for SCS_GT. Defaults to 4096.
        pca_dim (int): PCA dimension. Defaults to 32.
        n_silhouette (int): silhouette sample size. Defaults to 2000.
        seed (int): seed of the draws. Defaults to 0.

    Returns:
        dict[str, Tensor]: (B,) tensors ``SFC_GT``, ``SCS_GT``, ``SC_GT``.
    """
    check_params(ignore_index=ignore_index, clip=clip, n_samples=n_samples, pca_dim=pca_dim, n_silhouette=n_silhouette,
                 seed=seed)
    prep = prepare_features(feat)
    feat, bad = prep.feat, prep.bad
    b, c, h, w = feat.shape
    if not isinstance(seg, Tensor) or seg.is_floating_point() or seg.dtype == torch.bool:
        raise ValueError('seg must be an integer tensor of segment ids (B, H, W); got '
                         f'{getattr(seg, "dtype", type(seg).__name__)}.')
    if seg.dim() == 4 and seg.shape[1] == 1:
        seg = seg[:, 0]
    if seg.dim() != 3 or seg.shape[0] != b:
        raise ValueError(f'seg must have shape (B, H, W) with B = {b}, got {tuple(seg.shape)}.')
    seg = F.interpolate(seg[:, None].to(feat.device, torch.float64), size=(h, w), mode='nearest')[:, 0].long()
    void = (seg == ignore_index) | (seg < 0)
    m = zscore(prep.norm_map(), dim=(1, 2), unbiased=True).clamp(-clip, clip)
    x_all = feat.flatten(2)  # (B, C, HW)
    ch_mean = prep.channel_stats()[0]
    ch_std = prep.channel_std(unbiased=False)
    sfc = torch.zeros(b, device=feat.device)
    scs = torch.zeros(b, device=feat.device)
    for i in range(b):
        keep = ~void[i].flatten()
        _, labels = torch.unique(seg[i].flatten()[keep], return_inverse=True)
        k = int(labels.max()) + 1 if labels.numel() else 0
        if k < 2 or labels.numel() < 2:
            continue
        vals = m[i].flatten()[keep]
        onehot = F.one_hot(labels, k).float()
        counts = onehot.sum(0)
        means = (onehot.t() @ vals) / counts
        between = (counts * (means - vals.mean()).pow(2)).sum() / vals.numel()
        within = ((vals - means[labels]).pow(2).sum() / vals.numel()).clamp_min(1e-6)
        sfc[i] = between / (between + within)
        gen = torch.Generator().manual_seed(seed)
        pts = ((x_all[i][:, keep] - ch_mean[i]) / (ch_std[i] + 1e-6)).t()
        if pts.shape[0] > n_samples:
            idx = torch.randperm(pts.shape[0], generator=gen)[:n_samples].to(feat.device)
            pts, labels = pts[idx], labels[idx]
        _, labels = torch.unique(labels, return_inverse=True)
        k = int(labels.max()) + 1
        n = pts.shape[0]
        dim = min(pca_dim, c, n - 1)
        if k < 2 or dim < 1 or float(pts.var(dim=0, unbiased=False).sum()) <= 1e-10:
            continue
        z = pca_project(pts[None], dim)
        keys = torch.rand(n, generator=gen)
        idx, mask = compact(stratified_keep(labels[None], k, n_silhouette, keys))
        s = silhouette(z.gather(1, idx.unsqueeze(-1).expand(-1, -1, dim)), labels[None].gather(1, idx), k, mask)
        scs[i] = (s[0] + 1) / 2
    out = dict(SFC_GT=sfc, SCS_GT=scs, SC_GT=(sfc * scs).clamp_min(0).sqrt())
    return zero_bad(out, bad)
