"""Detector normalisation, scoring and the Prediction contract, on tiny random networks."""

import numpy as np
import pytest
import torch

from utad.config import DetectConfig
from utad.detector import Detector, MapDetector, gaussian_kernel
from utad.errors import UtadError
from utad.nets.expert_net import ExpertNet
from utad.nets.ie_net import IENet
from utad.nets.perceptual import PerceptualMeasurement


def tiny_detector(**detect):
    torch.manual_seed(0)
    ie = IENet(16, blocks=2, width=4, max_width=16, z_dim=4, mlp_hidden=8, t_hidden=8, fc_channels=4)
    ex = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8)
    pm = PerceptualMeasurement(None, [])  # pixel L1: no backbone needed
    return Detector(ie, ex, pm, DetectConfig(**detect), image_size=16).eval()


def test_quantile_normalisation_puts_the_normal_quantile_at_norm_value():
    det = tiny_detector(quantile=0.99, norm_value=0.5)
    val = [{"image": torch.rand(4, 3, 16, 16)} for _ in range(2)]
    norm = det.calibrate(val)
    with torch.no_grad():
        e = torch.cat([det.normalise(det.raw_map(b["image"])[0]) for b in val]).flatten().numpy()
    assert np.quantile(e, 0.99) == pytest.approx(0.5, rel=1e-4)
    assert norm["n_pixels"] == 8 * 16 * 16


def test_minmax_normalisation_spans_zero_to_one():
    det = tiny_detector(normalisation="minmax")
    val = [{"image": torch.rand(6, 3, 16, 16)}]
    det.calibrate(val)
    with torch.no_grad():
        e = det.normalise(det.raw_map(val[0]["image"])[0])
    assert float(e.min()) == pytest.approx(0.0, abs=1e-6) and float(e.max()) == pytest.approx(1.0, abs=1e-6)


def test_uncalibrated_detector_refuses():
    det = tiny_detector()
    with pytest.raises(UtadError, match="no normalisation statistics"):
        det(torch.rand(1, 3, 16, 16))


def test_prediction_contract_and_alpha():
    det = tiny_detector(alpha=0.5)
    det.calibrate([{"image": torch.rand(4, 3, 16, 16)}])
    preds = det.predict_tensor(torch.rand(3, 3, 16, 16), ["a", "b", "c"])
    assert [p.path for p in preds] == ["a", "b", "c"]
    for p in preds:
        assert p.anomaly_map.shape == (16, 16) and p.mask.dtype == bool
        assert np.array_equal(p.mask, p.anomaly_map > 0.5)
        assert (
            p.image.shape
            == p.impression.shape
            == p.reconstruction.shape
            == p.naive_impression.shape
            == (16, 16, 3)
        )
        assert p.is_anomaly == (p.score > 0.5)
        assert p.score <= p.anomaly_map.max() + 1e-6  # max of a smoothed map never exceeds the map's max


def test_smoothing_sigma_scales_with_resolution():
    det = tiny_detector(smooth_sigma=4.0)
    assert det.kernel.numel() == 2 * 1 + 1  # 4 px at 256 -> 0.25 px at 16 -> radius 1
    assert gaussian_kernel(4.0).numel() == 33
    assert float(gaussian_kernel(2.0).sum()) == pytest.approx(1.0)


class _FixedMap(MapDetector):
    """The shared contract over a given raw map (no network): what every method's scores go through."""

    def __init__(self, maps, detect):
        super().__init__(detect, {"quantile": 1.0}, image_size=maps.shape[-1])
        self.maps = maps

    def raw_map(self, x):
        return self.maps, None, None, None


@pytest.mark.parametrize("score", ["max", "mean", "topk"])
def test_image_score_choices(score):
    maps = torch.zeros(2, 1, 10, 10)
    maps[0, 0, 0, :5] = 2.0  # 5 hot pixels of 100
    maps[1, 0] = 0.3  # uniformly warm
    det = _FixedMap(maps, DetectConfig(score=score, top_k=0.05, smooth_sigma=0, norm_value=1.0))
    got = det(torch.zeros(2, 3, 10, 10))[0]
    want = {"max": [2.0, 0.3], "mean": [0.1, 0.3], "topk": [2.0, 0.3]}[score]
    torch.testing.assert_close(got, torch.tensor(want))
    det.detect.top_k = 0.1  # the 10 highest: 5 hot + 5 zero
    if score == "topk":
        torch.testing.assert_close(det(torch.zeros(2, 3, 10, 10))[0], torch.tensor([1.0, 0.3]))


def test_map_smoothing_spreads_a_hot_pixel_keeps_the_mean_and_calibrates_on_smoothed_maps():
    """``detect.map_sigma`` (px of a 256 px image, scaled with the model's size) smooths e itself, after the
    opening and before normalisation; the calibration quantile is that of the smoothed maps."""
    det = tiny_detector(map_sigma=16.0, smooth_sigma=0)  # 16 px at 256 -> 1 px at the tiny model's 16
    e = torch.zeros(1, 1, 16, 16)
    e[0, 0, 8, 8] = 1.0
    out = det.postprocess(e)
    k = gaussian_kernel(1.0)
    assert out[0, 0, 8, 8] == pytest.approx(float(k[k.numel() // 2] ** 2), rel=1e-5)
    assert out[0, 0, 8, 9] == pytest.approx(float(k[k.numel() // 2] * k[k.numel() // 2 + 1]), rel=1e-5)
    assert float(out.sum()) == pytest.approx(1.0, rel=1e-5)  # away from the border nothing is lost
    assert torch.equal(tiny_detector().postprocess(e), e)  # map_sigma 0: the map as is
    both = tiny_detector(map_sigma=16.0, open_px=1)
    e[0, 0, 2:6, 2:6] = 3.0  # the opening removes the single pixel first, then the 4 x 4 spot is smoothed
    assert torch.allclose(both.postprocess(e), both.smooth(both.open_map(e), both.map_kernel))
    assert both.postprocess(e)[0, 0, 8, 8] < 1e-3
    val = [{"image": torch.rand(4, 3, 16, 16)}]
    norm = det.calibrate(val)
    with torch.no_grad():
        raw = det.raw_map(val[0]["image"])[0]
        _, emap, *_ = det(val[0]["image"])
    smoothed = det.postprocess(raw)
    expected = np.quantile(smoothed.flatten().numpy().astype(np.float64), det.detect.quantile)
    assert norm["quantile"] == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(emap, det.normalise(smoothed))
    assert float(smoothed.std()) < float(raw.std())  # pixel-scale noise damped
    wide = tiny_detector(map_sigma=64.0)  # 4 px at 16 px: the kernel's radius 16 is the whole map
    flat = wide.postprocess(torch.full((1, 1, 16, 16), 0.3))
    assert torch.allclose(flat, torch.full_like(flat, 0.3))  # padded by the border, not refused


def test_opening_removes_hot_spots_smaller_than_its_square_and_calibrates_on_opened_maps():
    det = tiny_detector(open_px=1)
    e = torch.zeros(1, 1, 16, 16)
    e[0, 0, 2, 2] = 5.0  # a one-pixel speckle
    e[0, 0, 8:12, 8:12] = 3.0  # a 4 x 4 defect
    opened = det.open_map(e)
    assert opened[0, 0, 2, 2] == 0.0 and torch.equal(opened[0, 0, 8:12, 8:12], e[0, 0, 8:12, 8:12])
    assert torch.equal(opened, torch.maximum(opened, torch.zeros_like(e)))  # never below 0 here
    corner = torch.zeros(1, 1, 16, 16)
    corner[0, 0, :3, :3] = 2.0  # a 3 x 3 spot in the image corner survives: outside pixels take no part
    assert torch.equal(det.open_map(corner), corner)
    assert torch.equal(tiny_detector().open_map(e), e)  # open_px 0: the map as is
    val = [{"image": torch.rand(4, 3, 16, 16)}]
    norm = det.calibrate(val)
    with torch.no_grad():
        raw = det.raw_map(val[0]["image"])[0]
    expected = np.quantile(det.open_map(raw).flatten().numpy().astype(np.float64), det.detect.quantile)
    assert norm["quantile"] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        _, emap, *_ = det(val[0]["image"])
    assert torch.allclose(emap, det.normalise(det.open_map(raw)))
