"""ONNX export: the whole pipeline in one graph gives the scores and maps of the PyTorch detector."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import BOTTLE
from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.cli import main
from utad.data.images import load_image
from utad.detector import Detector

pytest.importorskip("onnxruntime")
from utad.export import OnnxDetector


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", str(trained_run), "--out", str(path)]) == 0
    return path


def _images(trained_run, n_bottle=6):
    demo = next((trained_run.parent / ".utad-cache").glob("demo-*"))
    files = sorted((demo / "test").rglob("*.png"))
    if BOTTLE.is_dir():
        files += sorted((BOTTLE / "test").rglob("*.png"))[::15][:n_bottle]
    size = Detector.load(trained_run).config.data.image_size
    return torch.from_numpy(np.stack([load_image(f, size) for f in files]).transpose(0, 3, 1, 2).copy())


def _exported_variant(trained_run, tmp_path, name, edit):
    """The trained run copied to ``tmp_path/name`` with ``edit(checkpoint)`` applied, exported: (PyTorch detector,
    ONNX detector, test images)."""
    run = tmp_path / name
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(".utad-cache"))
    ckpt = load_checkpoint(run)
    edit(ckpt)
    save_checkpoint(run, ckpt)
    assert main(["export", str(run), "--out", str(tmp_path / f"{name}.onnx")]) == 0
    return Detector.load(run), OnnxDetector(tmp_path / f"{name}.onnx"), _images(trained_run, n_bottle=2)[:4]


@pytest.mark.parametrize("batch", [1, 8])
def test_onnx_matches_pytorch_on_scores_and_maps(trained_run, exported, batch):
    det, onx = Detector.load(trained_run), OnnxDetector(exported)
    x = _images(trained_run)
    for i in range(0, len(x), batch):
        for p, q in zip(
            det.predict_tensor(x[i : i + batch]), onx.predict_tensor(x[i : i + batch]), strict=True
        ):
            assert q.score == pytest.approx(p.score, rel=1e-4)
            scale = np.abs(p.anomaly_map).max()
            assert np.abs(p.anomaly_map - q.anomaly_map).max() <= 1e-4 * scale
            assert np.allclose(p.reconstruction, q.reconstruction, atol=1e-5)
            assert np.array_equal(p.mask, q.mask) or np.abs(p.anomaly_map - 0.5).min() < 1e-4


def test_exported_model_records_what_it_is(trained_run, exported):
    onx = OnnxDetector(exported)
    det = Detector.load(trained_run)
    assert onx.norm == det.norm and onx.detect.alpha == det.detect.alpha
    assert onx.config.data.image_size == 32 and onx.backbone.name == det.backbone.name
    assert onx.outputs == ["score", "anomaly_map", "impression", "reconstruction", "naive_impression"]


def test_predict_with_onnx_writes_the_same_outputs(trained_run, exported, tmp_path):
    demo = next((trained_run.parent / ".utad-cache").glob("demo-*"))
    inputs = [str(demo / "test" / "good"), str(demo / "test" / "hole")]
    assert main(["predict", str(trained_run), *inputs, "--out", str(tmp_path / "pt"), "--quiet"]) == 0
    assert main(["predict", str(exported), *inputs, "--out", str(tmp_path / "onnx"), "--quiet"]) == 0
    a = list(csv.DictReader((tmp_path / "pt" / "scores.csv").open()))
    b = list(csv.DictReader((tmp_path / "onnx" / "scores.csv").open()))
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for r, s in zip(a, b, strict=True):
        assert float(s["score"]) == pytest.approx(float(r["score"]), rel=1e-4, abs=1e-6)
    info = json.loads((tmp_path / "onnx" / "predict.json").read_text())
    assert info["n_images"] == len(b) and info["backbone"]["name"] in ("efficientnet-lite0", "vgg19")


def test_export_refuses_to_clobber_and_bad_files_are_one_line(trained_run, exported, tmp_path, capsys):
    assert main(["export", str(trained_run), "--out", str(exported)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["predict", str(bad), str(exported), "--out", str(tmp_path / "p")]) == 2
    assert "not a loadable ONNX model" in capsys.readouterr().err


def test_onnx_keeps_the_map_opening_and_smoothing(trained_run, tmp_path):
    """``detect.open_px`` (max pooling) and ``detect.map_sigma`` (a Gaussian on e) are part of the graph: the
    exported map is the opened, smoothed one."""
    det, onx, x = _exported_variant(
        trained_run, tmp_path, "opened", lambda c: c["config"]["detect"].update(open_px=2, map_sigma=4.0)
    )
    plain = Detector.load(trained_run).predict_tensor(x)
    for p, q, r in zip(det.predict_tensor(x), onx.predict_tensor(x), plain, strict=True):
        assert q.score == pytest.approx(p.score, rel=1e-4)
        assert np.abs(p.anomaly_map - q.anomaly_map).max() <= 1e-4 * np.abs(p.anomaly_map).max()
        assert not np.allclose(p.anomaly_map, r.anomaly_map)  # the opening and smoothing changed the map


def test_onnx_exports_a_spatial_detail_code(trained_run, tmp_path):
    """``expert.detail_stride`` (s a map, AdaIN per cell, resized in the graph) exports and scores as in PyTorch.
    E_S's pooling has no weights, so the trained run's weights serve both codes; E_S's and the MLP's last layers
    are scaled up in both copies so that s visibly drives x^ after the tiny run's two epochs."""
    runs = {}
    for stride in (0, 8):
        run = runs[stride] = tmp_path / f"stride-{stride}"
        shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns(".utad-cache"))
        ckpt = load_checkpoint(run)
        ckpt["config"]["expert"]["detail_stride"] = stride
        last = max(k for k in ckpt["expert"] if k.startswith("mlp.net.") and k.endswith(".weight"))
        ckpt["expert"][last] = ckpt["expert"][last] * 50
        ckpt["expert"]["detail.net.2.conv.weight"] = ckpt["expert"]["detail.net.2.conv.weight"] * 50
        save_checkpoint(run, ckpt)
    assert main(["export", str(runs[8]), "--out", str(tmp_path / "m.onnx")]) == 0
    det, onx = Detector.load(runs[8]), OnnxDetector(tmp_path / "m.onnx")
    x = _images(trained_run, n_bottle=2)[:4]
    globl = Detector.load(runs[0]).predict_tensor(x)
    for p, q, r in zip(det.predict_tensor(x), onx.predict_tensor(x), globl, strict=True):
        assert q.score == pytest.approx(p.score, rel=1e-4)
        assert np.abs(p.anomaly_map - q.anomaly_map).max() <= 1e-4 * np.abs(p.anomaly_map).max()
        assert (
            np.abs(p.anomaly_map - r.anomaly_map).max() > 1e-3 * np.abs(p.anomaly_map).max()
        )  # 10x the tolerance above


@pytest.mark.parametrize("score", ["topk", "mean"])
def test_onnx_exports_the_whole_image_scores(trained_run, tmp_path, score):
    """``detect.score=topk`` (oneclass-fast's) and ``mean`` export and score as in PyTorch; topk's k is a constant
    of the graph (tracing gave the map's size as a tensor, and the export failed on every one-class run)."""
    det, onx, x = _exported_variant(
        trained_run, tmp_path, score, lambda c: c["config"]["detect"].update(score=score, top_k=0.01)
    )
    plain = Detector.load(trained_run).predict_tensor(x)
    for p, q, r in zip(det.predict_tensor(x), onx.predict_tensor(x), plain, strict=True):
        assert q.score == pytest.approx(p.score, rel=1e-4)
        assert q.score != pytest.approx(r.score, rel=1e-3)  # not the run's own max score
