"""The baselines (utad.methods): their building blocks against hand computations, a perfect-separation toy case
for each, and every method through the CLI on the demo data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import save
from utad.cli import main
from utad.config import load_config
from utad.detector import Detector
from utad.methods.gaussian import fit_gaussians
from utad.methods.knn import greedy_coreset, nearest_distance
from utad.nets.autoencoder import ConvAutoencoder
from utad.ssim import ssim_loss, ssim_map, ssim_window
from utad.train import train

# ---------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------


def test_greedy_coreset_on_a_hand_checkable_set():
    """Four corners far apart and a tight cluster near the origin: after the first (random) point, greedy
    farthest-point selection must take the remaining corners before any second point of the cluster."""
    corners = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    cluster = torch.tensor([[0.1, 0.1], [0.2, 0.0], [0.0, 0.2]])
    points = torch.cat([corners, cluster])
    for seed in range(5):
        chosen = greedy_coreset(points, 4, projection=None, seed=seed).tolist()
        first = chosen[0]
        if first < 4:  # started at a corner: the other three corners follow
            assert sorted(chosen) == [0, 1, 2, 3]
        else:  # started in the cluster: the three far corners, never corner 0 (0.1-0.2 from the cluster)
            assert sorted(chosen[1:]) == [1, 2, 3]


def test_greedy_coreset_keeps_the_farthest_point_property():
    points = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    chosen = greedy_coreset(points, 20, projection=None, seed=3)
    assert len(set(chosen.tolist())) == 20
    for j in range(1, 20):
        d = torch.cdist(points, points[chosen[:j]]).amin(dim=1)
        assert d[chosen[j]] == pytest.approx(float(d.max()), rel=1e-4)


def test_greedy_coreset_with_projection_returns_distinct_indices():
    points = torch.randn(500, 64, generator=torch.Generator().manual_seed(1))
    chosen = greedy_coreset(points, 50, projection=8, seed=0)
    assert len(set(chosen.tolist())) == 50 and chosen.max() < 500


@pytest.mark.parametrize("k", [1, 3])
def test_nearest_distance_matches_brute_force(k):
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(37, 6, generator=g), torch.randn(50, 6, generator=g)
    want = torch.cdist(q, bank).topk(k, largest=False).values.mean(1)
    torch.testing.assert_close(nearest_distance(q, bank, k, chunk=5), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nearest_distance(q, bank, k), want, atol=1e-4, rtol=1e-4)


def test_fit_gaussians_matches_numpy():
    feats = torch.randn(12, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    mean, cov_inv = fit_gaussians(feats, eps=0.01)
    x = feats.numpy()[:, :, 1, 0]  # position (1, 0) is row-major index 2
    np.testing.assert_allclose(mean[2].numpy(), x.mean(0), atol=1e-5)
    cov = np.cov(x, rowvar=False) + 0.01 * np.eye(3)
    np.testing.assert_allclose(cov_inv[2].numpy(), np.linalg.inv(cov), rtol=1e-4, atol=1e-4)


def test_ssim_of_identical_images_is_one_and_loss_zero():
    a = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ssim_map(a, a), torch.ones(2, 1, 24, 24))
    assert float(ssim_loss(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_ssim_against_a_hand_computation():
    """Uniform 3 x 3 window at the centre pixel of two 5 x 5 grey images, computed with numpy."""
    g = np.random.default_rng(0)
    a, b = g.random((5, 5)), g.random((5, 5))
    pa, pb = a[1:4, 1:4], b[1:4, 1:4]
    mu_a, mu_b = pa.mean(), pb.mean()
    var_a, var_b = ((pa - mu_a) ** 2).mean(), ((pb - mu_b) ** 2).mean()
    cov = ((pa - mu_a) * (pb - mu_b)).mean()
    c1, c2 = 0.01**2, 0.03**2
    want = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    got = ssim_map(torch.tensor(a)[None, None].float(), torch.tensor(b)[None, None].float(), 3, 0.0)
    assert float(got[0, 0, 2, 2]) == pytest.approx(want, rel=1e-4)
    assert ssim_window(11, 1.5).sum() == pytest.approx(1.0)


def test_ssim_matches_scikit_image_inside_the_border():
    from skimage.metrics import structural_similarity

    g = np.random.default_rng(1)
    a = g.random((40, 40)).astype(np.float32)
    b = np.clip(a + 0.2 * g.standard_normal((40, 40)), 0, 1).astype(np.float32)
    _, full = structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    ours = ssim_map(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None], 11, 1.5)[0, 0].numpy()
    np.testing.assert_allclose(ours[6:-6, 6:-6], full[6:-6, 6:-6], atol=1e-4)


def test_autoencoder_shapes_and_capacity():
    """Bergmann's layout: the code is 1 x 1 x latent; width w scales the parameters about as w^2 (Table 4's
    AE-64 / AE-128 / AE-256 measure 3.37 M / 11.85 M / 44.07 M at 128 px RGB; the paper: 2.98 / 11.89 / 47.47)."""
    net = ConvAutoencoder(128, 3, width=32, latent_dim=100)
    x = torch.rand(2, 3, 128, 128)
    assert net.encoder(x).shape == (2, 100, 1, 1)
    y = net(x).detach()
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    counts = {w: sum(p.numel() for p in ConvAutoencoder(128, 3, w).parameters()) for w in (64, 128, 256)}
    assert counts[64] == 3_374_951 and counts[128] == 11_845_223 and counts[256] == 44_072_039
    assert ConvAutoencoder(64, 1, 8)(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


# ---------------------------------------------------------------------------------------------------------
# each method separates a perfect toy case
# ---------------------------------------------------------------------------------------------------------


def make_stripes(root: Path, n_train: int = 16, size: int = 64) -> Path:
    """Normal: horizontal stripes with mild noise. Anomalous: the same with a bright 14 x 14 square."""
    g = np.random.default_rng(0)
    rows = (np.arange(size)[:, None] // 4 % 2) * 0.5 + 0.2

    def normal() -> np.ndarray:
        img = np.repeat(rows, size, axis=1)[..., None].repeat(3, axis=2) + 0.03 * g.standard_normal(
            (size, size, 3)
        )
        return np.clip(img, 0, 1)

    def u8(a: np.ndarray) -> np.ndarray:
        return (a * 255).astype(np.uint8)

    for i in range(n_train):
        save(root / "train" / "good" / f"{i:03d}.png", u8(normal()))
    for i in range(4):
        save(root / "test" / "good" / f"{i:03d}.png", u8(normal()))
        img, mask = normal(), np.zeros((size, size), np.uint8)
        t, left = g.integers(4, size - 18, 2)
        img[t : t + 14, left : left + 14] = (1.0, 0.1, 0.1)
        mask[t : t + 14, left : left + 14] = 255
        save(root / "test" / "square" / f"{i:03d}.png", u8(img))
        save(root / "ground_truth" / "square" / f"{i:03d}_mask.png", mask)
    return root


TOY = {
    "ae-l2": ["ae.epochs=30", "ae.width=8", "ae.latent_dim=16", "ae.batch_size=4", "ae.lr=0.002"],
    "ae-ssim": ["ae.epochs=30", "ae.width=8", "ae.latent_dim=16", "ae.batch_size=4", "ae.lr=0.002"],
    "feature-knn": ["feature.coreset_ratio=0.25"],
    "feature-gaussian": ["feature.channels=32"],
}


@pytest.mark.parametrize("method", sorted(TOY))
def test_each_method_separates_a_perfect_toy_case(method, tmp_path):
    from utad.data.bundle import build_data
    from utad.evaluate import evaluate

    root = make_stripes(tmp_path / "stripes")
    overrides = [f"data.path={root}", "data.source=mvtec", "data.image_size=64", "data.val_fraction=0.25"]
    cfg = load_config(method, overrides + TOY[method])
    train(cfg, tmp_path / "run", progress=False)
    det = Detector.load(tmp_path / "run")
    assert det.method == method and det.config.method == method
    data = build_data(det.config.data, det.config.seed, tmp_path)
    metrics, preds = evaluate(det, data, 4, progress=False)
    assert metrics["image_auroc"] == 1.0
    assert metrics["pixel_auroc"] > 0.9
    p = preds[-1]
    assert p.anomaly_map.shape == (64, 64) and p.mask.dtype == bool
    np.testing.assert_array_equal(p.mask, p.anomaly_map > det.detect.alpha)
    if method.startswith("ae"):
        assert p.reconstruction.shape == (64, 64, 3) and p.impression is None
    else:
        assert p.reconstruction is None and p.impression is None


# ---------------------------------------------------------------------------------------------------------
# CLI end to end on the demo data
# ---------------------------------------------------------------------------------------------------------

CLI_TINY = {
    "ae-l2": ["--set", "ae.width=8", "--set", "ae.epochs=2", "--set", "data.image_size=64"],
    "ae-ssim": ["--set", "ae.width=8", "--set", "ae.epochs=2", "--set", "data.image_size=64"],
    "feature-knn": ["--set", "data.image_size=64"],
    "feature-gaussian": ["--set", "data.image_size=64"],
}


@pytest.mark.parametrize("method", sorted(CLI_TINY))
def test_every_method_through_the_cli(method, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--method", method, "--source", "demo", "--set", "data.demo_size=64"]
    assert main([*args, *CLI_TINY[method], "--out", str(run), "--quiet"]) == 0
    assert main(["test", str(run), "--quiet"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["method"] == method and m["parameters"] > 0 and m["train_seconds"] > 0
    assert 0.0 <= m["pixel_auroc"] <= 1.0 and m["fidelity"] is None
    if method.startswith("feature"):
        assert m["backbone"]["name"] == "efficientnet-lite0"
        assert m["image_auroc"] > 0.8  # pretrained features find the demo's defects at once
    assert (run / "report.png").stat().st_size > 10_000
    out = tmp_path / "pred"
    demo_bad = sorted((tmp_path / ".utad-cache").glob("demo-*/test/*"))
    assert main(["predict", str(run), *map(str, demo_bad[:1]), "--out", str(out), "--quiet"]) == 0
    assert (out / "scores.csv").read_text().count("\n") > 1
    one_bad = sorted(demo_bad[0].glob("*.png"))[0]  # one image: explaining is the slow part of this test
    assert main(["explain", str(run), str(one_bad), "--out", str(tmp_path / "ex")]) == 0  # no m, no codes
    info = json.loads(next((tmp_path / "ex").glob("*.json")).read_text())
    assert info["term_share"] == {} and info["nearest_normal"] == [] and 0 <= info["score"]
    capsys.readouterr()
    pytest.importorskip("onnxruntime")  # export: the same scores and maps from ONNX Runtime, batch 3 then 1
    from utad.export import OnnxDetector

    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    det, onx = Detector.load(run), OnnxDetector(tmp_path / "m.onnx")
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for chunk in (x[:3], x[3:]):
        for p, q in zip(det.predict_tensor(chunk), onx.predict_tensor(chunk), strict=True):
            assert q.score == pytest.approx(p.score, rel=1e-4)
            assert np.abs(p.anomaly_map - q.anomaly_map).max() <= 1e-4 * np.abs(p.anomaly_map).max()


def test_method_preset_and_errors(capsys):
    cfg = load_config("feature-knn")
    assert cfg.method == "feature-knn" and cfg.data.image_size == 256
    assert load_config("ae-ssim").ae.ssim_window == 11
    code = main(["train", "--method", "feature-knn", "--set", "feature.coreset_ratio=2", "--out", "x"])
    assert code == 2 and "feature.coreset_ratio: must be in (0, 1]" in capsys.readouterr().err
