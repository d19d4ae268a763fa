"""SFC, SCS, SC and SC_GT (SPEC §2) on maps whose answer is known by construction."""
import math
import warnings

import numpy as np
import pytest
import torch

from mmfusion.metrics import (
    structural_clustering_score,
    structural_coherence,
    structural_coherence_gt,
    structured_feature_contrast,
)
from tests._sklearn_ref import scs_points, sklearn_clustering_score


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def block_map(c=4, h=32, w=32, block=8, seed=0):
    """Features constant on aligned block x block squares, a random vector per block."""
    vals = torch.rand(1, c, h // block, w // block, generator=gen(seed)) * 3
    return vals.repeat_interleave(block, 2).repeat_interleave(block, 3)


def blob_map(centres=8, c=16, h=32, w=32, spread=6.0, noise=0.3, seed=0):
    """Each pixel belongs to one of ``centres`` far-apart cluster centres, plus small noise (well separated)."""
    g = gen(seed)
    cent = torch.randn(centres, c, generator=g) * spread
    labels = torch.randint(0, centres, (1, h, w), generator=g)
    return cent[labels].permute(0, 3, 1, 2) + noise * torch.randn(1, c, h, w, generator=g)


def sklearn_scs(feat):
    """The reference approach on the points our SCS clusters (one thread: quicker on a busy machine)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        return sklearn_clustering_score(scs_points(feat)[0].numpy())


# --- SFC -------------------------------------------------------------------------------------------------------


def test_sfc_of_cell_aligned_block_constant_map_is_one():
    sfc = structured_feature_contrast(block_map())
    assert sfc.shape == (1, ) and sfc.item() == pytest.approx(1.0, abs=1e-4)


def test_sfc_of_white_noise_is_near_zero():
    # Cell means of 64 iid pixels vary 64x less than pixels: SFC ~ 1/64.
    sfc = structured_feature_contrast(torch.randn(1, 8, 64, 64, generator=gen(1))).item()
    assert 0.0 < sfc < 0.05


def test_sfc_of_constant_map_is_zero():
    assert structured_feature_contrast(torch.full((2, 3, 16, 16), 4.2)).tolist() == [0.0, 0.0]


def test_sfc_of_map_smaller_than_a_cell_is_zero():
    # One cell of min(8, H) x min(8, W) pixels: no variance between cells.
    assert structured_feature_contrast(torch.rand(1, 5, 5, 6)).item() == 0.0


def test_sfc_grid_variant_tends_to_one_on_small_maps():
    # 16x16 grid on a 16x16 map: 1-pixel cells, no within-cell variance.
    x = torch.rand(1, 3, 16, 16, generator=gen(2))
    assert structured_feature_contrast(x, grid=16).item() == pytest.approx(1.0, abs=1e-4)
    assert structured_feature_contrast(x).item() < 0.2


def test_sfc_is_invariant_to_cell_aligned_circular_shift_scale_and_channel_order():
    x = blob_map(seed=3).abs()
    ref = structured_feature_contrast(x)
    assert torch.allclose(structured_feature_contrast(torch.roll(x, shifts=(8, 16), dims=(2, 3))), ref, atol=1e-5)
    assert torch.allclose(structured_feature_contrast(7.5 * x), ref, atol=1e-5)
    assert torch.allclose(structured_feature_contrast(x[:, torch.randperm(16, generator=gen(0))]), ref, atol=1e-5)


# --- SCS -------------------------------------------------------------------------------------------------------


def test_scs_of_well_separated_clusters_is_high():
    assert structural_clustering_score(blob_map()).item() > 0.8


def test_scs_of_white_noise_is_near_one_half():
    # k-means on isotropic noise finds no structure: silhouettes ~0.05-0.15.
    scs = structural_clustering_score(torch.randn(1, 16, 24, 24, generator=gen(4))).item()
    assert 0.5 < scs < 0.6


@pytest.mark.parametrize('name', ['blobs', 'noise', 'smooth'])
def test_scs_agrees_with_sklearn_on_the_same_points(name):
    if name == 'blobs':
        feat = blob_map(centres=7, c=24, h=24, w=24, spread=2.0, noise=1.0, seed=5)
    elif name == 'noise':
        feat = torch.randn(1, 24, 24, 24, generator=gen(6))
    else:
        low = torch.randn(1, 24, 3, 3, generator=gen(7))
        feat = torch.nn.functional.interpolate(low, size=(24, 24), mode='bilinear') + 0.2 * torch.randn(
            1, 24, 24, 24, generator=gen(8))
    ours = structural_clustering_score(feat).item()
    assert abs(ours - sklearn_scs(feat)) <= 0.02


def test_scs_full_restarts_agree_with_sklearn_too():
    feat = blob_map(centres=9, c=16, spread=1.5, noise=1.0, seed=9)
    ours = structural_clustering_score(feat, prune_after=None).item()
    assert abs(ours - sklearn_scs(feat)) <= 0.02


def test_scs_is_deterministic():
    feat = blob_map(spread=1.0, noise=1.0, seed=10)
    a = structural_coherence(feat)
    b = structural_coherence(feat)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_scs_of_a_batch_equals_scs_of_each_image():
    feats = torch.cat([blob_map(seed=11), torch.randn(1, 16, 32, 32, generator=gen(12)), blob_map(centres=3, seed=13)])
    batch = structural_coherence(feats)
    for i in range(3):
        single = structural_coherence(feats[i:i + 1])
        for key in ('SFC', 'SCS', 'SC'):
            assert batch[key][i].item() == pytest.approx(single[key].item(), abs=1e-5)
    assert batch['SCS'][0] > batch['SCS'][1]  # different content, different numbers


def test_scs_samples_pixels_when_there_are_more_than_n_samples():
    feat = blob_map(h=48, w=48, seed=14)
    assert scs_points(feat, n_samples=500).shape == (1, 500, 16)
    scs = structural_clustering_score(feat, n_samples=500).item()
    assert scs > 0.8


def test_scs_is_zero_when_no_k_can_be_scored():
    # 2x3 = 6 pixels: every k in (6, 8, 10) leaves a cluster with fewer than 2 members.
    assert structural_clustering_score(torch.rand(1, 4, 2, 3)).item() == 0.0


@pytest.mark.parametrize('hw', [(1, 1), (1, 7), (2, 2), (3, 40)])
def test_tiny_maps_give_finite_results(hw):
    out = structural_coherence(torch.rand(2, 3, *hw, generator=gen(25)))
    assert all(torch.isfinite(v).all() and v.shape == (2, ) and (v >= 0).all() and (v <= 1).all()
               for v in out.values())


def test_sc_is_the_geometric_mean_of_sfc_and_scs():
    out = structural_coherence(blob_map(seed=15))
    assert out['SC'].item() == pytest.approx(math.sqrt(out['SFC'].item() * out['SCS'].item()), rel=1e-6)
    assert set(out) == {'SFC', 'SCS', 'SC'}
    assert all(v.dtype == torch.float32 and v.shape == (1, ) for v in out.values())


def test_constant_features_give_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = structural_coherence(torch.ones(2, 5, 16, 16))
    assert all(v.tolist() == [0.0, 0.0] for v in out.values())


def test_single_channel_features_are_scored():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 16:] = 1.0
    x += 0.01 * torch.randn(1, 1, 32, 32, generator=gen(16))
    out = structural_coherence(x)
    assert out['SFC'].item() > 0.9 and out['SCS'].item() > 0.5
    assert all(torch.isfinite(v).all() for v in out.values())


def test_nan_and_inf_images_warn_and_score_zero_without_touching_the_others():
    feats = torch.cat([blob_map(seed=17)] * 3)
    feats[1, 0, 3, 3] = float('nan')
    feats[2, 2, 0, 0] = float('inf')
    with pytest.warns(RuntimeWarning, match=r'NaN/inf.*\[1, 2\]'):
        out = structural_coherence(feats)
    ref = structural_coherence(feats[:1])
    assert out['SC'][1:].tolist() == [0.0, 0.0]
    assert out['SC'][0].item() == pytest.approx(ref['SC'].item(), abs=1e-6)


def test_huge_finite_values_are_not_treated_as_nan():
    x = blob_map(seed=18)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        big = structural_coherence(x * 1e36)
    ref = structural_coherence(x)
    assert big['SFC'].item() == pytest.approx(ref['SFC'].item(), abs=1e-4)
    assert big['SCS'].item() > 0.8


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_high_precision_inputs_are_computed_in_float32(dtype):
    x = blob_map(seed=19).to(dtype)
    out = structural_coherence(x)
    ref = structural_coherence(x.float())
    assert all(out[k].dtype == torch.float32 and torch.equal(out[k], ref[k]) for k in out)


def test_non_contiguous_input_gives_the_same_numbers():
    x = blob_map(seed=20)
    ref = structural_coherence(x)
    channels_last = structural_coherence(x.contiguous(memory_format=torch.channels_last))
    strided = structural_coherence(torch.stack([x, -x], dim=-1)[..., 0])  # every other float in memory
    sliced = structural_coherence(torch.cat([x, torch.zeros_like(x)], dim=1)[:, :16])
    for out in (channels_last, strided, sliced):
        assert all(torch.allclose(out[k], ref[k], atol=1e-6) for k in ref)


@pytest.mark.parametrize('bad, match', [
    (torch.rand(3, 8, 8), r'\(B, C, H, W\)'),
    (torch.randint(0, 5, (1, 3, 8, 8)), 'floating'),
    ([[1.0]], 'torch.Tensor'),
])
def test_bad_feature_inputs_raise_value_errors_naming_the_fix(bad, match):
    with pytest.raises(ValueError, match=match):
        structural_coherence(bad)


# --- SC_GT -----------------------------------------------------------------------------------------------------


def test_sc_gt_is_high_when_segments_match_the_feature_structure():
    g = gen(21)
    seg = torch.zeros(1, 32, 32, dtype=torch.long)
    seg[:, :, 16:] = 1
    seg[:, 16:, :] += 2  # four quadrants
    cent = torch.randn(4, 8, generator=g) * 4
    feat = cent[seg].permute(0, 3, 1, 2) + 0.1 * torch.randn(1, 8, 32, 32, generator=g)
    out = structural_coherence_gt(feat, seg)
    assert out['SFC_GT'].item() > 0.9 and out['SCS_GT'].item() > 0.9
    shuffled = seg.flatten()[torch.randperm(32 * 32, generator=g)].view(1, 32, 32)
    low = structural_coherence_gt(feat, shuffled)
    assert low['SC_GT'].item() < 0.6 * out['SC_GT'].item()


def test_sc_gt_ignores_void_and_needs_two_segments():
    feat = torch.rand(1, 4, 16, 16, generator=gen(22))
    seg = torch.full((1, 16, 16), 255)
    seg[:, :8] = 3
    assert structural_coherence_gt(feat, seg)['SC_GT'].item() == 0.0  # one segment left after dropping void
    seg[:, 8:12] = 5
    out = structural_coherence_gt(feat, seg)
    assert 0.0 < out['SC_GT'].item() < 1.0


def test_sc_gt_resizes_labels_to_the_feature_grid_and_checks_them():
    feat = torch.rand(2, 4, 8, 8, generator=gen(23))
    seg = torch.randint(0, 3, (2, 1, 32, 32), generator=gen(24))
    out = structural_coherence_gt(feat, seg)
    assert out['SC_GT'].shape == (2, ) and torch.isfinite(out['SC_GT']).all()
    with pytest.raises(ValueError, match='integer'):
        structural_coherence_gt(feat, seg.float())
    with pytest.raises(ValueError, match='B = 2'):
        structural_coherence_gt(feat, seg[:1])


def test_sklearn_reference_is_zero_for_constant_points():
    assert sklearn_clustering_score(np.zeros((50, 3), dtype=np.float32)) == 0.0
