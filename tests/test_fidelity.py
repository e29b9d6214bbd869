"""Fidelity of the second stage (utad.fidelity) and the stage-2 training levers (residual x^, crops, schedule)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utad import evaluate, fidelity, runs
from utad.data.bundle import build_data
from utad.detector import Detector
from utad.evaluate import run_detector
from utad.fidelity import (
    FidelityMeter,
    detail_drift_warning,
    low_fidelity_warning,
    measure_fidelity,
    still_rising_hint,
)
from utad.nets.expert_net import ExpertNet, ExpertOutput
from utad.nets.perceptual import PerceptualMeasurement, load_backbone
from utad.train import lr_at, random_crop


class BlurIE(nn.Module):
    """Stands in for IE-Net: the impression is a 5x5 box blur of x (blurry, like a real m)."""

    def impression(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), 5, stride=1)


class FixedExpert(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> ExpertOutput:
        if self.kind == "identity-like":
            x_hat = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
        else:  # constant grey: worse than the impression
            x_hat = torch.full_like(x, 0.5)
        return ExpertOutput(x_hat=x_hat, m_hat=None, s=x.new_zeros(x.shape[0], 1))


def _batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(4, 3, 32, 32, generator=g)} for _ in range(n)]


@pytest.mark.parametrize("backbone", ["pixel", "vgg19-random"])
def test_identity_like_expert_gains_and_constant_one_loses(backbone):
    torch.manual_seed(0)
    if backbone == "pixel":
        pm = PerceptualMeasurement(None, [])
    else:
        net, _ = load_backbone("vgg19", ["conv1_2", "conv2_2"], allow_random=True)
        pm = PerceptualMeasurement(net, ["conv1_2", "conv2_2"], layer_weights=[1.0, 2.0])
    good = measure_fidelity(BlurIE(), FixedExpert("identity-like"), pm, _batches(), "cpu")
    bad = measure_fidelity(BlurIE(), FixedExpert("constant"), pm, _batches(), "cpu")
    assert good["n_images"] == bad["n_images"] == 12
    assert good["phi_x_m"] == pytest.approx(bad["phi_x_m"])  # the same impressions
    assert good["gain"] > 1.5 and bad["gain"] < 1.0
    assert good["gain"] == pytest.approx(good["phi_x_m"] / good["phi_x_xhat"])
    assert good["ssim_x_xhat"] > good["ssim_x_m"] > bad["ssim_x_xhat"]


def test_meter_matches_a_hand_computation():
    pm = PerceptualMeasurement(None, [])
    x = torch.zeros(2, 3, 4, 4)
    m = torch.full_like(x, 0.4)
    x_hat = torch.full_like(x, 0.1)
    meter = FidelityMeter(pm, with_ssim=False)
    meter.update(x, m, x_hat)
    r = meter.result()
    assert r["phi_x_m"] == pytest.approx(0.4) and r["phi_x_xhat"] == pytest.approx(0.1)
    assert r["gain"] == pytest.approx(4.0)
    no_expert = FidelityMeter(pm, with_ssim=False)
    no_expert.update(x, m, None)
    assert no_expert.result()["gain"] is None and no_expert.result()["phi_x_xhat"] is None


def test_detail_swap_tells_an_expert_that_uses_s_from_one_that_ignores_it():
    """detail_swap: x^ decoded with another image's detail code. An expert whose AdaIN parameters do not depend
    on s (the MLP's last layer zeroed but for its bias) scores exactly 0; one whose parameters do, more."""
    torch.manual_seed(0)
    pm = PerceptualMeasurement(None, [])
    uses = ExpertNet(3, dim=8, downsample=2, res_blocks=1, mlp_dim=16).eval()
    ignores = ExpertNet(3, dim=8, downsample=2, res_blocks=1, mlp_dim=16).eval()
    ignores.load_state_dict(uses.state_dict())
    nn.init.zeros_(ignores.mlp.net[-1].weight)  # gamma, beta = the bias, whatever s is
    g = torch.Generator().manual_seed(1)
    # images that differ as a whole (each its own colour), so that their detail codes differ
    batches = [{"image": torch.rand(4, 3, 1, 1, generator=g) * torch.ones(4, 3, 32, 32)} for _ in range(3)]
    results = {}
    for name, net in (("uses", uses), ("ignores", ignores)):
        results[name] = measure_fidelity(BlurIE(), net, pm, batches, "cpu", with_ssim=False)
    assert results["ignores"]["detail_swap"] == 0.0
    assert results["uses"]["detail_swap"] > 1e-4
    for r in results.values():
        assert r["l1_xhat_m"] > 0 and r["n_images"] == 12
    assert "detail_swap" not in measure_fidelity(BlurIE(), FixedExpert("constant"), pm, _batches(), "cpu")
    one = [{"image": torch.rand(1, 3, 32, 32)}]  # a batch of one has no other code to swap in
    assert "detail_swap" not in measure_fidelity(BlurIE(), uses, pm, one, "cpu", with_ssim=False)


def test_masked_meter_measures_only_the_defect_pixels():
    """The defect gain: an x^ that restores x's details but keeps the defect out as m does scores 1 on the
    defect pixels; one that copies the defect too scores its normal gain there (a leak)."""
    pm = PerceptualMeasurement(None, [])
    x = torch.zeros(2, 3, 4, 4)
    m = torch.full_like(x, 0.4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2, :2] = 1  # 4 defect pixels in image 0, 2 in image 1
    mask[1, :, 0, :2] = 1
    keeps_defect_out = torch.where(mask.bool().expand_as(x), m, torch.full_like(x, 0.1))
    meter = FidelityMeter(pm, masked=True)
    meter.update(x, m, keeps_defect_out, mask)
    r = meter.result()
    assert r["n_images"] == 2 and r["n_pixels"] == 6
    assert r["phi_x_m"] == pytest.approx(0.4) and r["gain"] == pytest.approx(1.0)
    assert "ssim_x_xhat" not in r
    leaks = FidelityMeter(pm, masked=True)
    leaks.update(x, m, torch.full_like(x, 0.1), mask)
    assert leaks.result()["gain"] == pytest.approx(4.0)
    whole = FidelityMeter(pm, with_ssim=False)
    whole.update(x, m, keeps_defect_out)
    assert whole.result()["gain"] == pytest.approx(0.4 / (0.1 * 26 / 32 + 0.4 * 6 / 32))
    with pytest.raises(ValueError, match="needs the defect masks"):
        FidelityMeter(pm, masked=True).update(x, m, x)


def test_fidelity_of_a_trained_run_is_reported_and_a_failed_second_stage_warns(
    trained_run, tmp_path, monkeypatch
):
    """One evaluation of the trained run: the fidelity numbers, the learning curve's gain per epoch, and the
    warning's wiring into metrics.json and report.html (with every gain counted as low)."""
    monkeypatch.setattr(fidelity, "LOW_GAIN", 1e9)  # only decides whether the warning is written
    metrics = runs.test_run(trained_run, out=tmp_path, progress=False, report=True)
    f = metrics["fidelity"]
    assert f["n_images"] == metrics["n_test"] - metrics["n_anomalous"] > 0
    for key in ("phi_x_xhat", "phi_x_m", "gain"):
        assert math.isfinite(f[key]) and f[key] > 0, key
    assert -1 <= f["ssim_x_xhat"] <= 1 and -1 <= f["ssim_x_m"] <= 1
    assert 0 <= f["detail_swap"] < 1 and 0 < f["l1_xhat_m"] < 1  # how much x^ depends on the detail code
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["fidelity"] == f
    d = metrics["defect_fidelity"]  # the demo's drawn defects have masks
    assert d["n_images"] == metrics["n_anomalous"] and d["n_pixels"] > 0
    assert math.isfinite(d["gain"]) and d["gain"] == pytest.approx(d["phi_x_m"] / d["phi_x_xhat"])
    assert written["defect_fidelity"] == d
    history = json.loads((trained_run / "history.json").read_text())
    assert all(r["val_gain"] > 0 for r in history["expert"])  # learning curve: gain per epoch
    assert all(r["val_detail_swap"] >= 0 for r in history["expert"])
    assert all(r["val_phi_x_m"] > 0 for r in history["ienet"])
    assert (tmp_path / "fidelity.png").stat().st_size > 1000
    assert f"fidelity gain {f['gain']:.2f} on {f['n_images']} normal test images" in metrics["warning"]
    assert written["warning"] == metrics["warning"]
    html = (tmp_path / "report.html").read_text()
    assert "Expert-Net&#x27;s x^ is further from x" in html
    assert "the same on defect pixels (near 1: x^ keeps defects out)" in html
    assert (
        f"{f['detail_swap']:.4f} (|x^ - m| {f['l1_xhat_m']:.4f}; near 0: x^ ignores the detail code)" in html
    )


def test_low_gain_warns_with_the_number_and_what_to_try():
    text = low_fidelity_warning(0.34, "the validation images")
    assert "fidelity gain 0.34 on the validation images" in text and "expert.lambda_s_prior=0.1" in text
    assert low_fidelity_warning(0.93, "x") is None  # pill's cpu-fast expert: weak, not broken
    assert low_fidelity_warning(None, "x") is None and low_fidelity_warning(float("nan"), "x") is None


def test_residual_expert_starts_at_the_impression():
    torch.manual_seed(0)
    net = ExpertNet(dim=8, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=16, residual=True)
    x, m = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 0.9 + 0.05
    out = net(x, m)
    assert torch.allclose(out.x_hat, m, atol=1e-5)
    plain = ExpertNet(dim=8, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=16)
    assert not torch.allclose(plain(x, m).x_hat, m, atol=1e-2)


def test_crop_training_and_whole_image_inference_shapes():
    torch.manual_seed(0)
    x, m = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    xc, mc = random_crop(x, m, size=32)
    assert xc.shape == mc.shape == (3, 3, 32, 32)
    # the same window of x and m: find the crop of sample 0 in x and check m agrees there
    hits = [
        (t, l) for t in range(33) for l in range(33) if torch.equal(x[0, :, t : t + 32, l : l + 32], xc[0])
    ]
    assert len(hits) == 1 and torch.equal(
        m[0, :, hits[0][0] : hits[0][0] + 32, hits[0][1] : hits[0][1] + 32], mc[0]
    )
    net = ExpertNet(dim=8, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=16, residual=True)
    assert net(xc, mc).x_hat.shape == (3, 3, 32, 32)  # trained on crops ...
    net.eval()
    assert net(x, m).x_hat.shape == (3, 3, 64, 64)  # ... applied to whole images
    assert random_crop(x, m, size=64)[0] is x  # crop as large as the image: unchanged


def test_cosine_schedule_and_constant():
    assert lr_at(1e-3, "constant", 7, 10) == 1e-3
    assert lr_at(1e-3, "cosine", 0, 10) == pytest.approx(1e-3)
    assert lr_at(1e-3, "cosine", 5, 10) == pytest.approx(5e-4)
    assert lr_at(1e-3, "cosine", 9, 10) < 3e-5


def test_feature_loss_is_phi_without_upsampling():
    torch.manual_seed(0)
    net, _ = load_backbone("vgg19", ["conv1_2", "conv2_2"], allow_random=True)
    pm = PerceptualMeasurement(net, ["conv1_2", "conv2_2"], layer_weights=[0.5, 3.0])
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    fa, fb = pm.features(a), pm.features(b)
    expected = 0.5 * (fa[0] - fb[0]).abs().mean() + 3.0 * (fa[1] - fb[1]).abs().mean()
    assert float(pm.feature_loss(a, b)) == pytest.approx(float(expected), rel=1e-5)
    a.requires_grad_(True)
    pm.feature_loss(a, b).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_a_runaway_detail_term_warns_with_its_peak_and_epoch():
    rows = [
        {"epoch": 1, "s": 0.4},
        {"epoch": 2, "s": 36.2},
        {"epoch": 3, "s": 1.97},
    ]  # Fashion-MNIST 6's cell
    text = detail_drift_warning(rows)
    assert "reached 36.2 in stage-2 epoch 2" in text and "expert.lambda_s_prior=0.1" in text
    assert detail_drift_warning([{"epoch": 1, "s": 0.36}, {"epoch": 2, "s": 0.05}]) is None  # a sound cell
    assert detail_drift_warning([{"epoch": 1, "x": 0.1}]) is None  # without E_S: no detail term recorded
    assert detail_drift_warning([]) is None


def test_swapped_reconstruction_reuses_the_given_detail_codes():
    torch.manual_seed(0)
    net = ExpertNet(3, dim=8, downsample=2, res_blocks=1, mlp_dim=16).eval()
    x, m = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        s = net.detail_vector(x)
    expected = net.reconstruct(m, s.roll(1, dims=0))
    assert torch.equal(fidelity.swapped_reconstruction(net, x, m), expected)
    assert torch.equal(fidelity.swapped_reconstruction(net, x, m, s), expected)
    other = torch.randn_like(s)  # the codes given are the ones used: E_S is not run again
    assert torch.equal(
        fidelity.swapped_reconstruction(net, x, m, other), net.reconstruct(m, other.roll(1, dims=0))
    )


def test_defect_fidelity_from_the_native_masks_equals_reading_them_again(trained_run):
    """``utad test`` passes the masks it read at native resolution; resized here they give the same numbers as
    reading each mask from disk at the model's size."""
    det = Detector.load(trained_run, "cpu")
    data = build_data(det.config.data, det.config.seed, trained_run.parent / ".utad-cache")
    preds = run_detector(det, data.test, progress=False)
    native = evaluate.read_native_masks(data)
    assert native is not None
    read = evaluate.defect_fidelity(det, preds, data)
    given = evaluate.defect_fidelity(det, preds, data, native_masks=native[0])
    assert read["n_pixels"] > 0 and given == read


def rows_of(gains):
    return [{"epoch": i + 1, "val_gain": g} for i, g in enumerate(gains)]


def test_a_still_rising_validation_gain_hints_at_continuing_stage_2():
    # about pill seed 0's last ten stage-2 epochs with cpu-mvtec (there: 0.848 against 0.813)
    rising = rows_of([0.5] * 10 + [0.80, 0.83, 0.79, 0.82, 0.83, 0.83, 0.85, 0.83, 0.87, 0.86])
    text = still_rising_hint(rising, "runs/pill")
    assert "mean of the last 5 epochs 0.848, of the 5 before 0.814" in text
    assert "utad branch runs/pill --out runs/pill-e40 --keep-expert --set train.expert_epochs=40" in text
    cosine = still_rising_hint(rising, "runs/pill", "cosine")
    assert (
        "--keep-expert" not in cosine and "--set train.expert_epochs=40" in cosine
    )  # a fresh, longer stage 2
    assert still_rising_hint(rows_of([0.80, 0.81] * 5), "r") is None  # flat
    assert still_rising_hint(rows_of([0.9] * 5 + [0.8] * 5), "r") is None  # falling
    assert still_rising_hint(rows_of([0.1 * i for i in range(9)]), "r") is None  # under two windows
    assert still_rising_hint([{"epoch": i, "x": 0.1} for i in range(12)], "r") is None  # not recorded
