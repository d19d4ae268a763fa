"""The torch PCA / k-means++ / silhouette helpers behind SCS."""
import numpy as np
import pytest
import torch

from mmfusion.metrics.cluster import (
    _augmented,
    _distance_sums,
    _lower_gram,
    compact,
    kmeans,
    kmeans_multi,
    pca_fit,
    pca_project,
    silhouette,
    stratified_keep,
    stratified_silhouettes,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blobs(k=4, per=30, d=5, sep=20.0, seed=0):
    g = gen(seed)
    cent = torch.randn(k, d, generator=g) * sep
    labels = torch.arange(k).repeat_interleave(per)
    return cent[labels] + torch.randn(k * per, d, generator=g), labels


def same_partition(a, b):
    """Labels equal up to a renaming of the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_well_separated_blobs():
    x, truth = blobs()
    labels, inertia = kmeans(x[None], 4, generator=gen(1))
    assert same_partition(labels[0], truth)
    # inertia = sum of squared distances to the blob means
    means = torch.stack([x[truth == c].mean(0) for c in range(4)])
    assert inertia.item() == pytest.approx((x - means[truth]).pow(2).sum().item(), rel=1e-4)


def test_kmeans_multi_runs_every_k_and_pruning_does_not_change_clear_answers():
    x, truth = blobs(k=3, seed=2)
    full = kmeans_multi(x[None], (2, 3, 4), generator=gen(3))
    pruned = kmeans_multi(x[None], (2, 3, 4), generator=gen(3), prune_after=1, prune_keep=1)
    assert [int(lab.max()) + 1 for lab, _ in full] == [2, 3, 4]
    assert same_partition(full[1][0][0], truth)
    assert torch.equal(full[1][0], pruned[1][0])


def test_kmeans_is_seeded():
    x = torch.randn(1, 200, 4, generator=gen(4))
    a = kmeans(x, 5, generator=gen(7))
    b = kmeans(x, 5, generator=gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_kmeans_handles_duplicate_points():
    x = torch.tensor([[0.0, 0.0]] * 10 + [[5.0, 5.0]] * 10)[None]
    labels, inertia = kmeans(x, 2, generator=gen(0))
    assert same_partition(labels[0], torch.arange(20) // 10) and inertia.item() == 0.0


def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score
    g = gen(5)
    x = torch.randn(2, 120, 3, generator=g)
    labels = torch.randint(0, 4, (2, 120), generator=g)
    labels[1, 0] = 3  # keep all clusters present
    ours = silhouette(x, labels, 4)
    for i in range(2):
        ref = silhouette_score(x[i].numpy(), labels[i].numpy())
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize('chunk', [7, 30, 512])
def test_blockwise_distance_sums_equal_the_dense_product(chunk):
    x = torch.randn(2, 30, 3, generator=gen(12))
    onehot = torch.rand(2, 30, 4, generator=gen(13))
    dense = torch.cdist(x.double(), x.double()) @ onehot.double()
    assert torch.allclose(_distance_sums(x, onehot, chunk=chunk).double(), dense, atol=1e-4)


def test_silhouette_singletons_score_zero_and_padding_is_ignored():
    x = torch.tensor([[[0.0], [0.1], [5.0], [99.0]]])
    labels = torch.tensor([[0, 0, 1, 1]])
    mask = torch.tensor([[True, True, True, False]])
    # point 2 is alone in cluster 1 -> s = 0; points 0, 1: a = 0.1, b = 5 resp. 4.9
    expected = ((5.0 - 0.1) / 5.0 + (4.9 - 0.1) / 4.9 + 0.0) / 3
    assert silhouette(x, labels, 2, mask).item() == pytest.approx(expected, rel=1e-5)


def test_stratified_keep_quota_per_cluster():
    labels = torch.tensor([[0] * 70 + [1] * 29 + [2] * 1])
    keep = stratified_keep(labels, 3, total=20, keys=torch.rand(100, generator=gen(6)))
    counts = torch.bincount(labels[keep], minlength=3).tolist()
    # round(20 * 70 / 100) = 14, round(20 * 29 / 100) = 6, max(2, 0) capped by the cluster size 1
    assert counts == [14, 6, 1]


def test_stratified_silhouettes_share_points_but_equal_separate_computation():
    x = torch.randn(1, 300, 4, generator=gen(8))
    labelings = [torch.randint(0, k, (1, 300), generator=gen(9 + k)) for k in (3, 5)]
    keys = torch.rand(300, generator=gen(10))
    joint = stratified_silhouettes(x, labelings, (3, 5), 100, keys)
    for col, (lab, k) in enumerate(zip(labelings, (3, 5))):
        idx, mask = compact(stratified_keep(lab, k, 100, keys))
        alone = silhouette(x.gather(1, idx[..., None].expand(-1, -1, 4)), lab.gather(1, idx), k, mask)
        assert joint[0, col].item() == pytest.approx(alone.item(), abs=1e-5)


def test_compact_lists_true_positions_in_order():
    idx, valid = compact(torch.tensor([[False, True, True, False], [True, False, False, False]]))
    assert idx[0].tolist() == [1, 2] and valid.tolist() == [[True, True], [True, False]]
    assert idx[1, 0] == 0


@pytest.mark.parametrize('n, d', [(50, 6), (6, 50), (600, 300), (300, 600)])
def test_pca_matches_numpy_svd_variance(n, d):
    # low-rank + noise: the captured variance of the top axes must equal numpy's SVD (exact and randomized paths)
    g = gen(11)
    x = (torch.randn(n, 8, generator=g) * torch.linspace(10, 2, 8)) @ torch.randn(8, d, generator=g)
    x = x + 0.05 * torch.randn(n, d, generator=g)
    dim = 5
    _, axes = pca_fit(x[None], dim)
    xc = (x - x.mean(0)).numpy().astype(np.float64)
    ref = np.linalg.svd(xc, compute_uv=False)[:dim]**2
    got = (torch.from_numpy(xc).float() @ axes[0]).pow(2).sum(0).numpy()
    assert np.allclose(got, ref, rtol=1e-3)
    assert torch.allclose(axes[0].T @ axes[0], torch.eye(dim), atol=1e-4)


def test_pca_project_of_rank_one_data_keeps_one_non_zero_axis():
    x = torch.arange(10.0).view(1, 10, 1) * torch.tensor([1.0, 2.0, 0.0])
    z = pca_project(x, 2)
    assert z.shape == (1, 10, 2)
    assert z[0, :, 1].abs().max() < 1e-4
    assert z[0, :, 0].abs().max() > 1


def test_augmented_product_gives_squared_distances():
    x = torch.randn(2, 40, 5, generator=gen(20))
    rows, cols = _augmented(x)
    assert torch.allclose(rows @ cols, torch.cdist(x, x).pow(2), atol=1e-4)


@pytest.mark.parametrize('d', [7, 200, 257])
def test_lower_gram_has_the_lower_triangle_of_the_gram_matrix(d):
    x = torch.randn(1, d, 300, generator=gen(21)).transpose(1, 2)  # a transposed view, as SCS passes it
    assert torch.allclose(torch.tril(_lower_gram(x)), torch.tril(x.transpose(1, 2) @ x), rtol=1e-5, atol=1e-3)


def test_kmeans_with_coinciding_seeds_assigns_ties_to_the_first_centre():
    # All points equal: k-means++ can only pick the same point twice, every point is tied between both centres.
    labels, inertia = kmeans(torch.ones(1, 6, 3), 2, generator=gen(0))
    assert labels.tolist() == [[0] * 6] and inertia.item() == 0.0


@pytest.mark.parametrize('prune_after', [None, 0, 2, 3])
def test_kmeans_multi_of_a_batch_equals_each_set_alone(prune_after):
    # Runs stop (and are pruned) at different iterations in different sets; each set must still get its own
    # result, up to float rounding of the batched products.
    x = torch.randn(3, 150, 4, generator=gen(22))
    x[1] = blobs(k=3, per=50, d=4, seed=23)[0]
    batch = kmeans_multi(x, (2, 3, 5), generator=gen(24), prune_after=prune_after, prune_keep=2)
    for i in range(3):
        alone = kmeans_multi(x[i:i + 1], (2, 3, 5), generator=gen(24), prune_after=prune_after, prune_keep=2)
        for (lab_b, in_b), (lab_a, in_a) in zip(batch, alone):
            assert same_partition(lab_b[i], lab_a[0])
            assert in_b[i].item() == pytest.approx(in_a[0].item(), rel=1e-5)


def test_stratified_keep_takes_the_smallest_keys_of_each_cluster():
    g = gen(25)
    labels = torch.randint(0, 5, (2, 300), generator=g)
    keys = torch.rand(300, generator=g)
    keep = stratified_keep(labels, 5, 60, keys)
    for i in range(2):
        for c in range(5):
            members = (labels[i] == c).nonzero().flatten()
            quota = min(len(members), max(2, round(60 * len(members) / 300)))
            expected = members[keys[members].argsort()[:quota]]
            assert set(keep[i].nonzero().flatten().tolist()) >= set(expected.tolist())
            assert int(keep[i][members].sum()) == quota
