"""End to end through the CLI on the built-in demo data (tiny model, a couple of epochs)."""

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from conftest import FAST
from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.cli import main
from utad.detector import Detector


def test_train_writes_run(trained_run):
    for name in ("checkpoint.pt", "config.yaml", "history.json"):
        assert (trained_run / name).is_file()
    ckpt = load_checkpoint(trained_run)
    assert ckpt["stage"] == "done" and ckpt["norm"]["quantile"] > 0
    assert len(ckpt["history"]["ienet"]) == 2 and len(ckpt["history"]["expert"]) == 2
    assert ckpt["backbone"]["name"] in ("efficientnet-lite0", "vgg19")


def test_refuses_to_clobber_a_run(trained_run, capsys):
    code = main(["train", "--source", "demo", "--epochs", "1", "--out", str(trained_run), "--quiet", *FAST])
    assert code == 2 and "folder exists and is not empty" in capsys.readouterr().err


def test_test_command_writes_metrics(trained_run, capsys):
    assert main(["test", str(trained_run), "--quiet"]) == 0
    m = json.loads((trained_run / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "iou", "f1_max"):
        assert 0.0 <= m[key] <= 1.0, key
    # quality floors: this seed measured image AUROC 0.699, pixel AUROC 0.901 (32 px, 2 + 2 epochs)
    assert m["image_auroc"] > 0.65 and m["pixel_auroc"] > 0.85
    assert (
        m["backbone"]["name"] in ("efficientnet-lite0", "vgg19") and m["config"]["data"]["source"] == "demo"
    )
    assert m["eval_resolution"] == "64x64 (native)"
    assert (trained_run / "report.png").stat().st_size > 10_000
    assert "image_auroc" in capsys.readouterr().out
    rows = list(csv.DictReader((trained_run / "test_scores.csv").open()))
    assert len(rows) == m["n_test"] and sum(int(r["label"]) for r in rows) == m["n_anomalous"]
    assert {r["kind"] for r in rows if r["label"] == "0"} == {"good"}
    assert all(r["kind"] != "good" for r in rows if r["label"] == "1")
    assert all(r["path"].endswith(".png") and 0 <= float(r["score"]) for r in rows)
    alpha = m["alpha"]
    assert all(
        int(r["anomalous"]) == (float(r["score"]) > alpha)
        for r in rows
        if abs(float(r["score"]) - alpha) > 1e-5
    )
    auroc = roc_auc_score([int(r["label"]) for r in rows], [float(r["score"]) for r in rows])
    assert auroc == pytest.approx(m["image_auroc"], abs=1e-4)  # the same scores the metric was computed on


def test_test_with_other_measurement(trained_run, tmp_path, capsys):
    """Table 3 rows without retraining: pixel |x - x^| with the same networks, recalibrated."""
    out = tmp_path / "pixel"
    assert (
        main(
            [
                "test",
                str(trained_run),
                "--set",
                "pm.distance=pixel",
                "--set",
                "pm.terms=[x_xhat]",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["pm"]["terms"] == ["x_xhat"] and m["backbone"]["name"] == "none"
    assert 0 <= m["pixel_auroc"] <= 1
    capsys.readouterr()
    assert main(["test", str(trained_run), "--set", "pm.distance=pixel", "--quiet"]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert main(["test", str(trained_run), "--set", "train.ie_epochs=3", "--out", str(tmp_path / "x")]) == 2
    assert "only pm.*, detect.*" in capsys.readouterr().err


def test_test_on_synthetic_defects_of_the_validation_images(trained_run, tmp_path):
    """``utad test RUN --set data.evaluate_on=synthetic --out DIR``: the same networks and calibration on the
    run's validation images, each as it is and with each kind of drawn defect; the run's own metrics stay as they were."""
    own = (trained_run / "metrics.json").read_text() if (trained_run / "metrics.json").exists() else None
    out = tmp_path / "synthetic"
    assert (
        main(["test", str(trained_run), "--set", "data.evaluate_on=synthetic", "--out", str(out), "--quiet"])
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["dataset"].endswith("-synthetic")
        and m["n_anomalous"] >= 6
        and 3 * m["n_test"] == 4 * m["n_anomalous"]
    )
    assert m["eval_resolution"] == "32x32 (model)"
    for key in ("image_auroc", "pixel_auroc", "aupro", "iou", "iou_defect_mean"):
        assert 0.0 <= m[key] <= 1.0, key
    # broken down per drawn defect, each kind once per validation image
    per_kind = {r["type"]: r["n"] for r in m["per_defect_type"]}
    n = m["n_test"] - m["n_anomalous"]
    assert per_kind == {"good": n, "patch": n, "stain": n, "scratch": n}
    assert (out / "report.png").stat().st_size > 10_000
    if own is not None:
        assert (trained_run / "metrics.json").read_text() == own
    # subtler drawn defects (utad choose --synthetic-strength) are a test-time setting too
    subtle = tmp_path / "synthetic-03"
    args = ["--set", "data.evaluate_on=synthetic", "--set", "data.synthetic_strength=0.3"]
    assert main(["test", str(trained_run), *args, "--out", str(subtle), "--quiet", "--no-report"]) == 0
    s = json.loads((subtle / "metrics.json").read_text())
    assert s["config"]["data"]["synthetic_strength"] == 0.3 and s["n_test"] == m["n_test"]
    assert s["normalisation"]["quantile"] == m["normalisation"]["quantile"]  # the same calibration


def test_predict_command(trained_run, tmp_path, capsys):
    demo_data = next((trained_run.parent / ".utad-cache").glob("demo-*"))
    images = [demo_data / "test" / "color" / "001.png", demo_data / "test" / "good"]
    out = tmp_path / "pred"
    assert main(["predict", str(trained_run), *map(str, images), "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    n_good = len(list((demo_data / "test" / "good").glob("*.png")))
    assert len(rows) == 1 + n_good
    for sub in ("maps", "masks", "overlays"):
        assert len(list((out / sub).glob("*.png"))) == len(rows), sub
    info = json.loads((out / "predict.json").read_text())
    assert info["n_images"] == len(rows) and info["backbone"]["name"] in ("efficientnet-lite0", "vgg19")
    assert all(float(r["score"]) >= 0 for r in rows)
    # a known defect (measured 0.50 against at most 0.46 for the good images) scores above every good image
    defect = next(float(r["score"]) for r in rows if "color" in r["path"])
    assert all(defect > float(r["score"]) for r in rows if "good" in r["path"])
    code = main(["predict", str(trained_run), str(tmp_path / "missing.png"), "--out", str(tmp_path / "p2")])
    assert code == 2 and "missing.png: file or folder not found" in capsys.readouterr().err


def test_checkpoint_round_trip_identical_outputs(trained_run, tmp_path):
    det = Detector.load(trained_run)
    x = torch.rand(2, 3, 32, 32)
    a = det.predict_tensor(x)
    save_checkpoint(tmp_path / "copy", load_checkpoint(trained_run))
    b = Detector.load(tmp_path / "copy").predict_tensor(x)
    for p, q in zip(a, b):
        assert p.score == q.score and np.array_equal(p.anomaly_map, q.anomaly_map)
        assert np.array_equal(p.reconstruction, q.reconstruction) and np.array_equal(
            p.impression, q.impression
        )


def test_seed_makes_cpu_runs_repeatable(trained_run, repeat_run):
    h1 = json.loads((trained_run / "history.json").read_text())
    h2 = json.loads((repeat_run / "history.json").read_text())
    assert [r["total"] for r in h1["ienet"]] == [r["total"] for r in h2["ienet"]]
    assert [r["total"] for r in h1["expert"]] == [r["total"] for r in h2["expert"]]
    a, b = load_checkpoint(trained_run), load_checkpoint(repeat_run)
    for net in ("ienet", "expert"):
        assert all(torch.equal(v, b[net][k]) for k, v in a[net].items()), net


@pytest.mark.parametrize(
    "switch",
    [
        ["expert.enabled=false"],
        ["expert.use_naive=false"],
        ["expert.use_detail=false"],
        ["ienet.use_info=false"],
    ],
)
def test_ablation_switches_step_and_predict(switch):
    """Each ablation of Table 2 builds, takes one optimisation step of each stage, and gives a detector with the
    right intermediates and PM terms (one step, not a training run: the training loop is shared)."""
    from utad.config import load_config
    from utad.losses import expert_loss, ie_loss
    from utad.model import build_expert, build_ienet, build_pm

    torch.manual_seed(0)
    cfg = load_config("cpu-fast", [*FAST[1::2], *switch])
    ienet, expert = build_ienet(cfg), build_expert(cfg)
    x = torch.rand(4, 3, 32, 32)
    loss, parts, _ = ie_loss(ienet, x, cfg.ienet.lambda_kl, cfg.ienet.lambda_rec, cfg.ienet.use_info)
    loss.backward()
    assert ("info" in parts) == cfg.ienet.use_info
    ienet.eval()
    if expert is not None:
        e = cfg.expert
        loss, parts, _ = expert_loss(
            expert, x, ienet.impression(x).detach(), e.lambda_x, e.lambda_m, e.lambda_s
        )
        loss.backward()
        assert ("m" in parts) == e.use_naive and ("s" in parts) == e.use_detail
        expert.eval()
    cfg.pm.allow_random = True
    pm, _ = build_pm(cfg)
    det = Detector(ienet, expert, pm, cfg.detect, image_size=32)
    det.calibrate([{"image": torch.rand(2, 3, 32, 32)}])
    (p,) = det.predict_tensor(torch.rand(1, 3, 32, 32))
    assert p.impression is not None and np.isfinite(p.anomaly_map).all()
    if switch == ["expert.enabled=false"]:
        assert p.reconstruction is None and p.naive_impression is None and det.pm.terms == ("x_m",)
    elif switch == ["expert.use_naive=false"]:
        assert p.reconstruction is not None and p.naive_impression is None and "m_mhat" not in det.pm.terms
    else:
        assert p.reconstruction is not None and p.naive_impression is not None and len(det.pm.terms) == 3


def test_missing_vgg_weights_fail_before_the_run_folder_is_made(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    out = tmp_path / "run"
    assert (
        main(["train", "--source", "demo", "--backbone", "vgg19", "--out", str(out), "--quiet", *FAST]) == 2
    )
    assert "VGG-19 weights not found" in capsys.readouterr().err and not out.exists()


def test_run_folder_keeps_a_log_of_what_ran(trained_run, tmp_path):
    text = (trained_run / "log.txt").read_text()
    assert "=== train " in text and "command: " in text and "versions: utad " in text and "torch " in text
    assert "method utad, data demo" in text and "PM backbone " in text and "=== train finished after " in text
    out = tmp_path / "t"
    assert main(["test", str(trained_run), "--out", str(out), "--quiet", "--no-report"]) == 0
    log = (out / "log.txt").read_text()
    assert "=== test " in log and "=== test finished after " in log
