"""EC, NC, FC, SP, r_tau and EF (SPEC §3) on constructions with known answers."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmfusion.metrics import (
    decorrelation_radius,
    edge_fidelity,
    frequency_content,
    shift_ncc,
    sp_radii,
    spatial_precision,
)
from mmfusion.metrics.edge_fidelity import _ncc_one_radius, multichannel_sobel
from mmfusion.metrics.edges import image_gradient

KEYS = ('EC', 'NC', 'FC', 'SP', 'r_tau', 'EF')


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def voronoi_image(h=64, w=96, regions=12, seed=0):
    g = gen(seed)
    seeds = torch.rand(regions, 2, generator=g) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    labels = torch.cdist(torch.stack([yy, xx], -1).view(-1, 2).float(), seeds).argmin(1).view(h, w)
    colours = torch.rand(regions, 3, generator=g)
    return (colours[labels].permute(2, 0, 1) * 255).round().to(torch.uint8)[None]


def gaussian_blur(x, sigma):
    k = int(3 * sigma) * 2 + 1
    ax = torch.arange(k) - k // 2
    ker = torch.exp(-ax.float()**2 / (2 * sigma**2))
    ker = ker / ker.sum()
    c = x.shape[1]
    return F.conv2d(F.pad(x, (k // 2, ) * 4, mode='replicate'), (ker[:, None] * ker[None]).expand(c, 1, k, k),
                    groups=c)


def step_image(col=16, size=32):
    """Dark left, bright right; the edge lies between columns col-1 and col."""
    img = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    img[..., col:] = 255
    return img


def step_feature(cols, size=32):
    """One channel per step position (columns >= c are 1)."""
    feat = torch.zeros(1, len(cols), size, size)
    for i, c in enumerate(cols):
        feat[0, i, :, c:] = 1.0
    return feat


# q_img = 1/15 keeps exactly the 60 centreline pixels of the step (2 columns x 30 valid rows out of 900): the
# centre is columns 15-16, the inner zone 13-18, the ring 11-12 and 19-20, the far zone <= 10 and >= 21.
STEP = dict(q_img=1 / 15)


def test_sharp_copy_of_the_image_edges_beats_the_blurred_copy():
    img = voronoi_image()
    edges = image_gradient(img.float() / 255, (64, 96))[:, None]  # a feature that is the image's edge map
    sharp = edge_fidelity(edges, img)
    blurred = edge_fidelity(gaussian_blur(edges, 4.0), img)
    assert sharp['EF'].item() > 5 * blurred['EF'].item()
    assert sharp['FC'].item() > blurred['FC'].item() and sharp['EC'].item() > blurred['EC'].item()
    for out in (sharp, blurred):
        assert all(0.0 <= out[k].item() <= 1.0 for k in ('EC', 'NC', 'FC', 'SP'))
        assert 0.0 <= out['EF'].item() <= 100.0


def test_reference_quirk_a_slight_blur_raises_nc():
    # NC counts the ring only: energy exactly on the edge core raises nothing but EC, so a 2-pixel blur that
    # spills energy into the ring scores a higher NC than the sharp copy (kept for parity with the reference).
    img = voronoi_image()
    edges = image_gradient(img.float() / 255, (64, 96))[:, None]
    assert edge_fidelity(gaussian_blur(edges, 2.0), img)['NC'] > 5 * edge_fidelity(edges, img)['NC']


def test_feature_edges_in_the_ring_give_nc_one_and_ec_one():
    out = edge_fidelity(step_feature([20]), step_image(), **STEP)  # gradient on columns 19 and 20
    assert out['NC'].item() == pytest.approx(1.0) and out['EC'].item() == pytest.approx(1.0)


def test_feature_edges_far_from_image_edges_give_ec_zero():
    out = edge_fidelity(step_feature([26]), step_image(), **STEP)
    assert out['EC'].item() == pytest.approx(0.0, abs=1e-6) and out['NC'].item() == 0.0
    assert out['EF'].item() == 0.0


def test_feature_edges_on_the_core_count_only_through_ec():
    out = edge_fidelity(step_feature([16]), step_image(), **STEP)
    assert out['EC'].item() == pytest.approx(1.0) and out['NC'].item() == 0.0
    core = edge_fidelity(step_feature([16]), step_image(), ec_core=True, **STEP)
    assert core['EC'].item() == pytest.approx(1.0)
    ring = edge_fidelity(step_feature([20]), step_image(), ec_core=True, **STEP)
    assert ring['EC'].item() == pytest.approx(0.0, abs=1e-6)  # the corrected variant: ring energy is not core


def test_ec_is_the_share_of_z_scored_gradient_energy_outside_the_far_zone():
    # Channel 0 steps on the core, channel 1 far away. After the per-channel z-score each step's gradient is
    # 1 / std of its channel, so EC = (1 / s0) / (1 / s0 + 1 / s1).
    feat = step_feature([16, 26])
    s0, s1 = feat[0, 0].std().item(), feat[0, 1].std().item()
    out = edge_fidelity(feat, step_image(), **STEP)
    assert out['EC'].item() == pytest.approx((1 / s0) / (1 / s0 + 1 / s1), rel=1e-5)


def test_ec_and_nc_are_invariant_to_moving_image_and_features_together():
    # Textured patches on a flat frame, moved by 3 pixels. q and q_img stay below the share of textured pixels, so
    # the top sets hold no tied flat pixels (whose pick would depend on their index, not on the content).
    tex = torch.randint(0, 256, (3, 16, 16), generator=gen(20), dtype=torch.uint8)
    ftex = torch.rand(2, 16, 16, generator=gen(21))

    def scene(offset):
        img = torch.zeros(1, 3, 48, 48, dtype=torch.uint8)
        img[0, :, 12 + offset:28 + offset, 10 + offset:26 + offset] = tex
        feat = torch.zeros(1, 2, 48, 48)
        feat[0, :, 12 + offset:28 + offset, 10 + offset:26 + offset] = ftex
        return edge_fidelity(feat, img, q=0.1, q_img=0.1)

    a, b = scene(0), scene(3)
    assert a['EC'].item() == pytest.approx(b['EC'].item(), abs=1e-6)
    assert a['NC'].item() == pytest.approx(b['NC'].item(), abs=1e-6)
    assert 0.0 < a['NC'].item() < 1.0


def test_fc_of_constant_checkerboard_and_smooth_maps():
    assert frequency_content(torch.full((1, 16, 16), 3.0)).item() == 0.0
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 2.0 - 1
    assert frequency_content(checker[None].float()).item() > 0.99
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing='ij')
    bump = torch.exp(-((yy - 15.5)**2 + (xx - 15.5)**2) / (2 * 8.0**2))
    assert frequency_content(bump[None]).item() < 0.05


def test_fc_ignores_sign_and_scale_and_clips_outliers():
    m = torch.randn(1, 24, 24, generator=gen(1))
    ref = frequency_content(m)
    assert torch.allclose(frequency_content(-5 * m), ref, atol=1e-5)
    spike = m.clone()
    spike[0, 5, 5] = 1e4
    assert frequency_content(spike, clip=8.0).item() != pytest.approx(frequency_content(spike).item(), abs=1e-3)


def test_sp_radii_grid():
    assert sp_radii(64, 64) == [1, 2, 3, 4, 5, 7, 9, 11, 14, 18, 23, 30, 38]
    assert sp_radii(1, 50) == [1] and sp_radii(3, 3) == [1]


def test_shift_ncc_equals_the_pearson_correlation_of_cropped_overlaps():
    m = torch.randn(2, 9, 13, generator=gen(2)).cumsum(1)

    def direct(x, r):
        vals = []
        for dy, dx in ((0, r), (r, 0), (r, r), (r, -r), (0, -r), (-r, 0), (-r, -r), (-r, r)):
            h, w = x.shape
            a = x[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)].flatten()
            b = x[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)].flatten()
            vals.append(torch.corrcoef(torch.stack([a, b]))[0, 1])
        return torch.stack(vals).mean()

    got = shift_ncc(m, [1, 2, 5])
    for i in range(2):
        for j, r in enumerate([1, 2, 5]):
            assert got[i, j].item() == pytest.approx(direct(m[i].double(), r).item(), abs=1e-4)


def test_decorrelation_radius_of_a_sinusoid():
    # cos(2 pi x / 32): NCC ~ cos(2 pi r / 32) along x and the diagonals, 1 along y, so the 8-direction mean is
    # (2 + 6 cos) / 8, below 0.5 once cos < 1/3, i.e. r > 6.3; the first such radius of the grid is 7.
    m = torch.cos(2 * math.pi * torch.arange(64.0) / 32).expand(1, 64, 64)
    assert decorrelation_radius(m).item() == 7.0


def test_decorrelation_radius_is_the_largest_radius_when_the_map_never_decorrelates():
    ramp = (torch.arange(64.0)[None, :] + torch.arange(64.0)[:, None])[None]
    assert decorrelation_radius(ramp).item() == 38.0


def test_sp_of_high_passed_noise_is_64_over_65():
    m0 = torch.rand(1, 32, 32, generator=gen(3)) + 1.0
    sp, r_tau = spatial_precision(m0)
    assert r_tau.item() == 1.0 and sp.item() == pytest.approx(64 / 65)


def test_sp_without_high_pass_sees_a_smooth_map_as_imprecise():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing='ij')
    m0 = (1 + torch.sin(xx / 6) * torch.sin(yy / 6))[None]
    sp_raw, r_raw = spatial_precision(m0, highpass=False)
    assert r_raw.item() > 3 and sp_raw.item() < 64 / 67


def test_ef_is_alpha_times_the_clamped_product():
    img = voronoi_image(seed=4)
    feat = gaussian_blur(img.float() / 255, 1.0)
    out = edge_fidelity(feat, img)
    prod = out['EC'] * out['NC'] * out['FC'] * out['SP']
    assert out['EF'].item() == pytest.approx(100 * prod.item(), rel=1e-5)
    assert edge_fidelity(feat, img, alpha=1.0)['EF'].item() == pytest.approx(prod.item(), rel=1e-5)
    assert set(out) == set(KEYS)


def test_selection_preset_scores_and_differs_from_profiling():
    img = voronoi_image(seed=5)
    feat = torch.cat([img.float() / 255, torch.rand(1, 5, 64, 96, generator=gen(6))], 1)
    sel = edge_fidelity(feat, img, preset='selection')
    prof = edge_fidelity(feat, img)
    assert all(0.0 <= sel[k].item() <= 1.0 for k in ('EC', 'NC', 'FC', 'SP'))
    assert sel['EF'].item() != pytest.approx(prof['EF'].item())
    with pytest.raises(ValueError, match='preset'):
        edge_fidelity(feat, img, preset='fast')


def test_batch_of_different_images_equals_each_image_alone():
    imgs = torch.cat([voronoi_image(seed=7), voronoi_image(seed=8)])
    feats = gaussian_blur(imgs.float() / 255, 1.0)[:, :, ::2, ::2]
    batch = edge_fidelity(feats, imgs)
    for i in range(2):
        single = edge_fidelity(feats[i:i + 1], imgs[i])
        assert all(batch[k][i].item() == pytest.approx(single[k].item(), abs=1e-5) for k in KEYS)
    assert batch['EF'][0].item() != pytest.approx(batch['EF'][1].item())


def test_a_single_image_is_shared_by_the_batch():
    img = voronoi_image(seed=9)
    feats = torch.rand(3, 4, 16, 24, generator=gen(10))
    a = edge_fidelity(feats, img[0])
    b = edge_fidelity(feats, img.expand(3, -1, -1, -1))
    assert all(torch.equal(a[k], b[k]) for k in KEYS)


def test_image_size_need_not_be_a_multiple_of_the_stride():
    out = edge_fidelity(torch.rand(1, 8, 9, 13, generator=gen(11)), voronoi_image(h=37, w=50))
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize('hw', [(1, 1), (2, 2), (3, 3), (1, 9), (5, 2)])
def test_tiny_maps_give_finite_results(hw):
    out = edge_fidelity(torch.rand(2, 3, *hw, generator=gen(12)), voronoi_image(h=20, w=20).expand(2, -1, -1, -1))
    assert all(torch.isfinite(v).all() and v.shape == (2, ) for v in out.values())


def test_constant_features_and_flat_images_give_zero_ef():
    img = voronoi_image(seed=13)
    assert edge_fidelity(torch.ones(1, 4, 16, 16), img)['EF'].item() == 0.0
    flat = torch.full((1, 3, 32, 32), 90, dtype=torch.uint8)
    assert edge_fidelity(torch.rand(1, 4, 16, 16, generator=gen(14)), flat)['EF'].item() == 0.0


def test_single_channel_and_low_precision_features():
    img = voronoi_image(seed=15)
    feat = gaussian_blur(img.float().mean(1, keepdim=True) / 255, 1.0)
    ref = edge_fidelity(feat, img)
    assert ref['EF'].item() > 0
    for dtype in (torch.float16, torch.bfloat16):
        low = edge_fidelity(feat.to(dtype), img)
        exact = edge_fidelity(feat.to(dtype).float(), img)
        assert all(low[k].dtype == torch.float32 and torch.equal(low[k], exact[k]) for k in KEYS)


def test_non_contiguous_features_give_the_same_numbers():
    img = voronoi_image(seed=16)
    feat = torch.rand(1, 6, 32, 48, generator=gen(17))
    ref = edge_fidelity(feat, img)
    for other in (feat.contiguous(memory_format=torch.channels_last), torch.stack([feat, feat], -1)[..., 1]):
        out = edge_fidelity(other, img)
        assert all(torch.allclose(out[k], ref[k], atol=1e-6) for k in KEYS)


def test_nan_features_warn_and_give_zeros():
    img = voronoi_image(seed=18)
    feats = torch.rand(2, 3, 16, 24, generator=gen(19))
    feats[0, 1, 2, 2] = float('nan')
    with pytest.warns(RuntimeWarning, match='NaN/inf'):
        out = edge_fidelity(feats, img)
    assert all(out[k][0].item() == 0.0 for k in KEYS)
    assert out['SP'][1].item() > 0


@pytest.mark.parametrize('image, match', [
    (torch.rand(1, 3, 16, 16), 'uint8'),
    (torch.zeros(1, 16, 16, 3, dtype=torch.uint8), 'permute'),
    (torch.zeros(3, 3, 16, 16, dtype=torch.uint8), 'batch size 3'),
])
def test_bad_images_raise_value_errors_naming_the_fix(image, match):
    with pytest.raises(ValueError, match=match):
        edge_fidelity(torch.rand(2, 3, 8, 8), image)


def test_ncc_of_one_radius_equals_shift_ncc():
    m = torch.randn(3, 11, 17, generator=gen(30)).cumsum(2)
    m[2] = 1.0  # constant: no direction has variance, NCC 0
    for r in (1, 2, 6, 11, 40):
        assert torch.allclose(_ncc_one_radius(m, r), shift_ncc(m, [r])[:, 0], atol=1e-5)


@pytest.mark.parametrize('seed', range(3))
def test_decorrelation_radius_shortcut_equals_the_full_search(seed):
    # A batch that mixes maps decorrelated at the first radius with smooth ones that are not takes the full path;
    # each map gets the radius the full search gives it alone.
    g = gen(40 + seed)
    smooth = F.interpolate(torch.randn(2, 1, 6, 8, generator=g), size=(30, 40), mode='bilinear')[:, 0]
    noise = torch.randn(2, 30, 40, generator=g)
    m = torch.cat([noise, smooth])
    radii = sp_radii(30, 40)
    for i in range(4):
        below = shift_ncc(m[i:i + 1], radii)[0] < 0.5
        expected = radii[int(below.float().argmax())] if below.any() else radii[-1]
        assert decorrelation_radius(m[i:i + 1]).item() == expected
        assert decorrelation_radius(m)[i].item() == expected


def test_multichannel_sobel_with_given_std_equals_computed_std():
    feat = torch.randn(2, 5, 9, 12, generator=gen(31)) * torch.arange(1.0, 6.0).view(1, 5, 1, 1)
    std = feat.flatten(2).std(dim=-1, keepdim=True)
    assert torch.allclose(multichannel_sobel(feat, std), multichannel_sobel(feat), rtol=1e-5, atol=1e-6)
