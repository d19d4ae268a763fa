"""Metric hyper-parameters out of range are refused with one clear line; maps too small for a metric warn (once)
instead of silently scoring 0; a profile of zeros or NaNs yields no fusion pair."""
import math
import warnings

import numpy as np
import pytest
import torch

from mmfusion.metrics import (
    ProfileAccumulator,
    clustering_score_points,
    decorrelation_radius,
    edge_fidelity,
    metrics_per_image,
    select_pair,
    shift_ncc,
    sp_radii,
    spatial_precision,
    structural_clustering_score,
    structural_coherence,
    structural_coherence_gt,
    structured_feature_contrast,
    top_q,
    valid_mask,
)
from mmfusion.metrics.common import MetricWarning, check_params, map_size_problems


def feat(h=16, w=16, c=4, seed=0):
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))


def image(h=64, w=64, seed=0):
    return torch.randint(0, 256, (1, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


SEG = torch.zeros(1, 16, 16, dtype=torch.long)

REFUSED = [
    (lambda: edge_fidelity(feat(), image(), q=1.5), 'q=1.5 is not valid: q must be a number in (0, 1].'),
    (lambda: edge_fidelity(feat(), image(), q=0), 'q=0 is not valid: q must be a number in (0, 1].'),
    (lambda: edge_fidelity(feat(), image(), q_img=-0.1), 'q_img=-0.1 is not valid: q_img must be a number in (0, 1].'),
    (lambda: edge_fidelity(feat(), image(), tau=0.0), 'tau=0.0 is not valid: tau must be a number in (0, 1].'),
    (lambda: edge_fidelity(feat(), image(), num_radii=0),
     'num_radii=0 is not valid: num_radii must be an integer >= 1.'),
    (lambda: spatial_precision(torch.rand(1, 8, 8), tau=2.0), 'tau=2.0 is not valid: tau must be a number in (0, 1].'),
    (lambda: decorrelation_radius(torch.rand(1, 8, 8), r_frac=0),
     'r_frac=0 is not valid: r_frac must be a number in (0, 1].'),
    (lambda: sp_radii(8, 8, num=0), 'num=0 is not valid: num must be an integer >= 1.'),
    (lambda: shift_ncc(torch.rand(1, 8, 8), [0, 2]),
     'radii=[0, 2] is not valid: radii must be a non-empty sequence of integers, each >= 1.'),
    (lambda: top_q(torch.rand(1, 6, 6), 1.5, valid_mask(6, 6)), 'q=1.5 is not valid: q must be a number in (0, 1].'),
    (lambda: structural_coherence(feat(), ks=(1, 6)),
     'ks=(1, 6) is not valid: ks must be a non-empty sequence of integers, each >= 2.'),
    (lambda: structural_clustering_score(feat(), ks=(6.0, )),
     'ks=(6.0,) is not valid: ks must be a non-empty sequence of integers, each >= 2.'),
    (lambda: structural_clustering_score(feat(), n_samples=1),
     'n_samples=1 is not valid: n_samples must be an integer >= 2.'),
    (lambda: structural_clustering_score(feat(), n_silhouette=1),
     'n_silhouette=1 is not valid: n_silhouette must be an integer >= 2.'),
    (lambda: structural_clustering_score(feat(), pca_dim=0),
     'pca_dim=0 is not valid: pca_dim must be an integer >= 1.'),
    (lambda: clustering_score_points(torch.rand(1, 20, 3), pca_dim=0),
     'pca_dim=0 is not valid: pca_dim must be an integer >= 1.'),
    (lambda: structured_feature_contrast(feat(), cell=0), 'cell=0 is not valid: cell must be an integer >= 1.'),
    (lambda: structural_coherence_gt(feat(), SEG, n_samples=True),
     'n_samples=True is not valid: n_samples must be an integer >= 2.'),
    (lambda: ProfileAccumulator(q_img=0), 'q_img=0 is not valid: q_img must be a number in (0, 1].'),
]


@pytest.mark.parametrize('call, message', REFUSED, ids=[m.split('=')[0] + '=' + m.split('=')[1].split(' ')[0]
                                                        for _, m in REFUSED])
def test_out_of_range_parameter_is_refused_naming_it_its_value_and_the_range(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_boundary_values_and_numpy_integers_are_accepted():
    check_params(q=1.0, q_img=1.0, tau=1.0, r_frac=1.0, ks=(2, ), n_samples=2, n_silhouette=2, pca_dim=1,
                 num_radii=1, cell=1, radii=[1], grid=None, prune_after=None)
    check_params(n_samples=np.int64(5), ks=np.array([2, 3]), clip=math.inf)
    out = edge_fidelity(feat(), image(), q=1.0, q_img=1.0, tau=1.0)
    assert torch.isfinite(out['EF']).all()


def test_nan_is_refused():
    with pytest.raises(ValueError, match=r'^tau=nan is not valid: tau must be a number in \(0, 1\]\.$'):
        check_params(tau=float('nan'))


# --- maps too small ---------------------------------------------------------------------------------------------


def test_sfc_of_a_map_within_one_cell_warns_once_and_is_zero():
    with pytest.warns(MetricWarning) as record:
        first = structured_feature_contrast(feat(8, 8))
        second = structured_feature_contrast(feat(8, 8, seed=1))
    msgs = [str(r.message) for r in record]
    assert msgs == ['SFC: a 8x8 feature map holds 1 cell of 8x8 px, and SFC needs 2 cells at least (it is 0 here); '
                    'use a smaller cell= or a larger input image.']
    assert first.item() == 0.0 and second.item() == 0.0


def test_sfc_with_a_smaller_cell_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter('error', MetricWarning)
        sfc = structured_feature_contrast(feat(8, 8), cell=4)
    assert sfc.item() > 0


def test_ef_of_a_map_without_3x3_scored_pixels_warns():
    with pytest.warns(MetricWarning, match=r'EF: a 4x6 feature map has 2x4 scored pixels .* 5x5 map'):
        edge_fidelity(feat(4, 6), image())


def test_scs_with_fewer_points_than_the_smallest_k_needs_warns_and_is_zero():
    with pytest.warns(MetricWarning, match=r'SCS: a 3x3 feature map \(9 points\) cannot form k=6 clusters .* 12 '):
        scs = structural_clustering_score(feat(3, 3))
    assert scs.item() == 0.0


def test_image_much_smaller_than_the_feature_grid_warns():
    with pytest.warns(MetricWarning, match=r'EF: the 6x40 image is much smaller than the 16x16 feature map'):
        edge_fidelity(feat(16, 16), image(6, 40))


def test_a_well_sized_map_and_image_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter('error', MetricWarning)
        out = metrics_per_image(feat(16, 16), image(64, 64))
    assert out['SFC'].item() > 0 and out['SCS'].item() > 0


@pytest.mark.parametrize('size, problems', [
    ((16, 16), []),
    ((4, 20), ['EF needs 5x5 at least']),
    ((8, 8), ['SFC needs 2 cells of 8x8 px, i.e. one side of 16 at least']),
    ((3, 3), ['EF needs 5x5 at least', 'SFC needs 2 cells of 8x8 px, i.e. one side of 16 at least',
              'SCS needs 12 pixels at least']),
])
def test_map_size_problems(size, problems):
    assert map_size_problems(*size) == problems


# --- no pair from a meaningless profile -------------------------------------------------------------------------

GOOD = {8: dict(SC=0.6, EF=3.0), 16: dict(SC=0.5, EF=4.0)}


def test_select_pair_refuses_an_all_zero_profile():
    zeros = {8: dict(SC=0.0, EF=0.0), 16: dict(SC=0.0, EF=0.0)}
    with pytest.raises(ValueError, match="profile of 'b' has SC = 0 at every stride"):
        select_pair({'a': GOOD, 'b': zeros})


def test_select_pair_refuses_an_encoder_whose_ef_is_zero_everywhere():
    flat_ef = {8: dict(SC=0.7, EF=0.0), 16: dict(SC=0.4, EF=0.0)}
    with pytest.raises(ValueError, match="profile of 'b' has EF = 0 at every stride"):
        select_pair({'a': GOOD, 'b': flat_ef})


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_select_pair_refuses_a_non_finite_value(bad):
    broken = {8: dict(SC=0.7, EF=2.0), 16: dict(SC=0.4, EF=bad)}
    with pytest.raises(ValueError, match=f"profile of 'b' at stride 16 has a non-finite EF \\({bad}\\)"):
        select_pair({'a': GOOD, 'b': broken})
