"""utad explain, predict --explain and the IE-Net code analysis (t-SNE) on the tiny trained demo run."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from utad.cli import main
from utad.data.images import load_image, load_mask
from utad.detector import Detector
from utad.explain import term_maps


def _demo(trained_run):
    return next((trained_run.parent / ".utad-cache").glob("demo-*"))


def _not_blank(path, min_size=(400, 300)):
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert img.shape[1] >= min_size[0] and img.shape[0] >= min_size[1]
    assert img.std() > 10  # a real picture, not an empty canvas


def test_explain_writes_the_panel_and_its_numbers(trained_run, tmp_path, capsys):
    demo = _demo(trained_run)
    bad, good = demo / "test" / "color" / "001.png", demo / "test" / "good" / "000.png"
    assert main(["explain", str(trained_run), str(bad), str(good), "--out", str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    assert "nearest normal:" in out and "terms x_xhat" in out
    for name in ("001", "000"):  # output names are the inputs' stems (folder added only on a clash)
        _not_blank(tmp_path / "ex" / f"{name}.png")
    info = json.loads((tmp_path / "ex" / "001.json").read_text())
    assert sum(info["term_share"].values()) == pytest.approx(1.0)
    near = info["nearest_normal"]
    assert len(near) == 3 and [n["distance"] for n in near] == sorted(n["distance"] for n in near)
    assert all("/train/good/" in n["path"] for n in near)  # anomaly-free training images only
    # the known synthetic defect: e's maximum lies inside its ground-truth mask (4 px tolerance at 32 px)
    mask = load_mask(demo / "ground_truth" / "color" / "001_mask.png", 32)
    r, c = info["max_at"]
    assert mask[max(0, r - 4) : r + 5, max(0, c - 4) : c + 5].any()


def test_the_three_terms_add_up_to_the_anomaly_map(trained_run):
    det = Detector.load(trained_run)
    demo = _demo(trained_run)
    x = torch.from_numpy(load_image(demo / "test" / "hole" / "000.png", 32).transpose(2, 0, 1).copy())[None]
    terms = term_maps(det, x)
    assert set(terms) == {"x_xhat", "m_mhat", "x_m"}
    e = det.predict_tensor(x)[0].anomaly_map
    np.testing.assert_allclose(sum(terms.values())[0], e, rtol=1e-4, atol=1e-5)


def test_predict_explain_writes_one_panel_per_image(trained_run, tmp_path):
    demo = _demo(trained_run)
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(trained_run),
                str(demo / "test" / "hole"),
                "--out",
                str(out),
                "--explain",
                "--quiet",
            ]
        )
        == 0
    )
    n = len(list((demo / "test" / "hole").glob("*.png")))
    assert (
        len(list((out / "explain").glob("*.png"))) == n and len(list((out / "explain").glob("*.json"))) == n
    )


def test_test_writes_the_code_analysis(trained_run, tmp_path):
    assert (
        main(["test", str(trained_run), "--out", str(tmp_path / "t"), "--set", "detect.alpha=0.5", "--quiet"])
        == 0
    )
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    a = m["code_analysis"]
    assert 0.0 <= a["code_knn_auroc"] <= 1.0 and a["n_test_codes"] == m["n_test"]
    rows = list(csv.DictReader((tmp_path / "t" / "tsne.csv").open()))
    assert len(rows) == a["n_train_codes"] + a["n_test_codes"] == a["n_tsne_points"]  # small: every code
    assert {r["group"] for r in rows} >= {"train", "test good", "test color"}
    _not_blank(tmp_path / "t" / "tsne.png")
