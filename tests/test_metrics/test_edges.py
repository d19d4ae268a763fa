"""SPEC §1 building blocks on hand-made arrays."""
import pytest
import torch
import torch.nn.functional as F

from mmfusion.metrics.edges import (
    FEAT_SOBEL_X,
    IMAGE_SOBEL_X,
    centreline,
    dilate,
    edge_zones,
    image_gradient,
    max_filter,
    minmax_valid,
    resize_image,
    sobel_magnitude,
    srgb_to_luminance,
    top_k_mask,
    top_q,
    valid_mask,
)


def test_valid_mask_drops_one_pixel_border():
    mask = valid_mask(4, 5)
    assert mask.sum() == 2 * 3
    assert mask[1:-1, 1:-1].all() and not mask[0].any() and not mask[:, -1].any()
    assert not valid_mask(2, 7).any()


def test_top_q_takes_exactly_ceil_q_n_largest_valid_values():
    # 4x6 map: 8 interior pixels with values 0..7; the border holds larger values that must be ignored.
    x = torch.full((1, 4, 6), 100.0)
    x[0, 1:3, 1:5] = torch.arange(8.0).view(2, 4)
    sel = top_q(x, 0.4, valid_mask(4, 6))  # ceil(0.4 * 8) = 4 -> values 4, 5, 6, 7
    assert sel.sum() == 4
    assert sorted(x[sel].tolist()) == [4.0, 5.0, 6.0, 7.0]


def test_top_q_count_is_not_rounded_up_by_float_error():
    # 0.4 * 100 is 40.000000000000007 in floating point; ceil must still give 40.
    x = torch.rand(1, 12, 12, generator=torch.Generator().manual_seed(0))
    assert top_q(x, 0.4, valid_mask(12, 12)).sum() == 40


def test_top_q_count_is_exact_with_ties():
    x = torch.zeros(1, 6, 6)
    x[0, 2, 2] = 1.0  # 16 valid values, 15 tied at 0: ceil(0.5 * 16) = 8 picks, ties broken arbitrarily
    assert top_q(x, 0.5, valid_mask(6, 6)).sum() == 8


def test_top_q_is_empty_on_flat_maps_and_with_fewer_than_4_valid_pixels():
    flat = torch.full((1, 8, 8), 3.0)
    flat[0, 4, 4] += 5e-7  # range below 1e-6
    assert not top_q(flat, 0.4, valid_mask(8, 8)).any()
    small = torch.rand(1, 3, 4)  # 2 valid pixels
    assert not top_q(small, 1.0, valid_mask(3, 4)).any()


def test_top_q_handles_each_image_of_the_batch_separately():
    x = torch.stack([torch.zeros(6, 6), torch.rand(6, 6, generator=torch.Generator().manual_seed(1))])
    sel = top_q(x, 0.25, valid_mask(6, 6))
    assert sel[0].sum() == 0 and sel[1].sum() == 4


def test_sobel_of_a_unit_ramp_is_one_inside():
    ramp = torch.arange(7.0).expand(1, 7, 7)  # x-coordinate: slope 1 along x
    g = sobel_magnitude(ramp, FEAT_SOBEL_X)  # (1+2+1) * 2 / 8 = 1
    assert torch.allclose(g[0, :, 1:-1], torch.ones(7, 5))
    assert torch.allclose(g[0, :, 0], torch.full((7, ), 0.5))  # replicate padding halves the border difference
    assert torch.allclose(sobel_magnitude(ramp, IMAGE_SOBEL_X)[0, 3, 3], torch.tensor(2.0))  # /4 kernel


def test_luminance_of_black_white_and_mid_grey():
    rgb = torch.tensor([0.0, 1.0, 0.5]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    y = srgb_to_luminance(rgb)[0, 0]
    assert y[0] == 0 and torch.isclose(y[1], torch.tensor(1.0))
    assert torch.isclose(y[2], torch.tensor(((0.5 + 0.055) / 1.055)**2.4), atol=1e-6)


def test_minmax_valid_uses_valid_pixels_and_keeps_flat_maps():
    x = torch.zeros(1, 5, 5)
    x[0, 0, 0] = 50.0  # border: ignored
    x[0, 2, 2] = 2.0
    y = minmax_valid(x, valid_mask(5, 5))
    assert y[0, 2, 2] == 1.0 and y[0, 1, 1] == 0.0 and y[0, 0, 0] == 25.0
    flat = torch.full((1, 5, 5), 7.0)
    assert torch.equal(minmax_valid(flat, valid_mask(5, 5)), torch.zeros(1, 5, 5))


def test_centreline_of_a_vertical_step_keeps_the_two_tied_columns():
    # Step between columns 4 and 5 of a 10x10 luminance map: the Sobel peaks equally on columns 4 and 5.
    img = torch.zeros(1, 3, 10, 10)
    img[..., 5:] = 1.0
    gi = image_gradient(img, (10, 10))
    # 16 of the 64 valid pixels have a gradient: q_img = 0.25 takes exactly them (a larger q would also take flat
    # pixels, which pass the non-strict local-maximum test: a reference quirk).
    centre = centreline(gi, 0.25, valid_mask(10, 10))
    cols = centre[0].any(dim=0).nonzero().flatten().tolist()
    assert cols == [4, 5]
    assert centre[0, 1:-1, 4].all() and centre[0, 1:-1, 5].all()
    assert not centre[0, 0].any() and not centre[0, -1].any()  # border rows are not valid


def test_zones_are_square_dilations_in_feature_pixels():
    centre = torch.zeros(1, 13, 13, dtype=torch.bool)
    centre[0, 6, 6] = True
    z = edge_zones(centre, valid_mask(13, 13), d_in=2, d_out=4)
    assert z['inner'].sum() == 25 and z['outer'].sum() == 81
    assert z['ring'].sum() == 81 - 25
    assert z['far'].sum() == 11 * 11 - 81
    assert not (z['ring'] & z['far']).any()


@pytest.mark.parametrize('size', [(1, 1), (2, 3), (3, 3)])
def test_tiny_grids_give_empty_but_defined_masks(size):
    gi = image_gradient(torch.rand(2, 3, 9, 9), size)
    assert torch.isfinite(gi).all()
    assert not centreline(gi, 0.4, valid_mask(*size)).any()


@pytest.mark.parametrize('src', [(512, 1024), (37, 53), (5, 3)])
@pytest.mark.parametrize('size', [(128, 256), (16, 32), (7, 9), (40, 60), (1, 1), (64, 130)])
def test_resize_image_equals_f_interpolate_for_uint8_and_float(src, size):
    img = torch.randint(0, 256, (2, 3, *src), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(img.float() / 255, size=size, mode='bilinear', align_corners=False)
    assert torch.allclose(resize_image(img, size), ref, atol=1e-6)
    assert torch.allclose(resize_image(img.float() / 255, size), ref, atol=1e-6)
    aa = F.interpolate(img.float() / 255, size=size, mode='bilinear', align_corners=False, antialias=True)
    assert torch.allclose(resize_image(img, size, antialias=True), aa, atol=1e-6)


def test_resize_image_of_a_uint8_image_at_its_own_size_is_the_scaled_image():
    img = torch.randint(0, 256, (1, 3, 6, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(resize_image(img, (6, 7)), img.float() / 255.0)


def test_top_k_mask_is_exact_and_breaks_ties_by_position():
    vals = torch.tensor([[3.0, 1.0, 2.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    assert top_k_mask(vals, 3).tolist() == [[True, False, True, True, False, False],
                                            [True, True, True, False, False, False]]
    assert not top_k_mask(vals, 0).any()
    assert top_k_mask(vals, 6).all()


def test_top_q_with_an_arbitrary_valid_mask_matches_the_definition():
    x = torch.rand(2, 7, 9, generator=torch.Generator().manual_seed(2))
    valid = torch.rand(7, 9, generator=torch.Generator().manual_seed(3)) > 0.4
    sel = top_q(x, 0.3, valid)
    n = int(valid.sum())
    k = -(-3 * n // 10)  # ceil(0.3 n)
    for i in range(2):
        assert int(sel[i].sum()) == k and not (sel[i] & ~valid).any()
        assert x[i][sel[i]].min() >= x[i][valid & ~sel[i]].max()


@pytest.mark.parametrize('shape', [(1, 128, 256), (2, 5, 7), (1, 3, 2), (1, 1, 1)])
@pytest.mark.parametrize('radius', [1, 2, 4])
def test_max_filter_equals_the_2d_max_pool(shape, radius):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(4))
    ref = F.max_pool2d(x.unsqueeze(1), 2 * radius + 1, stride=1, padding=radius).squeeze(1)
    assert torch.equal(max_filter(x, radius), ref)


def test_outer_zone_grown_from_the_inner_one_equals_the_direct_dilation():
    centre = torch.rand(2, 23, 31, generator=torch.Generator().manual_seed(5)) > 0.97
    valid = valid_mask(23, 31)
    for d_in, d_out in ((2, 4), (1, 3), (3, 3), (4, 2)):
        zones = edge_zones(centre, valid, d_in, d_out)
        assert torch.equal(zones['outer'], dilate(centre, d_out))
        assert torch.equal(zones['inner'], dilate(centre, d_in))
