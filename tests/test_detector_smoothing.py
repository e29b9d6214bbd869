"""MapDetector's smoothing, score and normalisation against independent references (scipy, hand sums)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from utad.config import DetectConfig
from utad.detector import MapDetector, gaussian_kernel


class _Fixed(MapDetector):
    """A detector whose raw map is the input's first channel."""

    def raw_map(self, x):
        return x[:, :1], None, None, None


def test_gaussian_kernel_by_hand():
    sigma = 1.5
    t = np.arange(-6, 7)  # radius ceil(4 sigma) = 6
    k = np.exp(-(t**2) / (2 * sigma**2))
    np.testing.assert_allclose(gaussian_kernel(sigma).numpy(), k / k.sum(), rtol=1e-6)
    assert gaussian_kernel(sigma).dtype == torch.float32


def test_smoothing_equals_scipy_reflect_and_keeps_the_shape():
    det = _Fixed(DetectConfig(smooth_sigma=4.0), image_size=128)  # sigma 2 px at 128 px
    e = torch.rand(2, 1, 20, 24, generator=torch.Generator().manual_seed(0))
    out = det.smooth(e)
    assert out.shape == e.shape
    # torch's "reflect" is scipy's "mirror" (the edge pixel not repeated); truncate at 4 sigma like the kernel
    ref = np.stack([gaussian_filter(m[0], 2.0, mode="mirror", truncate=4.0) for m in e.numpy()])
    np.testing.assert_allclose(out[:, 0].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_default_construction():
    det = _Fixed(DetectConfig())
    assert torch.allclose(
        det.kernel, gaussian_kernel(DetectConfig().smooth_sigma)
    )  # image_size 256 by default
    assert det.config is None and det.backbone is None and det.pm is None
    assert "kernel" not in det.state_dict()  # a buffer of the config, not a weight


def test_topk_of_a_tiny_share_is_the_maximum_and_presmoothed_maps_are_not_smoothed_again():
    e = torch.zeros(1, 1, 16, 16)
    e[0, 0, 3, 3], e[0, 0, 9, 9] = 2.0, 1.0
    det = _Fixed(DetectConfig(score="topk", top_k=0.001, normalisation="minmax"), image_size=16)
    assert det.image_score(e).item() == 2.0  # round(0.256) = 0 -> at least one pixel: the maximum
    det = _Fixed(DetectConfig(score="max", smooth_sigma=16.0, normalisation="minmax"), image_size=32)
    det.norm = {"min": 0.0, "max": 2.0}
    det.map_smoothed = True  # PatchCore / PaDiM smooth inside raw_map: the score is the map's own max
    x = torch.zeros(1, 3, 32, 32)
    x[0, 0, 10, 10] = 2.0
    score, amap, *_ = det(x)
    assert score.item() == pytest.approx(1.0) and amap.max().item() == pytest.approx(1.0)
    det.map_smoothed = False  # UTAD: the score is the maximum of the smoothed map (sigma 2 px here)
    assert det(x)[0].item() < 0.1


def test_minmax_normalisation_over_a_range_below_one():
    det = _Fixed(DetectConfig(normalisation="minmax"))
    det.norm = {"min": 0.1, "max": 0.3}
    out = det.normalise(torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(out, torch.tensor([0.0, 0.5, 1.0]))
    det.norm = {"min": 0.2, "max": 0.2}  # a constant calibration set: no division by zero
    assert torch.isfinite(det.normalise(torch.tensor([0.2, 0.5]))).all()
