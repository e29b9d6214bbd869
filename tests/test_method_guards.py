"""Tests that catch a broken method: each pins one part of Eq. 4-9 to a hand computation, so that a swapped
input, a missing normalisation or a dropped detach fails here (see the reviewers' list in the tests issue)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from utad.config import DetectConfig, load_config
from utad.data.bundle import DataBundle
from utad.data.datasets import SampleDataset
from utad.data.samples import list_mvtec
from utad.detector import Detector, Prediction
from utad.evaluate import evaluate
from utad.losses import expert_loss, ie_loss
from utad.nets.backbones import IMAGENET_MEAN, IMAGENET_STD
from utad.nets.expert_net import ExpertNet, ExpertOutput
from utad.nets.ie_net import IENet
from utad.nets.perceptual import PerceptualMeasurement, load_backbone

# ---- stand-in networks with known outputs ------------------------------------------------------------------


class KnownIE(nn.Module):
    """m = 0.3 + 0.2 * x (a fixed, recognisable impression)."""

    def impression(self, x):
        return 0.3 + 0.2 * x


class KnownExpert(nn.Module):
    """x^ = 0.9 * x + 0.05 (close to x), m^ = 0.5 * x + 0.1 (another recognisable image)."""

    def forward(self, x, m):
        return ExpertOutput(x_hat=0.9 * x + 0.05, m_hat=0.5 * x + 0.1, s=x.new_zeros(x.shape[0], 2))


def _phi(net, layers, weights, a, b):
    """phi(a, b) by hand: ImageNet-normalised inputs, L1 over channels (mean), bilinear to input size."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    fa, fb = net((a - mean) / std, layers), net((b - mean) / std, layers)
    out = 0
    for f, g, w in zip(fa, fb, weights, strict=True):
        d = (f - g).abs().mean(dim=1, keepdim=True)
        out = out + w * F.interpolate(d, size=a.shape[-2:], mode="bilinear", align_corners=False)
    return out


def test_pm_map_equals_the_hand_computation_of_all_three_terms():
    torch.manual_seed(0)
    layers, weights = ["conv1_2", "conv2_2"], [0.7, 2.5]
    net, _ = load_backbone("vgg19", layers, allow_random=True)
    pm = PerceptualMeasurement(net, layers, weights)
    det = Detector(KnownIE(), KnownExpert(), pm, DetectConfig(), image_size=32)
    x = torch.rand(2, 3, 32, 32)
    e, m, x_hat, m_hat = det.raw_map(x)
    m_, xh_, mh_ = 0.3 + 0.2 * x, 0.9 * x + 0.05, 0.5 * x + 0.1
    assert torch.allclose(m, m_) and torch.allclose(x_hat, xh_) and torch.allclose(m_hat, mh_)
    with torch.no_grad():
        expected = sum(_phi(net, layers, weights, a, b) for a, b in ((x, xh_), (m_, mh_), (x, m_)))
    assert torch.allclose(e, expected, rtol=1e-4, atol=1e-5)
    terms = pm.term_maps(x, m_, xh_, mh_)
    with torch.no_grad():
        assert torch.allclose(terms["m_mhat"], _phi(net, layers, weights, m_, mh_), rtol=1e-4, atol=1e-5)
        assert torch.allclose(terms["x_xhat"], _phi(net, layers, weights, x, xh_), rtol=1e-4, atol=1e-5)


def test_feature_loss_by_hand_with_layer_weights_and_gradients():
    """The optional stage-2 perceptual loss: sum_l lambda_l * mean |f_l(a) - f_l(b)| (no upsampling), with
    gradients into a, and plain pixel L1 without a backbone."""
    torch.manual_seed(0)
    layers, weights = ["conv1_2", "conv2_2"], [0.7, 2.5]
    net, _ = load_backbone("vgg19", layers, allow_random=True)
    pm = PerceptualMeasurement(net, layers, weights)
    a = torch.rand(2, 3, 16, 16, requires_grad=True)
    b = torch.rand(2, 3, 16, 16)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        fa, fb = net((a - mean) / std, layers), net((b - mean) / std, layers)
        expected = sum(w * (f - g).abs().mean() for f, g, w in zip(fa, fb, weights, strict=True))
    loss = pm.feature_loss(a, b)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    pixel = PerceptualMeasurement(None, [], terms=["x_xhat"])
    assert pixel.feature_loss(a, b).item() == pytest.approx((a - b).abs().mean().item(), rel=1e-6)


def test_detector_map_is_raw_times_half_over_the_calibrated_quantile_and_score_is_smoothed_max():
    torch.manual_seed(0)
    pm = PerceptualMeasurement(None, [])  # pixel L1: the raw map is known exactly
    det = Detector(KnownIE(), KnownExpert(), pm, DetectConfig(quantile=0.9, smooth_sigma=8.0), image_size=64)
    calib = [{"image": torch.rand(3, 3, 64, 64)}]
    det.calibrate(calib)
    raw_calib = torch.cat([det.raw_map(b["image"])[0] for b in calib]).flatten().double().numpy()
    q = np.quantile(raw_calib, 0.9)
    assert det.norm["quantile"] == pytest.approx(q)
    x = torch.rand(2, 3, 64, 64)  # another batch: the calibration of the first is applied, not recomputed
    x[1, :, 10:12, 5:40] = 1.0  # an elongated bright defect: smoothing along the wrong axis would show
    with torch.no_grad():
        score, e, *_ = det(x)
        raw = det.raw_map(x)[0]
    assert torch.allclose(e, raw * 0.5 / q, rtol=1e-5)
    sigma = 8.0 * 64 / 256
    for i in range(2):
        smoothed = gaussian_filter(e[i, 0].double().numpy(), sigma, mode="mirror", truncate=4.0)
        assert float(score[i]) == pytest.approx(smoothed.max(), rel=1e-4)
        assert float(score[i]) < float(e[i].max())  # the kernel matters at this size


def test_loaded_detector_uses_the_stored_calibration(tmp_path):
    """A checkpoint written by hand (untrained tiny networks, a recognisable quantile): Detector.load must apply
    the stored statistics, not recalibrate or ignore them."""
    from detector_runs import STORED_NORM, hand_made_run

    ienet, _ = hand_made_run(tmp_path)
    det = Detector.load(tmp_path)
    assert det.norm == STORED_NORM
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        _, e, *_ = det(x)
        raw = det.raw_map(x)[0]
    assert torch.allclose(e, raw * det.detect.norm_value / STORED_NORM["quantile"], rtol=1e-5)
    for name, w in ienet.state_dict().items():  # and the stored weights, not fresh ones
        assert torch.equal(det.ienet.state_dict()[name], w), name


def test_reconstruction_sees_x_only_through_the_detail_code():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=2, res_blocks=1, detail_dim=3, mlp_dim=8, use_detail=False).eval()
    x1, x2, m = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x1, m).x_hat, net(x2, m).x_hat)  # without E_S, x does not reach x^
        assert not torch.allclose(net(x1, m).x_hat, net(x1, torch.rand_like(m)).x_hat)  # m does
        with_detail = ExpertNet(dim=4, downsample=2, res_blocks=1, detail_dim=3, mlp_dim=8).eval()
        s = with_detail.detail_vector(x1)
        assert torch.equal(with_detail(x1, m).x_hat, with_detail.reconstruct(m, s))


def test_mi_term_pairs_positives_and_shuffled_negatives():
    """A critic that recognises matched pairs (the unshuffled feature map) drives L_info to ~0; swapped pairs or
    negatives without the batch shuffle would cost ~20."""
    torch.manual_seed(0)
    net = IENet(16, blocks=2, width=4, max_width=16, z_dim=4, mlp_hidden=8, t_hidden=8, fc_channels=4)
    seen = {}

    real_forward = net.forward

    def remember(x):
        out = real_forward(x)
        seen["g"] = out.g
        return out

    def critic(g, z):
        matched = g is seen["g"]  # x with its own code; a shuffled x~ is a new tensor
        return torch.full((g.shape[0], g.shape[2] * g.shape[3]), 10.0 if matched else -10.0)

    net.forward, net.critic = remember, critic
    _, parts, _ = ie_loss(net, torch.rand(4, 3, 16, 16), lambda_kl=0.0, lambda_rec=0.0)
    assert parts["info"] < 1e-3


def test_detail_target_is_detached():
    """|E_S(x^) - s|: gradients reach E_S only through E_S(x^); s is a fixed target."""
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8, use_naive=False)
    x, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    torch.manual_seed(1)
    total, _, _ = expert_loss(net, x, m, lambda_x=0.0, lambda_m=0.0, lambda_s=1.0)
    total.backward()
    got = [p.grad.clone() for p in net.detail.parameters()]
    net.zero_grad()
    s = net.detail_vector(x)
    x_hat = net.reconstruct(m, s)
    (net.detail_vector(x_hat) - s.detach()).abs().mean().backward()
    for g, p in zip(got, net.detail.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-7)


def test_paper_presets_hold_the_papers_values():
    mv = load_config("paper-mvtec")
    assert mv.pm.layers == ["conv1_2", "conv2_2", "conv3_4"] and mv.pm.backbone == "vgg19"
    assert mv.pm.layer_weights in (None, [1.0, 1.0, 1.0]) and mv.detect.alpha == 0.5
    assert mv.pm.terms == ["x_xhat", "m_mhat", "x_m"] and mv.ienet.lambda_kl > 0 and mv.ienet.use_info
    assert (mv.data.image_size, mv.ienet.blocks, mv.expert.res_blocks) == (256, 4, 2)
    assert (mv.train.ie_epochs, mv.train.batch_size, mv.train.ie_optimizer) == (200, 4, "sgd")
    assert (mv.train.ie_lr, mv.train.ie_momentum, mv.train.expert_lr) == (1e-3, 0.9, 1e-3)
    assert not mv.expert.residual and mv.expert.lambda_perceptual == 0 and mv.train.lr_schedule == "constant"
    oc = load_config("paper-oneclass")
    assert (oc.data.image_size, oc.ienet.blocks, oc.expert.res_blocks) == (64, 3, 1)
    assert oc.ienet.lambda_kl > 0 and oc.pm.backbone == "vgg19" and oc.detect.alpha == 0.5


class ScoreByType:
    """Stands in for a detector: anomalous files score 1, good ones 0; maps light up the mask area."""

    def __init__(self):
        self.detect = DetectConfig()
        self.pm = PerceptualMeasurement(None, [])
        self.kernel = torch.ones(1)

    def predict_tensor(self, x, paths):
        out = []
        for i, p in enumerate(paths):
            bad = "/good/" not in p
            amap = np.zeros(x.shape[-2:], np.float32)
            if bad:
                amap[8:16, 8:20] = 1.0
            img = x[i].permute(1, 2, 0).numpy()
            out.append(Prediction(p, float(bad), bad, amap, amap > 0.5, img, img, img, None))
        return out


def test_evaluate_keeps_labels_the_right_way_round(tiny_mvtec):
    listing = list_mvtec(tiny_mvtec)
    test = SampleDataset(listing.test, 32)
    data = DataBundle("widget", test, test, test, True, listing.test)
    metrics, _ = evaluate(ScoreByType(), data, progress=False)
    assert metrics["image_auroc"] == 1.0 and metrics["f1_max"] == 1.0
    assert metrics["pixel_auroc"] == 1.0 and metrics["iou"] == 1.0
