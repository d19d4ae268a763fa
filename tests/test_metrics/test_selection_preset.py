"""The 'selection' EF preset's first-component map and gradient against a scikit-learn/numpy reference of SPEC §3:
per-channel z-score (population std + 1e-6), top eigenvector over all pixels, min-max to [0, 1], Sobel /4 with
replicate padding."""
import numpy as np
import pytest
import torch

from mmfusion.metrics import edge_fidelity, first_component_map, pca1_gradient

sklearn_decomposition = pytest.importorskip('sklearn.decomposition')


def _features(seed=0, b=2, c=6, h=12, w=16):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(b, c, h, w, generator=g)
    feat[:, 0] += torch.linspace(0, 3, w)  # some structure so the top axis is well separated
    scales = torch.logspace(-2, 3, c).view(1, c, 1, 1)  # channels of very different scale
    return feat * scales


def _reference_component(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W): scikit-learn's PCA on the z-scored pixels."""
    c, h, w = x.shape
    pixels = x.reshape(c, -1).T.astype(np.float64)
    z = (pixels - pixels.mean(0)) / (pixels.std(0) + 1e-6)
    return sklearn_decomposition.PCA(n_components=1, svd_solver='full').fit_transform(z)[:, 0].reshape(h, w)


def _reference_gradient(pc: np.ndarray) -> np.ndarray:
    m = (pc - pc.min()) / max(pc.max() - pc.min(), 1e-8)
    p = np.pad(m, 1, mode='edge')
    kx = np.array([[1., 0., -1.], [2., 0., -2.], [1., 0., -1.]]) / 4
    h, w = m.shape
    gx = sum(kx[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return np.sqrt(gx**2 + gy**2)


def test_first_component_matches_sklearn_on_zscored_pixels_up_to_sign():
    feat = _features()
    ours = first_component_map(feat)
    for i in range(feat.shape[0]):
        ref = _reference_component(feat[i].numpy())
        sign = np.sign(np.dot(ours[i].flatten().numpy(), ref.flatten()))
        np.testing.assert_allclose(sign * ours[i].numpy(), ref, rtol=1e-4, atol=1e-4)


def test_selection_gradient_matches_numpy_sobel():
    feat = _features(seed=1)
    ours = pca1_gradient(first_component_map(feat))
    for i in range(feat.shape[0]):
        np.testing.assert_allclose(ours[i].numpy(), _reference_gradient(_reference_component(feat[i].numpy())),
                                   rtol=1e-4, atol=1e-5)


def test_selection_ef_ignores_per_channel_scale():
    # The z-score makes the selection preset a function of the correlation structure only.
    feat = _features(seed=2) / torch.logspace(-2, 3, 6).view(1, 6, 1, 1)
    image = torch.randint(0, 256, (2, 3, 48, 64), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    a = edge_fidelity(feat, image, 'selection')['EF']
    b = edge_fidelity(feat * torch.logspace(-2, 3, 6).view(1, 6, 1, 1), image, 'selection')['EF']
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
