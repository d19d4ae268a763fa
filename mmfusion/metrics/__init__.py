"""Label-free feature metrics of the paper: Structural Coherence (SC) and Edge Fidelity (EF).

Plain PyTorch (no OpenMMLab import), batched over B, on the device of the features, float32 inside whatever the
input dtype. See SPEC §1-4 and the docstrings of each function.
"""
from .common import PreparedFeatures, prepare_features
from .edge_fidelity import (
    PRESETS,
    concentration,
    decorrelation_radius,
    edge_fidelity,
    feature_gradient,
    first_component_map,
    frequency_content,
    pca1_gradient,
    shift_ncc,
    sp_radii,
    spatial_precision,
)
from .edges import (
    centreline,
    dilate,
    edge_zones,
    image_gradient,
    minmax_valid,
    resize_image,
    sobel_magnitude,
    srgb_to_luminance,
    top_q,
    valid_mask,
)
from .profile import (
    DEFAULT_STRIDES,
    METRIC_KEYS,
    ProfileAccumulator,
    auxiliary_plan,
    explain_selection,
    injection_stride,
    load_profile,
    metrics_per_image,
    profile_features,
    save_profile,
    save_profile_csv,
    select_pair,
)
from .structure import (
    channel_norm_map,
    clustering_score_points,
    structural_clustering_score,
    structural_coherence,
    structural_coherence_gt,
    structured_feature_contrast,
)

__all__ = [
    'PRESETS', 'METRIC_KEYS', 'DEFAULT_STRIDES', 'PreparedFeatures', 'prepare_features', 'structural_coherence',
    'structured_feature_contrast', 'structural_clustering_score', 'clustering_score_points',
    'structural_coherence_gt', 'channel_norm_map', 'edge_fidelity', 'concentration', 'frequency_content',
    'spatial_precision', 'decorrelation_radius', 'shift_ncc', 'sp_radii', 'feature_gradient', 'first_component_map',
    'pca1_gradient', 'valid_mask', 'resize_image', 'srgb_to_luminance', 'sobel_magnitude', 'minmax_valid', 'top_q',
    'centreline', 'dilate', 'edge_zones', 'image_gradient', 'profile_features', 'ProfileAccumulator',
    'injection_stride', 'auxiliary_plan', 'explain_selection', 'metrics_per_image', 'select_pair', 'save_profile',
    'load_profile', 'save_profile_csv',
]
