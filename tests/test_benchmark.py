"""utad benchmark: a tiny grid end to end (demo data and a one-class slice of MNIST), resuming, refusing
changed cells, and the table writer against fixed expected Markdown."""

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from conftest import MNIST
from utad import benchmark
from utad.cli import main
from utad.data.oneclass import load_mnist_like
from utad.errors import UtadError
from utad.tables import render

TINY = [
    "data.image_size=32",
    "data.demo_size=64",
    "ienet.width=4",
    "ienet.max_width=32",
    "expert.dim=8",
    "train.batch_size=8",
    "train.ie_epochs=1",
    "train.expert_epochs=1",
]


def write_grid(path: Path, extra_set: list[str] | None = None) -> Path:
    mnist = ["data.source=mnist", f"data.path={MNIST}", "data.masks=false"]
    mnist += ["data.limit_train=48", "data.limit_test=60"]
    grid = {
        "name": "tiny",
        "title": "Tiny grid",
        "table": "compare",
        "set": ["seed=0", *TINY, *(extra_set or [])],
        "datasets": [
            {"name": "demo", "set": ["data.source=demo"]},
            {"name": "mnist-1", "set": [*mnist, "data.normal_class=1"]},
        ],
        "variants": [
            {"name": "utad", "preset": "cpu-fast", "paper": {"image_auroc": 0.9}},
            {"name": "utad-pixel", "reuse": "utad", "test_set": ["pm.distance=pixel", "pm.terms=[x_xhat]"]},
        ],
    }
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture(scope="session")
def _tiny_grid_once(tmp_path_factory):
    """The tiny grid, trained once per test session: under pytest-xdist the workers share it through a lock
    (each would otherwise train it again), and each test gets its own copy (see ``finished``)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the folder every worker's base temp lives in
    root = base / "tiny-grid"
    with FileLock(str(base / "tiny-grid.lock")):
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)  # a failed attempt of another worker
            root.mkdir()
            grid = write_grid(root / "tiny.yaml")
            argv = ["benchmark", str(grid), "--out", str(root / "out"), "--publish", str(root / "published")]
            assert main([*argv, "--in-process"]) == 0
            (root / "done").touch()
    return root / "tiny.yaml", root / "out", root / "published"


@pytest.fixture
def finished(_tiny_grid_once, tmp_path):
    """(grid file, a private copy of the finished output folder, the published folder)."""
    grid, out, publish = _tiny_grid_once
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return grid, copy, publish


def test_tiny_grid_writes_every_cell_and_the_tables(finished, capsys):
    _, out, publish = finished
    results = json.loads((out / "tiny.json").read_text())
    ids = [c["id"] for c in results["cells"]]
    assert ids == [f"{d}/{v}" for d in ("demo", "mnist-1") for v in ("utad", "utad-pixel")]
    for c in results["cells"]:
        assert c["status"] == "done" and 0.0 <= c["image_auroc"] <= 1.0
        assert c["image_size"] == 32 and c["peak_mb"] is None  # in-process: no per-cell memory figure
        assert c["backbone"] == ("none" if c["variant"] == "utad-pixel" else c["backbone"])
    demo = results["cells"][0]
    assert demo["pixel_auroc"] is not None and demo["epochs"] == {"ienet": 1, "expert": 1}
    metrics = json.loads((out / "demo" / "utad" / "run" / "metrics.json").read_text())
    assert demo["code_knn_auroc"] == metrics["code_analysis"]["code_knn_auroc"]
    assert demo["image_score"] == "maximum of the smoothed map"  # the demo cell's config: detect.score=max
    assert demo["backbone"] in ("efficientnet-lite0", "vgg19")
    assert results["cells"][2]["pixel_auroc"] is None  # MNIST: image level only
    rows = list(csv.DictReader((out / "mnist-1" / "utad" / "run" / "test_scores.csv").open()))
    _, y_test = load_mnist_like(MNIST, "test")  # each row names its image's index in MNIST's test split
    at = [int(r["path"].removeprefix("mnist-test:")) for r in rows]
    assert len(rows) == 60 and [int(r["label"]) for r in rows] == (y_test[at] != 1).astype(int).tolist()
    assert results["cells"][1]["test_set"] == ["pm.distance=pixel", "pm.terms=[x_xhat]"]
    md = (out / "tiny.md").read_text()
    assert "| demo | utad |" in md and "| mnist-1 | utad-pixel |" in md and "image_auroc 0.900 (" in md
    assert (publish / "tiny.json").is_file() and (publish / "tiny.md").read_text() == md


def test_a_finished_grid_runs_nothing_again(finished, monkeypatch, capsys):
    grid, out, _ = finished

    def no_run(*args, **kwargs):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(benchmark, "_run", no_run)
    cell_json = out / "mnist-1" / "utad" / "cell.json"
    record = json.loads(cell_json.read_text())
    expected = record.pop("code_knn_auroc")
    record.pop("image_score")
    cell_json.write_text(json.dumps(record))  # a cell finished before cells recorded these two
    results = benchmark.run_grid(grid, out)
    assert len(results["cells"]) == 4
    assert "4 finished, 0 to run" in capsys.readouterr().out
    assert expected is not None and results["cells"][2]["code_knn_auroc"] == expected  # from its metrics.json
    assert results["cells"][2]["image_score"] == "maximum of the smoothed map"


def test_only_an_exact_id_selects_that_cell_alone(finished, monkeypatch):
    """``demo/utad`` is also part of ``demo/utad-pixel``: an exact id must not run the other cell."""
    grid, out, _ = finished
    (out / "demo" / "utad-pixel" / "cell.json").unlink()  # unfinished, and not asked for

    def no_run(*args, **kwargs):
        raise AssertionError("a cell that was not asked for ran")

    monkeypatch.setattr(benchmark, "_run", no_run)
    results = benchmark.run_grid(grid, out, only="demo/utad")
    assert "demo/utad-pixel" not in [c["id"] for c in results["cells"]]
    with pytest.raises(AssertionError, match="not asked for"):
        benchmark.run_grid(grid, out, only="demo/utad-")  # a part of an id still selects by substring


def test_an_interrupted_cell_continues_from_its_checkpoint(finished, monkeypatch, capsys):
    """Without its cell.json (killed after training), a cell is tested again without retraining."""
    grid, out, _ = finished
    (out / "mnist-1" / "utad" / "cell.json").unlink()
    calls = []
    real = benchmark._run
    monkeypatch.setattr(benchmark, "_run", lambda argv, *a: calls.append(argv[0]) or real(argv, *a))
    results = benchmark.run_grid(grid, out, only="mnist-1/utad")  # in a subprocess this time
    assert calls == ["test"]  # mnist-1/utad only (utad-pixel is finished), and no "train"
    assert len(results["cells"]) == 4  # the cells --only left out stay in the results and tables
    assert "| demo | utad |" in (out / "tiny.md").read_text()
    cell = json.loads((out / "mnist-1" / "utad" / "cell.json").read_text())
    assert cell["status"] == "done" and cell["peak_mb"] > 100  # measured in the subprocess
    assert cell["train_cores_used"] is None  # not trained in this run: only tested


@pytest.mark.skipif(sys.platform == "win32", reason="flock: runs are not locked on Windows")
def test_a_cell_whose_run_is_training_elsewhere_fails_with_the_reason(finished):
    import fcntl

    from utad.checkpoint import load_checkpoint, save_checkpoint

    grid, out, _ = finished
    run = out / "mnist-1" / "utad" / "run"
    (out / "mnist-1" / "utad" / "cell.json").unlink()
    save_checkpoint(run, {**load_checkpoint(run), "stage": "expert", "epoch": 0})  # stage 2 left to train
    other = os.open(run, os.O_RDONLY)  # an earlier runner's training, still going
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(
            UtadError, match=r"mnist-1/utad: training failed \(exit 2\): .*run: another process is"
        ):
            benchmark.run_grid(grid, out, only="mnist-1/utad")
    finally:
        os.close(other)


def test_a_cell_another_runner_finishes_meanwhile_stays_in_the_tables(finished, monkeypatch):
    """Two runners on shards of one grid: the one that publishes last must not drop the other's new cell."""
    grid, out, _ = finished
    mine, theirs = out / "demo" / "utad" / "cell.json", out / "mnist-1" / "utad" / "cell.json"
    my_record, their_record = json.loads(mine.read_text()), theirs.read_text()
    mine.unlink()
    theirs.unlink()  # not finished yet when this runner starts

    def run_cell(cell, out_dir, isolate):
        assert cell.id == "demo/utad"
        theirs.write_text(their_record)  # the other runner finishes mnist-1/utad while this one trains
        mine.write_text(json.dumps(my_record))
        return my_record

    monkeypatch.setattr(benchmark, "run_cell", run_cell)
    results = benchmark.run_grid(grid, out, only="demo/utad")
    assert [c["id"] for c in results["cells"]] == [
        f"{d}/{v}" for d in ("demo", "mnist-1") for v in ("utad", "utad-pixel")
    ]
    assert "| mnist-1 | utad |" in (out / "tiny.md").read_text()


def test_a_fresh_out_keeps_the_published_cells_until_it_runs_them(finished, monkeypatch, tmp_path):
    """A fresh clone (no run folders) that runs one cell with --publish: the other published cells stay in the
    tables, unless the preset they were trained with changed since; published cells still run again."""
    grid, _, publish = finished
    published = tmp_path / "published"
    shutil.copytree(publish, published)
    results = json.loads((published / "tiny.json").read_text())
    stale = next(c for c in results["cells"] if c["id"] == "mnist-1/utad")
    stale["trained_config"]["train"]["ie_epochs"] = 7  # as if cpu-fast had said 7 when it was trained
    (published / "tiny.json").write_text(json.dumps(results))
    fresh = {**results["cells"][0], "image_auroc": 0.5, "run": "demo/utad/run"}
    ran = []
    monkeypatch.setattr(benchmark, "run_cell", lambda cell, o, isolate: ran.append(cell.id) or fresh)
    said = []
    new = benchmark.run_grid(grid, tmp_path / "fresh", publish=published, only="demo/utad", echo=said.append)
    assert ran == ["demo/utad"]  # published, yet run again: the published record is not a finished run
    assert [(c["id"], c["image_auroc"]) for c in new["cells"]][:2] == [
        ("demo/utad", 0.5),  # this run's record replaces the published one
        ("demo/utad-pixel", results["cells"][1]["image_auroc"]),
    ]
    assert [c["id"] for c in new["cells"]] == ["demo/utad", "demo/utad-pixel", "mnist-1/utad-pixel"]
    assert any("1 published cell(s) have other settings now" in s and "mnist-1/utad" in s for s in said)
    assert json.loads((published / "tiny.json").read_text()) == new


def test_a_one_class_run_is_tested_on_held_out_training_images(finished, tmp_path, capsys):
    """``utad test RUN --set data.evaluate_on=holdout --out DIR``: the same networks and calibration on the
    training images the run did not use (for choosing settings without the test split); the run's own
    metrics stay as they were."""
    _, out, _ = finished
    run = out / "mnist-1" / "utad" / "run"
    own = (run / "metrics.json").read_text()
    assert (
        main(["test", str(run), "--set", "data.evaluate_on=holdout", "--out", str(tmp_path), "--quiet"]) == 0
    )
    held = json.loads((tmp_path / "metrics.json").read_text())
    assert held["config"]["data"]["evaluate_on"] == "holdout" and held["n_test"] == 60
    assert held["normalisation"] == json.loads(own)["normalisation"]  # not recalibrated
    # per anomalous class: how well the normal class is told from each other digit
    types = {r["type"]: r for r in held["per_defect_type"]}
    assert (
        "good" in types and "anomalous" not in types and all(t[:6] == "class " for t in types if t != "good")
    )
    assert sum(r["n"] for r in types.values()) == 60 and "class 1" not in types
    assert all(0.0 <= r["image_auroc_vs_good"] <= 1.0 for t, r in types.items() if t != "good")
    # other images: the normal images' mean score differs (a continuous mean over other images; the AUROC, a
    # ratio of small counts, can coincide)
    own_good = next(r for r in json.loads(own)["per_defect_type"] if r["type"] == "good")
    assert types["good"]["mean_score"] != pytest.approx(own_good["mean_score"], rel=1e-9, abs=0)
    assert (run / "metrics.json").read_text() == own
    assert main(["test", str(run), "--set", "data.limit_train=10", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "only pm.*, detect.*, data.evaluate_on and data.synthetic_strength can change" in err


def test_choose_measures_a_one_class_run_on_held_out_training_images(finished, tmp_path, capsys):
    """``utad choose`` on a one-class run (no masks, no drawn defects): every candidate is measured on the
    held-out images that ``utad test --set data.evaluate_on=holdout`` uses, ranked by image AUROC alone."""
    _, out, _ = finished
    run = out / "mnist-1" / "utad" / "run"
    held = tmp_path / "held"
    assert main(["test", str(run), "--set", "data.evaluate_on=holdout", "--out", str(held), "--quiet"]) == 0
    held_auroc = json.loads((held / "metrics.json").read_text())["image_auroc"]
    chosen = tmp_path / "chosen"
    args = ["choose", str(run), "--out", str(chosen), "--quiet"]
    assert main([*args, "--candidate", "max:detect.score=max", "--candidate", "mean:detect.score=mean"]) == 0
    choice = json.loads((chosen / "choice.json").read_text())
    rows = {r["name"]: r for r in choice["candidates"]}
    assert list(rows) == ["as-trained", "max", "mean"]
    assert rows["as-trained"]["image_auroc"] == pytest.approx(held_auroc, abs=1e-9)
    for r in rows.values():
        assert r["score"] == r["image_auroc"] and r["pixel_auroc"] is None and r["aupro"] is None
    assert choice["chosen"] == max(rows.values(), key=lambda r: r["score"])["name"]
    assert choice["rule"].startswith("the highest image AUROC on held-out training images")
    assert (
        "held-out training images (" in choice["evaluated_on"]
        and "of other classes)" in choice["evaluated_on"]
    )
    said = capsys.readouterr().out
    assert "pixel AUROC" not in said and f"chose {choice['chosen']}" in said
    assert yaml.safe_load((chosen / "config.yaml").read_text())["data"]["evaluate_on"] == "test"
    assert main(["choose", str(run), "--out", str(tmp_path / "x"), "--synthetic-strength", "0.3"]) == 2
    assert "--synthetic-strength does not apply" in capsys.readouterr().err


def test_a_trained_cell_records_the_cores_its_training_kept_busy(finished, monkeypatch):
    """CPU time over wall time of the training subprocess: 180 s of CPU in 100 s is 1.8 cores."""
    grid, out, _ = finished
    cell = out / "demo" / "utad"
    (cell / "cell.json").unlink()
    trained = cell.parent / "trained-run"
    (cell / "run").rename(trained)
    real = benchmark._run

    def fake(argv, *args):
        if argv[0] != "train":
            return real(argv, *args)
        shutil.copytree(trained, cell / "run")  # what the training would have left
        return 0, 100.0, 500.0, 180.0

    monkeypatch.setattr(benchmark, "_run", fake)
    benchmark.run_grid(grid, out, only="demo/utad", isolate=False)
    record = json.loads((cell / "cell.json").read_text())
    assert record["train_cores_used"] == 1.8 and record["train_threads"] >= 1


def test_a_changed_cell_is_refused(finished, tmp_path):
    _, out, _ = finished
    changed = write_grid(tmp_path / "tiny.yaml", ["detect.alpha=0.4"])
    with pytest.raises(UtadError, match="finished with other settings"):
        benchmark.run_grid(changed, out)


def test_a_grid_that_spells_out_what_its_preset_gave_keeps_its_finished_cells(
    finished, tmp_path, monkeypatch
):
    """Pinning a value the preset already gives (as when a preset is about to change) changes no cell."""
    _, out, _ = finished
    monkeypatch.setattr(benchmark, "_run", lambda *a, **k: pytest.fail("a finished cell ran again"))
    pinned = write_grid(tmp_path / "tiny.yaml", ["expert.residual=false", "detect.alpha=0.5"])
    assert len(benchmark.run_grid(pinned, out)["cells"]) == 4
    cell = benchmark.load_grid(pinned).cells[0]
    spec = json.loads((out / "demo/utad/cell.json").read_text())["spec"]
    trained = yaml.safe_load((out / "demo/utad/run/config.yaml").read_text())
    assert spec != cell.spec() and benchmark.settings_changed(spec, cell, trained) == []
    assert benchmark.settings_changed(spec, cell, None) == [
        "overrides"
    ]  # unknown training: the spelling counts
    assert benchmark.settings_changed({**spec, "test_set": ["detect.alpha=0.4"]}, cell, trained) == [
        "test_set"
    ]
    trained["detect"]["alpha"] = 0.4  # as if the preset had said 0.4 when the cell trained
    assert benchmark.settings_changed(spec, cell, trained) == ["detect.alpha"]


def test_a_preset_edited_after_a_cell_finished_is_refused_by_name(finished):
    grid, out, _ = finished
    config = out / "demo" / "utad" / "run" / "config.yaml"
    trained = yaml.safe_load(config.read_text())
    del trained["expert"]["lambda_s_prior"]  # a field utad gained later: its default, not a change
    config.write_text(yaml.safe_dump(trained))
    assert benchmark.changed_settings(benchmark.load_grid(grid).cells[0], out) == []
    trained["train"]["ie_epochs"] = 7  # as if cpu-fast had said 7 when the cell trained
    config.write_text(yaml.safe_dump(trained))
    with pytest.raises(UtadError, match=r"finished with other settings \(train.ie_epochs\) than"):
        benchmark.run_grid(grid, out)
    results = benchmark.run_grid(grid, out, only="mnist-1")  # not asked for: left out, never replaced
    assert [c["id"] for c in results["cells"]] == [
        "mnist-1/utad",
        "mnist-1/utad-pixel",
    ]  # and its Table 3 cell


def test_grid_errors_name_the_file_and_the_problem(tmp_path, capsys):
    bad = tmp_path / "g.yaml"
    bad.write_text(
        "datasets: [{name: a, set: [data.source=demo]}]\nvariants: [{name: v, set: [train.nope=1]}]\n"
    )
    assert main(["benchmark", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) train.nope" in err and not (tmp_path / "o").exists()


RESULTS = {
    "title": "Fixed",
    "grid_file": "g.yaml",
    "table": "compare",
    "cells": [
        {
            "dataset": "bottle",
            "variant": "utad",
            "method": "utad",
            "preset": "cpu-fast",
            "image_size": 128,
            "epochs": {"ienet": 30, "expert": 20},
            "image_auroc": 0.95,
            "pixel_auroc": 0.9,
            "aupro": 0.8,
            "iou": 0.2,
            "iou_defect_mean": 0.3,
            "f1_max": 0.9,
            "train_minutes": 20.0,
            "inference_ms_per_image": 50.0,
            "parameters": 1_500_000,
            "peak_mb": 900.0,
            "backbone": "efficientnet-lite0",
            "backbone_pretrained": True,
            "paper": {"iou": 0.37},
        },
        {
            "dataset": "pill",
            "variant": "utad",
            "method": "utad",
            "preset": "cpu-fast",
            "image_size": 128,
            "epochs": {"ienet": 30, "expert": 20},
            "image_auroc": 0.65,
            "pixel_auroc": 0.94,
            "aupro": 0.87,
            "iou": 0.12,
            "iou_defect_mean": 0.1,
            "f1_max": 0.9,
            "train_minutes": 30.0,
            "inference_ms_per_image": 60.0,
            "parameters": 1_500_000,
            "peak_mb": 1000.0,
            "backbone": "efficientnet-lite0",
            "backbone_pretrained": True,
            "paper": {},
        },
    ],
}

EXPECTED_COMPARE = """\
## Fixed

Grid `g.yaml`, 2 cells finished.

| dataset | variant | image AUROC | pixel AUROC | AUPRO | IoU set | IoU defect-mean | F1-max | train min | ms/image | params (M) | peak MB | paper (ours - paper) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| bottle | utad | 0.950 | 0.900 | 0.800 | 0.200 | 0.300 | 0.900 | 20.0 | 50.0 | 1.50 | 900 | iou 0.370 (-0.070) |
| pill | utad | 0.650 | 0.940 | 0.870 | 0.120 | 0.100 | 0.900 | 30.0 | 60.0 | 1.50 | 1000 | - |

IoU at alpha = 0.5 on the normalised map: *IoU set* pools intersection and union over every test pixel; *IoU defect-mean* is the mean of per-image IoUs over the defect images (the reading compared with the paper). Differences in brackets are ours minus the paper's.

Budget:

| variant | method | preset | px | epochs | train min (mean) | cores busy | backbone |
|---|---|---|---|---|---|---|---|
| utad | utad | cpu-fast | 128 | ienet 30, expert 20 | 25.0 | - | efficientnet-lite0 (pretrained) |
"""


def test_compare_table_is_exactly_as_expected():
    assert render(RESULTS) == EXPECTED_COMPARE


def test_budget_shows_the_cores_each_variant_kept_busy():
    """A variant trained beside other jobs shows it: its minutes are not those of idle cores."""
    one, two = RESULTS["cells"]
    cells = [
        {**one, "train_cores_used": 1.9, "train_threads": 2},
        {**two, "train_cores_used": 0.9, "train_threads": 2},
    ]
    assert "| ienet 30, expert 20 | 25.0 | 1.4 of 2 | efficientnet-lite0" in render(
        {**RESULTS, "cells": cells}
    )
    cells[1] = {**two, "train_cores_used": None}  # finished before it was recorded: the measured cell alone
    assert "| 25.0 | 1.9 of 2 |" in render({**RESULTS, "cells": cells})


def test_budget_names_each_schedule_when_a_grid_sets_epochs_per_dataset():
    one, two = RESULTS["cells"]
    cells = [one, {**two, "epochs": {"ienet": 10, "expert": 20}}, {**two, "dataset": "x"}]
    assert "| ienet 30, expert 20 (2 cells); ienet 10, expert 20 (1 cell) |" in render(
        {**RESULTS, "cells": cells}
    )


def test_mvtec_table_compares_with_the_paper_per_category():
    md = render({**RESULTS, "table": "mvtec"})
    # bottle: the grid's paper IoU 0.37; pill: Table 1's UTAD column (0.49), both against the defect-mean IoU
    assert "| bottle | 0.300 | 0.200 | 0.950 | 0.900 | 0.800 | 0.900 | 0.370 (-0.070) |" in md
    assert "| pill | 0.100 | 0.120 | 0.650 | 0.940 | 0.870 | 0.900 | 0.490 (-0.390) |" in md
    assert "| **mean of 2** | 0.200 | 0.160 | 0.800 | 0.920 | 0.835 | 0.900 | 0.430 (-0.230) |" in md
    assert "mean image AUROC 0.90 (ours over 2: image AUROC 0.800 (-0.100))" in md


def test_oneclass_table_means_per_dataset_against_the_paper():
    cells = [
        {**RESULTS["cells"][0], "dataset": f"mnist-{k}", "image_auroc": a, "paper": {}}
        for k, a in ((0, 0.99), (1, 0.97))
    ]
    md = render({**RESULTS, "table": "oneclass", "cells": cells})
    assert "| mnist-0 | 0.990 |" in md and "| mnist-1 | 0.970 |" in md
    assert "| **mnist mean of 2** | 0.980 (paper 0.994 (-0.014)) |" in md


def test_an_ablated_variant_is_compared_only_with_the_paper_row_given_for_it():
    base = {**RESULTS["cells"][0], "dataset": "fashion-mnist-0", "image_auroc": 0.75, "paper": {}}
    spec = {"overrides": ["seed=0", "data.normal_class=0"]}
    cells = [
        {**base, "variant": "utad", "spec": spec},
        {**base, "variant": "no-en", "spec": {"overrides": [*spec["overrides"], "expert.enabled=false"]}},
        {**base, "variant": "base", "spec": {"overrides": ["ienet.use_info=false", "expert.enabled=false"]}},
    ]
    cells[2]["paper"] = {"fashion-mnist_auroc": 0.743}
    md = render({**RESULTS, "table": "oneclass", "cells": cells})
    row = "| **fashion-mnist mean of 1** | 0.750 (paper 0.899 (-0.149)) | 0.750 | 0.750 (paper 0.743 (+0.007)) |"
    assert row in md  # not the full model's 0.899 beside an ablation


def test_oneclass_table_adds_the_code_knn_column_for_the_full_model_only():
    base = {**RESULTS["cells"][0], "paper": {}, "spec": {"overrides": ["seed=0"]}}
    cells = [
        {**base, "dataset": f"mnist-{k}", "variant": "utad", "image_auroc": a, "code_knn_auroc": c}
        for k, a, c in ((0, 0.70, 0.90), (1, 0.80, 0.96))
    ]
    ablated = {"overrides": ["seed=0", "expert.enabled=false"]}
    cells.append(
        {
            **base,
            "dataset": "mnist-0",
            "variant": "no-en",
            "spec": ablated,
            "image_auroc": 0.6,
            "code_knn_auroc": 0.5,
        }
    )
    md = render({**RESULTS, "table": "oneclass", "cells": cells})
    assert "| normal class | utad | no-en | utad: IE-Net code kNN |" in md
    assert "| mnist-0 | 0.700 | 0.600 | 0.900 |" in md and "| mnist-1 | 0.800 | - | 0.960 |" in md
    assert "| **mnist mean of 2** | 0.750 (paper 0.994 (-0.244)) | - | 0.930 (paper 0.994 (-0.064)) |" in md
    assert "*IE-Net code kNN*" in md
    without = render({**RESULTS, "table": "oneclass", "cells": [{**cells[0], "code_knn_auroc": None}]})
    assert "code kNN |" not in without  # no column where no cell has the number


def test_oneclass_note_names_the_image_score_the_cells_used():
    cell = {**RESULTS["cells"][0], "dataset": "mnist-0", "variant": "utad", "paper": {}}
    top = "mean of the top 1 % of the smoothed map"
    assert benchmark.image_score_rule({"detect": {"score": "topk", "top_k": 0.01}}) == top
    assert benchmark.image_score_rule({"detect": {"score": "mean"}}) == "mean of the smoothed map"
    md = render({**RESULTS, "table": "oneclass", "cells": [{**cell, "image_score": top}]})
    assert f"scored by the {top} e." in md and "maximum" not in md
    mixed = [
        {**cell, "image_score": top},
        {**cell, "variant": "max", "image_score": "maximum of the smoothed map"},
    ]
    md = render({**RESULTS, "table": "oneclass", "cells": mixed})
    assert f"scored by utad: the {top}; max: the maximum of the smoothed map." in md


def test_every_shipped_grid_resolves():
    """Each grid under benchmarks/grids: every cell's config is valid (a typo fails here, not in a sweep)."""
    grids = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "grids").glob("*.yaml"))
    assert len(grids) >= 7
    for g in grids:
        grid = benchmark.load_grid(g)
        assert grid.cells and grid.table in ("compare", "mvtec", "oneclass"), g
