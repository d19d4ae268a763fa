"""Batched, seeded PCA, k-means++ and silhouette in PyTorch (the SCS hot path, SPEC §2).

All functions take a batch of point sets ``x`` of shape (N, n, d) and work on its device. Random draws come from a
CPU ``torch.Generator`` and are shared by every set of the batch, so a set's result does not depend on what else is
in the batch, and two runs give the same numbers.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def _eigh(mat: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric eigendecomposition (ascending); retries in float64 when float32 does not converge."""
    try:
        return torch.linalg.eigh(mat)
    except RuntimeError:  # pragma: no cover - ill-conditioned input only
        vals, vecs = torch.linalg.eigh(mat.double())
        return vals.to(mat.dtype), vecs.to(mat.dtype)


def pca_fit(x: Tensor, dim: int, exact_max: int = 256, oversample: int = 10, power_iters: int = 2,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    """Principal axes of each point set.

    Small problems (min(n, d) <= ``exact_max``) are solved exactly through the eigendecomposition of the smaller of
    the covariance (d x d) and the Gram matrix (n x n). Larger ones use a seeded randomized range finder
    (``dim + oversample`` Gaussian probes, ``power_iters`` QR-normalised power iterations, then an exact SVD in that
    subspace), as scikit-learn's PCA does at these sizes; on VFM-like spectra the subspace keeps > 99.99 % of the
    variance of the exact one, at half the cost of an exact solve at 448-1024 dimensions. The sign of each axis is
    arbitrary (distances and gradient magnitudes do not see it).

    Args:
        x (Tensor): (N, n, d) points.
        dim (int): number of axes, at most min(n, d).
        exact_max (int): largest min(n, d) solved exactly. Defaults to 256.
        oversample (int): extra probes of the randomized solver. Defaults to 10.
        power_iters (int): power iterations of the randomized solver. Defaults to 2.
        seed (int): seed of the probes. Defaults to 0.

    Returns:
        tuple[Tensor, Tensor]: the means (N, 1, d) and the axes (N, d, dim), by decreasing variance; axes without
        variance are zero vectors.
    """
    _, n, d = x.shape
    dim = max(1, min(dim, n, d))
    mean = x.mean(dim=1, keepdim=True)
    xc = x - mean
    width = dim + oversample
    if min(n, d) > exact_max and width < min(n, d):
        probes = torch.randn(d, width, generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
        q = torch.linalg.qr(xc @ probes).Q  # (N, n, l)
        for _ in range(power_iters):
            q = torch.linalg.qr(xc @ torch.linalg.qr(xc.transpose(1, 2) @ q).Q).Q
        _, sv, vh = torch.linalg.svd(q.transpose(1, 2) @ xc, full_matrices=False)  # (N, l, d)
        axes = vh[:, :dim].transpose(1, 2)
        ok = sv[:, :dim] > sv[:, :1].clamp_min(1e-30) * 1e-6
        return mean, axes * ok.unsqueeze(1)
    if n >= d:
        _, vecs = _eigh(xc.transpose(1, 2) @ xc)
        axes = vecs[..., -dim:].flip(-1)
    else:
        vals, vecs = _eigh(xc @ xc.transpose(1, 2))
        vals = vals[..., -dim:].flip(-1)
        u = vecs[..., -dim:].flip(-1)
        scale = vals.clamp_min(0).sqrt()
        # Right singular vectors V = Xc^T U / sigma; directions with sigma ~ 0 carry no variance: zero them.
        ok = scale > scale[..., :1].clamp_min(1e-30) * 1e-6
        axes = (xc.transpose(1, 2) @ u) / scale.clamp_min(1e-30).unsqueeze(1)
        axes = axes * ok.unsqueeze(1)
    return mean, axes


def pca_project(x: Tensor, dim: int) -> Tensor:
    """Project each point set onto its first ``dim`` principal axes.

    Args:
        x (Tensor): (N, n, d) points.
        dim (int): output dimension (clipped to min(n, d)).

    Returns:
        Tensor: (N, n, dim) centred scores.
    """
    mean, axes = pca_fit(x, dim)
    return (x - mean) @ axes


def kmeans_plus_plus(x: Tensor, ks: Tensor, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding of several runs per point set, each run with its own number of clusters.

    Each new centre is the best of ``2 + floor(ln k)`` candidates drawn with probability proportional to the squared
    distance to the nearest centre chosen so far (the greedy variant scikit-learn uses). All runs are seeded up to
    max(ks) centres at once; a run with k clusters uses its first k (which is exactly a k-centre seeding).

    Args:
        x (Tensor): (N, n, d) points.
        ks (Tensor): (R,) number of clusters of each run, each at most n.
        generator (torch.Generator): CPU generator for the draws (shared by the N sets).

    Returns:
        Tensor: (N, R, max(ks), d) centres; those beyond a run's k are meaningless.
    """
    num, n, d = x.shape
    runs, kmax = ks.numel(), int(ks.max())
    trials = 2 + torch.log(ks.double()).long()  # (R,)
    u = torch.rand(runs, kmax, int(trials.max()), generator=generator).to(x.device)
    trial_ok = (torch.arange(u.shape[-1]).unsqueeze(0) < trials.unsqueeze(1)).to(x.device)  # (R, L)
    x_sq = x.pow(2).sum(-1)  # (N, n)
    x_t = x.transpose(1, 2).contiguous()

    def sq_dists(pts: Tensor) -> Tensor:  # (N, R, L, d) -> (N, R, L, n)
        m = pts.shape[1] * pts.shape[2]
        out = torch.baddbmm(x_sq.unsqueeze(1).expand(num, m, n), pts.reshape(num, m, d), x_t, alpha=-2)
        out += pts.pow(2).sum(-1).view(num, m, 1)
        return out.clamp_min_(0).view(*pts.shape[:3], n)

    first = (u[:, 0, 0] * n).long().clamp_max(n - 1)  # (R,)
    centres = [x[:, first]]  # (N, R, d)
    closest = sq_dists(centres[0].unsqueeze(2)).squeeze(2)  # (N, R, n)
    x_rows = x.unsqueeze(1)
    for j in range(1, kmax):
        cum = closest.cumsum(-1)
        target = u[:, j].unsqueeze(0) * cum[..., -1:]  # (N, R, L)
        cand = torch.searchsorted(cum, target.contiguous(), right=True).clamp_max(n - 1)
        cand_pts = x_rows.expand(num, runs, n, d).gather(2, cand.unsqueeze(-1).expand(-1, -1, -1, d))
        new_closest = sq_dists(cand_pts)  # (N, R, L, n)
        torch.minimum(new_closest, closest.unsqueeze(2), out=new_closest)
        potential = new_closest.sum(-1).masked_fill(~trial_ok, float('inf'))
        best = potential.argmin(-1)  # (N, R)
        closest = new_closest.gather(2, best[..., None, None].expand(-1, -1, 1, n)).squeeze(2)
        centres.append(cand_pts.gather(2, best[..., None, None].expand(-1, -1, 1, d)).squeeze(2))
    return torch.stack(centres, dim=2)


def kmeans_multi(x: Tensor,
                 ks: tuple[int, ...],
                 restarts: int = 10,
                 max_iter: int = 100,
                 tol: float = 1e-4,
                 generator: torch.Generator | None = None,
                 prune_after: int | None = None,
                 prune_keep: int = 2) -> list[tuple[Tensor, Tensor]]:
    """Lloyd's k-means for several k at once, with k-means++ seeding and restarts.

    Every run has its own k-means++ seeding (independent draws; sharing chains across k was tried and cost
    accuracy against scikit-learn). The ``len(ks) * restarts`` runs of each point set share one
    (runs * max(ks), n) distance product per iteration.
    A run stops when its total squared centre shift is at most ``tol`` times the mean per-dimension variance of the
    points (scikit-learn's rule; a shift of exactly 0 is scikit-learn's "labels unchanged"). Stopped runs are frozen
    and dropped from the product. A cluster that loses all its points keeps its previous centre. Per k, the run
    with the lowest inertia wins (the first one on ties). A point equally close to two centres goes to the first.

    With ``prune_after = t``, all restarts run t iterations, then only the ``prune_keep`` lowest-inertia runs of each
    k go on to convergence (the others are dropped). Late iterations rarely change which restart wins, so this gives
    the same clustering as full restarts in nearly every case for a fraction of the work.

    Args:
        x (Tensor): (N, n, d) points, n >= max(ks).
        ks (tuple[int]): numbers of clusters.
        restarts (int): runs per k. Defaults to 10.
        max_iter (int): Lloyd iterations at most. Defaults to 100.
        tol (float): relative centre-shift tolerance. Defaults to 1e-4.
        generator (torch.Generator, optional): CPU generator; a fresh one seeded with 0 if None.
        prune_after (int, optional): iterations before restarts are pruned; None runs every restart to the end.
            Defaults to None.
        prune_keep (int): restarts kept per k when pruning. Defaults to 2.

    Returns:
        list[tuple[Tensor, Tensor]]: per k, labels (N, n) long and inertia (N,) of the best run.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    num, n, d = x.shape
    groups = len(ks)
    k_of_run = torch.tensor([k for k in ks for _ in range(restarts)])
    runs, kmax = k_of_run.numel(), max(ks)
    centres = kmeans_plus_plus(x, k_of_run, generator)  # (N, R, kmax, d)
    # Padding centres (beyond a run's k) never win: +inf is added to their score.
    pad = torch.zeros(runs, kmax, dtype=x.dtype, device=x.device)
    pad.masked_fill_((torch.arange(kmax).unsqueeze(0) >= k_of_run.unsqueeze(1)).to(x.device), float('inf'))
    x_t = x.transpose(1, 2).contiguous()  # (N, d, n)
    tol_abs = tol * x_t.var(dim=-1, unbiased=False).mean(-1, keepdim=True)  # (N, 1)
    done = torch.zeros(num, runs, dtype=torch.bool, device=x.device)
    # Layout (N, A, kmax, n): the min over centres then runs along a non-innermost axis, which PyTorch vectorises
    # over the points (argmin over a short innermost axis is several times slower on CPU). The big arrays live in
    # buffers allocated once: fresh multi-MB allocations every iteration cost more than the arithmetic on CPU.
    score_buf = torch.empty(num * runs * kmax * n, dtype=x.dtype, device=x.device)
    member_buf = torch.empty(num * runs * kmax * n, dtype=torch.bool, device=x.device)
    onehot_buf = torch.empty_like(score_buf)

    def scores(c: Tensor, p: Tensor) -> Tensor:  # (N, A, kmax, d), (A, kmax) -> (N, A, kmax, n)
        a = c.shape[1]
        bias = (c.pow(2).sum(-1) + p).view(num, a * kmax, 1)
        out = score_buf[:num * a * kmax * n].view(num, a * kmax, n)
        # |x - c|^2 - |x|^2 = |c|^2 - 2 x.c: enough to compare centres.
        torch.baddbmm(bias, c.view(num, a * kmax, d), x_t, alpha=-2, out=out)
        return out.view(num, a, kmax, n)

    def nearest(score: Tensor) -> Tensor:  # -> (N, A, kmax, n) float one-hot of the nearest centre
        a = score.shape[1]
        best = score.amin(dim=2, keepdim=True)
        member = torch.eq(score, best, out=member_buf[:score.numel()].view(score.shape))
        onehot = onehot_buf[:score.numel()].view(score.shape).copy_(member)
        if bool(onehot.sum(2).amax() > 1):  # exact ties (rare): keep the first centre only
            onehot.zero_().scatter_(2, score.argmin(dim=2, keepdim=True), 1.0)
        return onehot.view(num, a, kmax, n)

    dropped = torch.zeros(num, runs, dtype=torch.bool, device=x.device)
    for it in range(max_iter):
        if prune_after is not None and it == prune_after and prune_keep < restarts:
            inertia = scores(centres, pad).amin(dim=2).sum(-1).view(num, groups, restarts)
            rank = inertia.argsort(-1).argsort(-1)  # 0 = best run of its k
            dropped = (rank >= prune_keep).view(num, runs)
            done |= dropped
        active = (~done).any(0).nonzero().flatten()  # runs still moving in some set
        a = active.numel()
        if a == 0:
            break
        c = centres[:, active]
        onehot = nearest(scores(c, pad[active]))
        counts = onehot.sum(-1, keepdim=True)  # (N, A, kmax, 1)
        sums = torch.bmm(onehot.view(num, a * kmax, n), x).view_as(c)
        new_c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
        shift = (new_c - c).pow(2).sum((-1, -2))  # (N, A)
        was_done = done[:, active]
        centres[:, active] = torch.where(was_done[..., None, None], c, new_c)
        done[:, active] = was_done | (shift <= tol_abs)
    score = scores(centres, pad)
    inertia = (score.amin(dim=2).sum(-1) + x.pow(2).sum((1, 2)).unsqueeze(1)).clamp_min(0)  # (N, R)
    inertia = inertia.masked_fill(dropped, float('inf')).view(num, groups, restarts)
    best = inertia.argmin(-1)  # (N, G); ties -> first run
    sel = (torch.arange(groups, device=x.device) * restarts).unsqueeze(0) + best  # (N, G)
    labels = score.gather(1, sel[..., None, None].expand(-1, -1, kmax, n)).argmin(dim=2)  # (N, G, n)
    return [(labels[:, g], inertia[:, g].gather(1, best[:, g:g + 1]).squeeze(1)) for g in range(groups)]


def kmeans(x: Tensor,
           k: int,
           restarts: int = 10,
           max_iter: int = 100,
           tol: float = 1e-4,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """k-means with a single k; see :func:`kmeans_multi`.

    Args:
        x (Tensor): (N, n, d) points, n >= k.
        k (int): number of clusters.
        restarts (int): seeded runs. Defaults to 10.
        max_iter (int): Lloyd iterations at most. Defaults to 100.
        tol (float): relative centre-shift tolerance. Defaults to 1e-4.
        generator (torch.Generator, optional): CPU generator; seeded with 0 if None.

    Returns:
        tuple[Tensor, Tensor]: labels (N, n) and inertia (N,) of the best of ``restarts`` runs.
    """
    return kmeans_multi(x, (k, ), restarts=restarts, max_iter=max_iter, tol=tol, generator=generator)[0]


def stratified_keep(labels: Tensor, k: int, total: int, keys: Tensor) -> Tensor:
    """Choose about ``total`` points per set, stratified by cluster.

    Cluster c of size |c| contributes min(|c|, max(2, round(total * |c| / n))) points: those with the smallest
    ``keys`` (uniform random numbers shared by the batch), so the choice is seeded, and clusterings of the same
    points made with different k mostly pick the same points.

    Args:
        labels (Tensor): (N, n) cluster labels in [0, k).
        k (int): number of clusters.
        total (int): target sample size.
        keys (Tensor): (n,) random keys in [0, 1).

    Returns:
        Tensor: (N, n) bool, the chosen points.
    """
    num, n = labels.shape
    counts = F.one_hot(labels, k).sum(1)  # (N, k)
    quota = torch.minimum(torch.round(total * counts.double() / n).long().clamp_min(2), counts)
    order = torch.argsort(labels.double() + keys.to(labels.device, torch.float64).unsqueeze(0), dim=1)
    sorted_labels = labels.gather(1, order)
    start = counts.cumsum(1) - counts
    rank = torch.arange(n, device=labels.device).unsqueeze(0) - start.gather(1, sorted_labels)
    keep_sorted = rank < quota.gather(1, sorted_labels)
    return torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)


def compact(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the True entries of each row of a mask, in order, padded with 0 to the longest row.

    Args:
        mask (Tensor): (N, n) bool.

    Returns:
        tuple[Tensor, Tensor]: (N, m) indices and (N, m) bool validity of each entry.
    """
    counts = mask.sum(1, keepdim=True)
    m = int(counts.max()) if mask.numel() else 0
    idx = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :m]
    valid = torch.arange(m, device=mask.device).unsqueeze(0) < counts
    return torch.where(valid, idx, torch.zeros_like(idx)), valid


def _silhouette_from_sums(sums: Tensor, labels: Tensor, onehot: Tensor, anchors: Tensor) -> Tensor:
    """Mean silhouette from per-cluster distance sums (N, m, k), labels (N, m), member one-hot (N, m, k)."""
    counts = onehot.sum(1)  # (N, k)
    own_count = counts.gather(1, labels)
    a = sums.gather(2, labels.unsqueeze(-1)).squeeze(-1) / (own_count - 1).clamp_min(1)
    own = F.one_hot(labels, counts.shape[1]).bool()
    b = (sums / counts.clamp_min(1).unsqueeze(1)).masked_fill(own | (counts == 0).unsqueeze(1), float('inf')).amin(-1)
    denom = torch.maximum(a, b)
    s = torch.where((own_count > 1) & torch.isfinite(b) & (denom > 0), (b - a) / denom.clamp_min(1e-30),
                    torch.zeros_like(a))
    return (s * anchors).sum(1) / anchors.sum(1).clamp_min(1)


def _distance_sums(x: Tensor, onehot: Tensor, chunk: int = 512) -> Tensor:
    """sum_j |x_i - x_j| * onehot[j, c] for every point i and column c: (N, m, d), (N, m, K) -> (N, m, K).

    Works on row blocks against the columns from the block on (the upper triangle), using each block of distances
    for both of its row and column points, so the (m, m) matrix is neither stored nor computed twice. The
    self-distance is exactly 0.
    """
    num, m, _ = x.shape
    out = torch.zeros(num, m, onehot.shape[-1], dtype=x.dtype, device=x.device)
    for i in range(0, m, chunk):
        r = min(chunk, m - i)
        dist = torch.cdist(x[:, i:i + r], x[:, i:])  # (N, r, m - i)
        dist.view(num, -1)[:, torch.arange(r, device=x.device) * (m - i + 1)] = 0
        out[:, i:i + r] += dist @ onehot[:, i:]
        if m - i > r:
            out[:, i + r:] += dist[:, :, r:].transpose(1, 2) @ onehot[:, i:i + r]
    return out


def silhouette(x: Tensor, labels: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Mean silhouette coefficient (Euclidean) of each labelled point set.

    The usual definition: s = (b - a) / max(a, b), a = mean distance to the other members of the point's cluster,
    b = smallest mean distance to another non-empty cluster; s = 0 for a point alone in its cluster, and for every
    point when the set has a single cluster.

    Args:
        x (Tensor): (N, m, d) points.
        labels (Tensor): (N, m) labels in [0, k).
        k (int): number of labels.
        mask (Tensor, optional): (N, m) bool, real points (padding is ignored). Defaults to all.

    Returns:
        Tensor: (N,) mean silhouette over the real points.
    """
    if mask is None:
        mask = torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
    onehot = F.one_hot(labels, k).to(x.dtype) * mask.unsqueeze(-1)
    return _silhouette_from_sums(_distance_sums(x, onehot), labels, onehot, mask)


def stratified_silhouettes(x: Tensor, labelings: list[Tensor], ks: tuple[int, ...], total: int,
                           keys: Tensor) -> Tensor:
    """Silhouette of several clusterings of the same points, each on a sample stratified by its own clusters.

    The samples share their random keys, so they overlap almost entirely; one distance matrix over their union
    serves every clustering (the numbers are the same as with one matrix per sample).

    Args:
        x (Tensor): (N, n, d) points.
        labelings (list[Tensor]): per clustering, (N, n) labels.
        ks (tuple[int]): number of clusters of each labeling.
        total (int): sample size per clustering (see :func:`stratified_keep`).
        keys (Tensor): (n,) random keys in [0, 1).

    Returns:
        Tensor: (N, len(ks)) mean silhouettes.
    """
    keeps = [stratified_keep(lab, k, total, keys) for lab, k in zip(labelings, ks)]
    union = torch.stack(keeps).any(0)
    idx, valid = compact(union)
    pts = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    members, labs, onehots = [], [], []
    for keep, lab, k in zip(keeps, labelings, ks):
        member = keep.gather(1, idx) & valid
        lab = lab.gather(1, idx)
        members.append(member)
        labs.append(lab)
        onehots.append(F.one_hot(lab, k).to(x.dtype) * member.unsqueeze(-1))
    sums = _distance_sums(pts, torch.cat(onehots, dim=-1))  # one pass over the distances for all clusterings
    out, start = [], 0
    for member, lab, onehot, k in zip(members, labs, onehots, ks):
        out.append(_silhouette_from_sums(sums[..., start:start + k], lab, onehot, member))
        start += k
    return torch.stack(out, dim=1)
