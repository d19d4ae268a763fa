"""scikit-learn version of SCS: the reference approach, for tests and benchmarks only (never on the hot path).

Needs scikit-learn (imported when called).
"""
import numpy as np
import torch
from torch import Tensor

from mmfusion.metrics.common import as_feature
from mmfusion.metrics.structure import sample_points


def scs_points(feat: Tensor, n_samples: int = 4096, seed: int = 0) -> Tensor:
    """The points SCS clusters: per-channel z-scored pixel vectors, at most ``n_samples`` of them, (B, n, C).

    Args:
        feat (Tensor): (B, C, H, W) features.
        n_samples (int): pixels kept. Defaults to 4096.
        seed (int): seed of the pixel draw (as in SCS). Defaults to 0.
    """
    feat, _ = as_feature(feat)
    return sample_points(feat, n_samples, torch.Generator().manual_seed(seed))


def sklearn_clustering_score(points: np.ndarray,
                             ks: tuple[int, ...] = (6, 8, 10),
                             pca_dim: int = 32,
                             n_init: int = 10,
                             n_silhouette: int = 2000,
                             seed: int = 0) -> float:
    """SCS of one point set with PCA + KMeans(n_init) + silhouette_score from scikit-learn.

    Args:
        points (np.ndarray): (n, C) prepared points (see :func:`scs_points`).
        ks (tuple[int]): numbers of clusters. Defaults to (6, 8, 10).
        pca_dim (int): PCA dimension, clipped to min(pca_dim, C, n - 1). Defaults to 32.
        n_init (int): k-means restarts. Defaults to 10.
        n_silhouette (int): silhouette sample size, stratified by cluster. Defaults to 2000.
        seed (int): random state. Defaults to 0.

    Returns:
        float: (median silhouette + 1) / 2, or 0 when no k survives.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    n, c = points.shape
    dim = min(pca_dim, c, n - 1)
    if dim < 1 or float(points.var(0).sum()) <= 1e-10:
        return 0.0
    z = PCA(n_components=dim, random_state=seed).fit_transform(points)
    rng = np.random.default_rng(seed)
    scores = []
    for k in ks:
        if n < 2 * k:
            continue
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(z)
        counts = np.bincount(labels, minlength=k)
        if counts.min() < 2:
            continue
        picks = []
        for cl in range(k):
            members = np.flatnonzero(labels == cl)
            quota = min(len(members), max(2, int(round(n_silhouette * len(members) / n))))
            picks.append(rng.choice(members, quota, replace=False))
        idx = np.concatenate(picks)
        scores.append(silhouette_score(z[idx], labels[idx]))
    return float((np.median(scores) + 1) / 2) if scores else 0.0
