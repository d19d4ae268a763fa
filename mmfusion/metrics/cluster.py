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


def _lower_gram(x: Tensor) -> Tensor:
    """X^T X (N, d, d) of (N, n, d) with only its lower triangle guaranteed (all ``torch.linalg.eigh`` reads).

    From two column blocks: the diagonal blocks and the lower off-diagonal one, 3/4 of the full product.
    """
    num, _, d = x.shape
    if d < 192:
        return x.transpose(1, 2) @ x
    h = d // 2
    left, right = x[..., :h], x[..., h:]
    out = torch.zeros(num, d, d, dtype=x.dtype, device=x.device)
    torch.bmm(left.transpose(1, 2), left, out=out[:, :h, :h])
    torch.bmm(right.transpose(1, 2), left, out=out[:, h:, :h])
    torch.bmm(right.transpose(1, 2), right, out=out[:, h:, h:])
    return out


def pca_fit(x: Tensor, dim: int, exact_max: int = 256, oversample: int = 10, power_iters: int = 2,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    """Principal axes of each point set.

    Small problems (min(n, d) <= ``exact_max``) are solved exactly through the eigendecomposition of the smaller of
    the covariance (d x d) and the Gram matrix (n x n). Larger ones use a seeded randomized range finder
    (``dim + oversample`` Gaussian probes, ``power_iters`` normalised power iterations, then an exact SVD in that
    subspace, through the float64 eigendecomposition of its small Gram matrix), as scikit-learn's PCA does at these
    sizes; on VFM-like spectra the subspace keeps > 99.5 % of the variance of the exact one (the shortfall is in the
    flat noise tail of the 32 axes), at half the cost of an exact solve at 448-1024 dimensions. The sign of each axis is
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
    mean = x.mean(dim=1, keepdim=True)
    return mean, pca_axes(x - mean, dim, exact_max, oversample, power_iters, seed)


def pca_axes(xc: Tensor, dim: int, exact_max: int = 256, oversample: int = 10, power_iters: int = 2,
              seed: int = 0) -> Tensor:
    """Principal axes (N, d, dim) of centred point sets (N, n, d); see :func:`pca_fit`."""
    _, n, d = xc.shape
    dim = max(1, min(dim, n, d))
    width = dim + oversample
    if min(n, d) > exact_max and width < min(n, d):
        probes = torch.randn(d, width, generator=torch.Generator().manual_seed(seed)).to(xc.device, xc.dtype)
        # Range of (Xc Xc^T)^p Xc P. The bases are re-orthonormalised once per power iteration, in the smaller of the
        # two spaces (a QR of a tall n x l or d x l block costs more than the products at these sizes); the
        # subspace is the same as with a QR after every product.
        y = xc @ probes  # (N, n, l)
        for _ in range(power_iters):
            if n >= d:
                y = xc @ torch.linalg.qr(xc.transpose(1, 2) @ y).Q
            else:
                y = xc @ (xc.transpose(1, 2) @ torch.linalg.qr(y).Q)
        q = torch.linalg.qr(y).Q  # (N, n, l)
        # Right singular vectors of the small B = Q^T Xc (N, l, d) from the eigendecomposition of B B^T (l x l),
        # in float64 (cheaper than an SVD of B, and as accurate): V = B^T U / sigma.
        b = (q.transpose(1, 2) @ xc).double()
        vals, u = torch.linalg.eigh(b @ b.transpose(1, 2))
        sv = vals[..., -dim:].flip(-1).clamp_min(0).sqrt()
        axes = (b.transpose(1, 2) @ u[..., -dim:].flip(-1)) / sv.clamp_min(1e-300).unsqueeze(1)
        ok = sv > sv[:, :1].clamp_min(1e-300) * 1e-6
        return (axes * ok.unsqueeze(1)).to(xc.dtype)
    if n >= d:
        _, vecs = _eigh(_lower_gram(xc))
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
    return axes


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


def _augmented(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows and columns whose product is the matrix of squared distances: rows[i] . cols[:, j] = |x_i - x_j|^2.

    rows = [-2x, 1, |x|^2], cols = [x, |x|^2, 1]^T, so one matrix product gives |x_j|^2 - 2 x_i.x_j + |x_i|^2 with no
    separate passes for the norms.

    Args:
        x (Tensor): (N, n, d) points.

    Returns:
        tuple[Tensor, Tensor]: rows (N, n, d + 2) and cols (N, d + 2, n).
    """
    sq = x.pow(2).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    rows = torch.cat([x * -2, one, sq], dim=-1)
    cols = torch.cat([x, sq, one], dim=-1).transpose(1, 2).contiguous()
    return rows, cols


def kmeans_plus_plus(x: Tensor, ks: Tensor, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding of several runs per point set, each run with its own number of clusters.

    Each new centre is the best of ``2 + floor(ln k)`` candidates drawn with probability proportional to the squared
    distance to the nearest centre chosen so far (the greedy variant scikit-learn uses). Every run draws its own
    candidates; the runs are seeded together, one centre at a time, and a run leaves once it has its k centres.

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
    lmax = int(trials.max())
    u = torch.rand(runs, kmax, lmax, generator=generator)
    # Runs ordered by decreasing k: those that still need a j-th centre are a prefix.
    order = torch.argsort(ks, descending=True, stable=True)
    need = [int((ks > j).sum()) for j in range(kmax)]
    u = u[order].to(x.device)
    trial_ok = (torch.arange(lmax).unsqueeze(0) < trials[order].unsqueeze(1)).to(x.device)  # (R, L)
    rows, cols = _augmented(x)
    idx = torch.zeros(num, runs, kmax, dtype=torch.long, device=x.device)
    idx[:, :, 0] = (u[:, 0, 0] * n).long().clamp_max(n - 1)
    closest = torch.bmm(rows[:, idx[0, :, 0]], cols).clamp_min_(0)  # (N, R, n) squared distance to the centres
    for j in range(1, kmax):
        a = need[j]
        near = closest[:, :a]
        cum = near.cumsum(-1)
        target = u[:a, j].unsqueeze(0) * cum[..., -1:]  # (N, a, L)
        cand = torch.searchsorted(cum, target.contiguous(), right=True).clamp_max(n - 1)
        cand_rows = rows.gather(1, cand.view(num, -1, 1).expand(-1, -1, d + 2))  # (N, a * L, d + 2)
        dist = torch.bmm(cand_rows, cols).view(num, a, lmax, n)
        torch.minimum(dist, near.unsqueeze(2), out=dist)
        potential = dist.sum(-1).masked_fill_(~trial_ok[:a], float('inf'))
        best = potential.argmin(-1)  # (N, a)
        pick = (torch.arange(num * a, device=x.device) * lmax + best.flatten())  # rows of dist as (N * a * L, n)
        closest[:, :a] = dist.view(-1, n).index_select(0, pick).view(num, a, n).clamp_min_(0)
        idx[:, :a, j] = cand.gather(2, best.unsqueeze(-1)).squeeze(-1)
    idx = idx[:, torch.argsort(order).to(x.device)]
    return x.gather(1, idx.view(num, -1, 1).expand(-1, -1, d)).view(num, runs, kmax, d)


def _lloyd(x: Tensor, centres: Tensor, pad: Tensor, max_iter: int, tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """Lloyd iterations of several runs per point set, each run frozen once it converges.

    Args:
        x (Tensor): (N, n, d) points.
        centres (Tensor): (N, R, kmax, d) initial centres (per set: runs may differ between the sets).
        pad (Tensor): (R, kmax) 0 for a run's real centres, +inf for its padding (a padding centre never wins).
        max_iter (int): iterations at most.
        tol (float): relative centre-shift tolerance.

    Returns:
        tuple[Tensor, Tensor, Tensor]: the final centres (N, R, kmax, d), the scores |c|^2 - 2 x.c of every point
        against them (N, R, kmax, n) and their minimum over the centres (N, R, 1, n).
    """
    num, n, d = x.shape
    runs, kmax = pad.shape
    dev = x.device
    # Scores |c|^2 - 2 x.c (= |x - c|^2 - |x|^2, enough to compare centres) come from one product of
    # [-2c, |c|^2 + pad] with [x, 1]^T; the member sums and counts of every centre from one product of the one-hot
    # assignment with [x, 1].
    x_one = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)  # (N, n, d + 1)
    x_one_t = x_one.transpose(1, 2).contiguous()  # (N, d + 1, n)
    xc = x - x.mean(dim=1, keepdim=True)
    tol_abs = (tol * xc.pow(2).sum((1, 2)) / (n * d)).unsqueeze(1)  # tol * mean per-dimension variance, (N, 1)
    # Layout (N, A, kmax, n): the min over centres then runs along a non-innermost axis, which PyTorch vectorises
    # over the points (argmin over a short innermost axis is several times slower on CPU). The score array lives in
    # one buffer allocated once: fresh multi-MB allocations every iteration cost more than the arithmetic on CPU.
    score_buf = torch.empty(num * runs * kmax * n, dtype=x.dtype, device=dev)

    def scores(c: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(N, A, kmax, d), (A, kmax) -> scores (N, A, kmax, n) and their min over the centres (N, A, 1, n)."""
        a = c.shape[1]
        c_aug = torch.cat([c * -2, (c.pow(2).sum(-1) + p).unsqueeze(-1)], dim=-1).view(num, a * kmax, d + 1)
        out = torch.bmm(c_aug, x_one_t, out=score_buf[:num * a * kmax * n].view(num, a * kmax, n))
        out = out.view(num, a, kmax, n)
        return out, out.amin(dim=2, keepdim=True)

    done = torch.zeros(num, runs, dtype=torch.bool, device=dev)
    active = torch.arange(runs, device=dev)  # runs still moving in some set; c, p: their centres and padding
    c, p = centres, pad
    centres = centres.clone()
    for _ in range(max_iter):
        score, best = scores(c, p)
        a = active.numel()
        onehot = score.sub_(best).eq_(0)  # in place: 1.0 where a centre is the nearest
        acc = torch.bmm(onehot.view(num, a * kmax, n), x_one).view(num, a, kmax, d + 1)  # member sums, counts
        if float(acc[..., d].sum()) != num * a * n:  # exact ties (rare): keep the first nearest centre only
            onehot.mul_(onehot.cumsum(2).eq_(1))
            acc = torch.bmm(onehot.view(num, a * kmax, n), x_one).view(num, a, kmax, d + 1)
        counts = acc[..., d:]
        new_c = torch.where(counts > 0, acc[..., :d] / counts.clamp_min(1), c)  # an emptied cluster stays put
        moving = (new_c - c).pow(2).sum((-1, -2)) > tol_abs  # (N, A)
        if num > 1:  # a run stopped in one set but not in another stays frozen there
            frozen = done[:, active]
            new_c = torch.where(frozen[..., None, None], c, new_c)
            moving &= ~frozen
        done[:, active] = ~moving
        c = new_c
        keep = moving.any(0)
        if not bool(keep.all()):
            centres[:, active] = c
            active, c, p = active[keep], c[:, keep], p[keep]
            if active.numel() == 0:
                break
    if active.numel():  # max_iter reached
        centres[:, active] = c
    score, best = scores(centres, pad)
    return centres, score, best


def _padding(k_of_run: Tensor, kmax: int, x: Tensor) -> Tensor:
    """(R, kmax): 0 for the first k centres of each run, +inf for the others."""
    pad = torch.zeros(k_of_run.numel(), kmax, dtype=x.dtype, device=x.device)
    return pad.masked_fill_((torch.arange(kmax).unsqueeze(0) >= k_of_run.unsqueeze(1)).to(x.device), float('inf'))


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
    k (per point set) go on to convergence. Late iterations rarely change which restart wins, so this gives the same
    clustering as full restarts in nearly every case for a fraction of the work. (Screening the restarts on a
    subsample of the points instead was tried: it moved SCS by up to 0.06 against scikit-learn.)

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
    dev = x.device
    groups = len(ks)
    kmax = max(ks)
    k_of_run = torch.tensor([k for k in ks for _ in range(restarts)])
    centres = kmeans_plus_plus(x, k_of_run, generator)  # (N, R, kmax, d)
    if prune_after is not None and prune_keep < restarts:
        pad = _padding(k_of_run, kmax, x)
        centres, _, best = _lloyd(x, centres, pad, prune_after, tol)
        inertia = best.sum((-1, -2)).view(num, groups, restarts)  # up to the constant sum |x|^2
        # The prune_keep best runs of each k, in run order (ties -> first run), per point set.
        top = inertia.argsort(dim=-1, stable=True)[..., :prune_keep].sort(dim=-1).values  # (N, G, keep)
        pick = (top + torch.arange(groups, device=dev).view(1, -1, 1) * restarts).view(num, -1)
        centres = centres.gather(1, pick[..., None, None].expand(-1, -1, kmax, d))
        restarts = prune_keep
        k_of_run = torch.tensor([k for k in ks for _ in range(restarts)])
        max_iter = max(0, max_iter - prune_after)
    pad = _padding(k_of_run, kmax, x)
    _, score, best = _lloyd(x, centres, pad, max_iter, tol)
    x_sq = x.pow(2).sum((1, 2))  # (N,)
    inertia = (best.sum((-1, -2)) + x_sq.unsqueeze(1)).clamp_min(0).view(num, groups, restarts)
    win = inertia.argmin(-1)  # (N, G); ties -> first run
    sel = torch.arange(groups, device=dev).unsqueeze(0) * restarts + win  # (N, G)
    score = score.gather(1, sel[..., None, None].expand(-1, -1, kmax, n))
    best = best.gather(1, sel[..., None, None].expand(-1, -1, 1, n))
    # First nearest centre: the smallest index whose score equals the minimum (a float min: the integer reduction
    # is not vectorised on CPU).
    arange_k = torch.arange(kmax, dtype=x.dtype, device=dev).view(1, 1, kmax, 1)
    labels = torch.where(score == best, arange_k, float(kmax)).amin(dim=2).long()  # (N, G, n)
    return [(labels[:, g], inertia[:, g].gather(1, win[:, g:g + 1]).squeeze(1)) for g in range(groups)]


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
    return _stratified_keep(labels, k, total, torch.argsort(keys.to(labels.device), stable=True))


def _stratified_keep(labels: Tensor, k: int, total: int, order: Tensor) -> Tensor:
    """:func:`stratified_keep` with the points' key order (argsort of the keys) given, for several labelings."""
    num, n = labels.shape
    onehot = F.one_hot(labels, k)  # (N, n, k)
    counts = onehot.sum(1)  # (N, k)
    quota = torch.minimum(torch.round(total * counts.double() / n).long().clamp_min(2), counts)
    # Walking the points by increasing key, a point's rank in its cluster is the running count of its label.
    sorted_labels = labels.index_select(1, order)
    rank = onehot.index_select(1, order).cumsum(1).gather(2, sorted_labels.unsqueeze(-1)).squeeze(-1) - 1
    keep_sorted = rank < quota.gather(1, sorted_labels)
    return torch.zeros_like(keep_sorted).index_copy_(1, order, keep_sorted)


def compact(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the True entries of each row of a mask, in order, padded with 0 to the longest row.

    Args:
        mask (Tensor): (N, n) bool.

    Returns:
        tuple[Tensor, Tensor]: (N, m) indices and (N, m) bool validity of each entry.
    """
    num, n = mask.shape
    counts = mask.sum(1, keepdim=True)
    m = int(counts.max()) if mask.numel() else 0
    pos = torch.where(mask, mask.cumsum(1) - 1, m)  # slot of each True entry; the others go to a spare column
    idx = torch.zeros(num, m + 1, dtype=torch.long, device=mask.device)
    idx.scatter_(1, pos, torch.arange(n, device=mask.device).expand(num, n))
    idx = idx[:, :m]
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


def _distance_sums(x: Tensor, onehot: Tensor, chunk: int = 256) -> Tensor:
    """sum_j |x_i - x_j| * onehot[j, c] for every point i and column c: (N, m, d), (N, m, K) -> (N, m, K).

    Works on row blocks against the columns from the block on (the upper triangle), using each block of distances
    for both of its row and column points, so the (m, m) matrix is neither stored nor computed twice. Each block of
    squared distances is one matrix product (see :func:`_augmented`); the self-distance is exactly 0.
    """
    num, m, _ = x.shape
    rows, cols = _augmented(x)
    onehot_t = onehot.transpose(1, 2).contiguous()  # (N, K, m)
    out = torch.zeros(num, m, onehot.shape[-1], dtype=x.dtype, device=x.device)
    out_t = torch.zeros(num, onehot.shape[-1], m, dtype=x.dtype, device=x.device)  # the lower-triangle part
    for i in range(0, m, chunk):
        r = min(chunk, m - i)
        dist = torch.bmm(rows[:, i:i + r], cols[:, :, i:]).clamp_min_(0).sqrt_()  # (N, r, m - i)
        torch.diagonal(dist, dim1=1, dim2=2).zero_()
        out[:, i:i + r] += torch.bmm(dist, onehot[:, i:])
        if m - i > r:
            out_t[:, :, i + r:] += torch.bmm(onehot_t[:, :, i:i + r], dist[:, :, r:])
    return out + out_t.transpose(1, 2)


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
    order = torch.argsort(keys.to(x.device), stable=True)
    keeps = [_stratified_keep(lab, k, total, order) for lab, k in zip(labelings, ks)]
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
