"""Mask boundaries and Boundary IoU on hand-made masks with hand-computed answers."""
import cv2
import numpy as np
import pytest
import torch

from mmfusion.evaluation.functional import boundary as boundary_module
from mmfusion.evaluation.functional import boundary_iou, dilation_pixels, label_boundary, mask_to_boundary


def square(size, top, left, side, dtype=np.uint8):
    m = np.zeros(size, dtype=dtype)
    m[top:top + side, left:left + side] = 1
    return m


def reference_boundary(mask, dilation_ratio=0.02):
    """The reference's definition, written with OpenCV: pad with zeros, erode d times by a 3x3 square, subtract."""
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h ** 2 + w ** 2))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return (mask.astype(np.uint8) - eroded).astype(bool)


# --- dilation d ---------------------------------------------------------------------------------------------------

def test_dilation_is_ratio_of_diagonal_rounded():
    # 300 x 400 image: diagonal 500; 0.02 * 500 = 10; 0.0111 * 500 = 5.55 -> 6; 0.0109 * 500 = 5.45 -> 5
    assert dilation_pixels(300, 400, 0.02) == 10
    assert dilation_pixels(300, 400, 0.0111) == 6
    assert dilation_pixels(300, 400, 0.0109) == 5


def test_dilation_rounds_halves_to_even_like_the_reference():
    # 3 x 4 image: diagonal 5; 0.5 * 5 = 2.5 -> 2 and 0.7 * 5 = 3.5 -> 4 (round half to even, as numpy's round)
    assert dilation_pixels(3, 4, 0.5) == 2
    assert dilation_pixels(3, 4, 0.7) == 4


def test_dilation_is_at_least_one_pixel():
    # 10 x 10: diagonal 14.14; 0.02 * 14.14 = 0.28 rounds to 0, raised to 1
    assert dilation_pixels(10, 10, 0.02) == 1


def test_dilation_of_mask_follows_its_diagonal():
    # 64 x 64: diagonal 90.5, 0.02 * 90.5 = 1.81 -> d = 2: a 10 x 10 square keeps a 6 x 6 core
    b = mask_to_boundary(square((64, 64), 20, 20, 10))
    assert b.sum() == 10 * 10 - 6 * 6
    assert not b[22:28, 22:28].any() and b[20:22, 20:30].all()


# --- boundaries ---------------------------------------------------------------------------------------------------

def test_interior_square_boundary_is_its_ring():
    # 32 x 32: d = round(0.905) = 1, so the boundary of an 8 x 8 square is its 1-px ring: 64 - 36 = 28 pixels
    m = square((32, 32), 8, 8, 8)
    b = mask_to_boundary(m)
    expected = m.astype(bool).copy()
    expected[9:15, 9:15] = False
    assert b.dtype == np.bool_ and b.sum() == 28
    np.testing.assert_array_equal(b, expected)


@pytest.mark.parametrize('width', [1, 2])
def test_thin_line_is_all_boundary(width):
    # A line thinner than 2d + 1 = 3 pixels has no interior: the boundary is the whole mask.
    m = np.zeros((32, 32), dtype=bool)
    m[5:25, 10:10 + width] = True
    np.testing.assert_array_equal(mask_to_boundary(m), m)


def test_three_pixel_line_keeps_its_centre():
    # 3 px wide, 20 px long, d = 1: the centre column without its two end pixels (18 px) is interior.
    m = np.zeros((32, 32), dtype=bool)
    m[5:25, 10:13] = True
    assert mask_to_boundary(m).sum() == 3 * 20 - 18


def test_border_touching_mask_has_boundary_along_the_border():
    # The image border counts as background: a full 32 x 32 mask (d = 1) has the outer frame as boundary.
    b = mask_to_boundary(np.ones((32, 32), dtype=bool))
    assert b.sum() == 32 * 32 - 30 * 30
    assert b[0].all() and b[-1].all() and b[:, 0].all() and b[:, -1].all() and not b[1:-1, 1:-1].any()


def test_square_in_corner_is_bounded_by_the_image_edges():
    # An 8 x 8 square in the top-left corner has the same 28-pixel ring as an interior one.
    b = mask_to_boundary(square((32, 32), 0, 0, 8))
    assert b.sum() == 28 and b[0, :8].all() and b[:8, 0].all()


def test_empty_mask_has_empty_boundary():
    assert not mask_to_boundary(np.zeros((16, 16), dtype=bool)).any()


@pytest.mark.parametrize('backend', ['cv2', 'torch'])
def test_boundary_matches_reference_erosion_on_random_masks(backend, monkeypatch):
    # 'torch' is the path CUDA tensors take; here it runs on the CPU.
    monkeypatch.setattr(boundary_module, '_CPU_BACKEND', backend)
    rng = np.random.default_rng(0)
    for h, w, ratio in [(17, 23, 0.02), (40, 31, 0.05), (64, 48, 0.1), (9, 70, 0.03)]:
        m = rng.random((h, w)) < 0.7
        np.testing.assert_array_equal(mask_to_boundary(m, ratio), reference_boundary(m, ratio))
        batch = mask_to_boundary(torch.from_numpy(np.stack([m, ~m])), ratio)
        np.testing.assert_array_equal(batch[1].numpy(), reference_boundary(~m, ratio))


@pytest.mark.parametrize('backend', ['cv2', 'torch'])
def test_label_boundary_matches_per_class_reference(backend, monkeypatch):
    monkeypatch.setattr(boundary_module, '_CPU_BACKEND', backend)
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(-1, 3, (6, 8)), np.ones((5, 4), dtype=np.int64))  # blocks, negative labels too
    lb = label_boundary(labels, 0.05)  # 30 x 32: d = round(2.19) = 2
    for c in (-1, 0, 1, 2):
        np.testing.assert_array_equal(lb & (labels == c), reference_boundary(labels == c, 0.05))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_tensors_stay_on_device_and_match_cpu():
    rng = np.random.default_rng(2)
    masks = torch.from_numpy(rng.random((3, 50, 70)) < 0.6)
    labels = torch.from_numpy(rng.integers(0, 5, (50, 70)))
    b = mask_to_boundary(masks.cuda())
    assert b.device.type == 'cuda'
    torch.testing.assert_close(b.cpu(), mask_to_boundary(masks))
    torch.testing.assert_close(label_boundary(labels.cuda()).cpu(), label_boundary(labels))
    iou = boundary_iou(masks.cuda(), masks.roll(1, -1).cuda())
    assert iou.device.type == 'cuda'
    torch.testing.assert_close(iou.cpu(), boundary_iou(masks, masks.roll(1, -1)))


def test_explicit_dilation_overrides_ratio():
    m = square((32, 32), 8, 8, 8)
    assert mask_to_boundary(m, dilation=2).sum() == 64 - 16  # 4 x 4 core left


def test_torch_batch_gives_tensors_per_mask():
    masks = torch.from_numpy(np.stack([square((32, 32), 8, 8, 8), np.ones((32, 32), np.uint8)]))
    b = mask_to_boundary(masks)
    assert isinstance(b, torch.Tensor) and b.dtype == torch.bool and b.shape == (2, 32, 32)
    assert b.flatten(1).sum(1).tolist() == [28, 32 * 32 - 30 * 30]


# --- Boundary IoU ------------------------------------------------------------------------------------------------

def test_identical_masks_have_boundary_iou_one():
    m = square((32, 32), 8, 8, 8)
    assert boundary_iou(m, m) == 1.0


@pytest.mark.parametrize('shift', [1, 2])
def test_square_shifted_by_k_pixels(shift):
    # 32 x 32 image, d = 1, 8 x 8 square vs the same square moved right by k: each 28-px ring.
    # Their top and bottom rows overlap on 8 - k columns; the side columns never meet (k >= d), so
    # intersection = 2 (8 - k) and union = 2 * 28 - 2 (8 - k).
    gt = square((32, 32), 8, 8, 8)
    pred = square((32, 32), 8, 8 + shift, 8)
    inter = 2 * (8 - shift)
    assert boundary_iou(gt, pred) == pytest.approx(inter / (56 - inter))


def test_shift_hurts_boundary_iou_more_than_mask_iou():
    # 64 x 64 image, d = 2, 12 x 12 square shifted by 2: the 80-px rings share their two 2-row bands on
    # 10 columns (40 px) and nothing else, so Boundary IoU = 40 / 120 = 1/3, while mask IoU = 120 / 168.
    gt = square((64, 64), 20, 20, 12)
    pred = square((64, 64), 20, 22, 12)
    assert boundary_iou(gt, pred) == pytest.approx(1 / 3)
    mask_iou = (gt & pred).sum() / (gt | pred).sum()
    assert mask_iou == pytest.approx(120 / 168)


def test_thin_lines_boundary_iou_is_their_mask_iou():
    # Lines of width 1 are all boundary, so Boundary IoU equals mask IoU: overlap 10 of a 30-px union.
    gt = np.zeros((32, 32), dtype=bool)
    pred = np.zeros((32, 32), dtype=bool)
    gt[5:25, 10] = True
    pred[15:25, 10] = True
    pred[0:10, 20] = True
    assert boundary_iou(gt, pred) == pytest.approx(10 / 30)


def test_both_empty_gives_zero_as_pycocotools():
    empty = np.zeros((16, 16), dtype=bool)
    assert boundary_iou(empty, empty) == 0.0


def test_one_empty_gives_zero():
    assert boundary_iou(np.zeros((16, 16), bool), square((16, 16), 4, 4, 6)) == 0.0


def test_batched_numpy_gives_one_value_per_pair():
    gt = np.stack([square((32, 32), 8, 8, 8), square((32, 32), 8, 8, 8), np.zeros((32, 32), np.uint8)])
    pred = np.stack([square((32, 32), 8, 8, 8), square((32, 32), 8, 9, 8), np.zeros((32, 32), np.uint8)])
    iou = boundary_iou(gt, pred)
    assert isinstance(iou, np.ndarray) and iou.shape == (3,)
    np.testing.assert_allclose(iou, [1.0, 14 / 42, 0.0])


def test_batched_torch_gives_tensor():
    gt = torch.from_numpy(np.stack([square((32, 32), 8, 8, 8)] * 2))
    pred = torch.from_numpy(np.stack([square((32, 32), 8, 8, 8), square((32, 32), 8, 10, 8)]))
    iou = boundary_iou(gt, pred)
    assert isinstance(iou, torch.Tensor)
    torch.testing.assert_close(iou, torch.tensor([1.0, 12 / 44]))


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('ratio', [0, -0.02, float('nan')])
def test_non_positive_dilation_ratio_is_refused(ratio):
    with pytest.raises(ValueError, match='dilation_ratio must be a finite number > 0'):
        mask_to_boundary(np.ones((4, 4)), ratio)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r'gt and pred shapes differ: \(4, 4\) vs \(4, 5\); resize'):
        boundary_iou(np.ones((4, 4)), np.ones((4, 5)))


def test_channel_dimension_is_refused():
    with pytest.raises(ValueError, match=r'\(H, W\) or \(N, H, W\)'):
        mask_to_boundary(np.ones((1, 1, 4, 4)))


def test_float_labels_are_refused():
    with pytest.raises(ValueError, match='integer map'):
        label_boundary(np.zeros((4, 4), dtype=np.float32))
