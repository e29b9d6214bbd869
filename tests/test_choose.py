"""``utad choose``: measurements compared on synthetic defects of the validation images, the best one written
into a new run folder that test / predict use; the trained run is left as it was."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
import yaml

from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.choose import CANDIDATES, choose_measurement, parse_candidates
from utad.cli import main
from utad.data.bundle import build_data
from utad.detector import Detector
from utad.errors import UtadError
from utad.evaluate import evaluate
from utad.runs import overridden, with_measurement


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_choose_writes_the_best_measurement_into_a_new_run(trained_run, tmp_path, capsys):
    before = digest(trained_run / "checkpoint.pt")
    out = tmp_path / "chosen"
    args = ["choose", str(trained_run), "--out", str(out), "--quiet", "--keep-score"]
    cands = [
        "--candidate",
        "deep:pm.layers=[conv3_4]",
        "--candidate",
        "pixel:pm.distance=pixel;pm.terms=[x_xhat]",
    ]
    assert main([*args, *cands]) == 0
    choice = json.loads((out / "choice.json").read_text())
    rows = {r["name"]: r for r in choice["candidates"]}
    assert list(rows) == ["as-trained", "deep", "pixel"]
    assert rows["pixel"]["overrides"] == ["pm.distance=pixel", "pm.terms=[x_xhat]"]
    for r in rows.values():
        assert r["score"] == pytest.approx(np.mean([r["image_auroc"], r["pixel_auroc"], r["aupro"]]))
    assert choice["chosen"] == max(rows.values(), key=lambda r: r["score"])["name"]
    assert "-synthetic" in choice["evaluated_on"]
    pm = yaml.safe_load((out / "config.yaml").read_text())["pm"]
    trained_pm = yaml.safe_load((trained_run / "config.yaml").read_text())["pm"]
    expected = {
        "as-trained": trained_pm,
        "deep": {**trained_pm, "layers": ["conv3_4"]},
        "pixel": {**trained_pm, "distance": "pixel", "terms": ["x_xhat"]},
    }[choice["chosen"]]
    assert {k: pm[k] for k in ("layers", "terms", "distance")} == {
        k: expected[k] for k in ("layers", "terms", "distance")
    }
    assert f"chose {choice['chosen']}" in capsys.readouterr().out
    # the new run is a run: its test measures with the chosen measurement, on the test split
    assert main(["test", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["config"]["pm"]["layers"] == pm["layers"]
        and metrics["config"]["data"]["evaluate_on"] == "test"
    )
    assert digest(trained_run / "checkpoint.pt") == before
    # nothing is overwritten
    assert main([*args, *cands]) == 2
    assert "folder exists and is not empty" in capsys.readouterr().err


def test_candidates_are_parsed_and_bad_ones_named():
    assert parse_candidates(None) == CANDIDATES and parse_candidates(None) is not CANDIDATES
    assert parse_candidates(["a:pm.layers=[conv1_2];pm.terms=[x_m]"]) == {
        "as-trained": [],
        "a": ["pm.layers=[conv1_2]", "pm.terms=[x_m]"],
    }
    for bad in ("pm.layers=[conv1_2]", "a:", ":pm.terms=[x_m]"):
        with pytest.raises(UtadError, match="expected NAME:KEY=VALUE"):
            parse_candidates([bad])
    with pytest.raises(UtadError, match="the name 'a' is used twice"):
        parse_candidates(["a:pm.terms=[x_m]", "a:pm.terms=[x_xhat]"])


def test_choose_between_runs_trained_alike_and_refuse_runs_with_other_validation_images(
    trained_run, repeat_run, tmp_path, capsys
):
    """Two runs of the same data and seed (here the same command twice) share their synthetic defects, so the
    choice spans both: the best (run, measurement) of all rows; a run with another seed is refused by name."""
    cands = {"as-trained": [], "deep": ["pm.layers=[conv3_4]"]}
    choice = choose_measurement(
        [trained_run, repeat_run], tmp_path / "both", cands, progress=False, score_candidates={}
    )
    rows = choice["candidates"]
    assert [(r["run"], r["name"]) for r in rows] == [
        (str(run), name) for run in (trained_run, repeat_run) for name in cands
    ]
    best = max(rows, key=lambda r: r["score"])
    assert (choice["chosen_run"], choice["chosen"]) == (best["run"], best["name"])
    # the command lists every (run, measurement), the measurement names in one column whatever the runs' paths
    longer = tmp_path / "a-longer-folder-name"
    shutil.copytree(repeat_run, longer)
    out = tmp_path / "cli"
    cli = ["choose", str(trained_run), str(longer), "--out", str(out), "--quiet", "--keep-score"]
    assert main([*cli, "--candidate", "deep:pm.layers=[conv3_4]"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line[:2] in ("* ", "  ")]
    assert len(listed) == 4 and sum(line.startswith("* ") for line in listed) == 1
    columns = {re.search(r" (as-trained|deep) ", line).start() for line in listed}
    assert len(columns) == 1
    other = tmp_path / "other-seed"
    shutil.copytree(trained_run, other)
    ckpt = load_checkpoint(other)
    ckpt["config"]["seed"] = 7
    save_checkpoint(other, ckpt)
    with pytest.raises(UtadError, match="other-seed: its validation images or seed differ"):
        choose_measurement([trained_run, other], tmp_path / "x", cands, progress=False, score_candidates={})
    assert not (tmp_path / "x").exists()


def test_subtler_synthetic_defects_are_a_choice_of_the_command(trained_run, tmp_path, capsys):
    cands = {"as-trained": []}
    full = choose_measurement(trained_run, tmp_path / "full", cands, progress=False, score_candidates={})
    assert "strength 1)" in full["evaluated_on"]
    args = ["choose", str(trained_run), "--out", str(tmp_path / "subtle"), "--quiet", "--keep-score"]
    assert main([*args, "--synthetic-strength", "0.4"]) == 0
    subtle = json.loads((tmp_path / "subtle" / "choice.json").read_text())
    assert "strength 0.4)" in subtle["evaluated_on"]
    row = {r["name"]: r for r in subtle["candidates"]}["as-trained"]
    assert row["pixel_auroc"] != full["candidates"][0]["pixel_auroc"]  # other defects were measured
    assert main([*args[:3], str(tmp_path / "bad"), "--synthetic-strength", "2"]) == 2
    assert "synthetic_strength must be in (0, 1], got 2" in capsys.readouterr().err


def test_the_image_score_is_chosen_after_the_measurement(trained_run, tmp_path, capsys):
    """The second step tries other image scores with the chosen measurement on the same images: only the image
    AUROC moves (e and the masks do not), a setting equal to the run's own is skipped, and one replaces the
    measurement's own score only when strictly better; what is chosen is what the new run folder scores with."""
    cands = {"as-trained": [], "deep": ["pm.layers=[conv3_4]"]}
    scores = {
        "same": ["detect.smooth_sigma=4.0"],
        "wide": ["detect.smooth_sigma=16"],
        "mean": ["detect.score=mean"],
    }
    choice = choose_measurement(trained_run, tmp_path / "c", cands, progress=False, score_candidates=scores)
    best = {r["name"]: r for r in choice["candidates"]}[choice["chosen"]]
    rows = {r["name"]: r for r in choice["score_candidates"]}
    assert list(rows) == ["wide", "mean"]  # "same" changes nothing
    assert rows["wide"]["overrides"] == [*best["overrides"], "detect.smooth_sigma=16"]
    # scored from the chosen measurement's maps, the same as measuring the setting from scratch
    det = Detector.load(trained_run, "cpu")
    data = build_data(
        overridden(det.config, ["data.evaluate_on=synthetic"]).data, det.config.seed, tmp_path / "cache"
    )
    again, _ = evaluate(with_measurement(det, rows["wide"]["overrides"], data), data, 8, False)
    assert rows["wide"]["image_auroc"] == pytest.approx(again["image_auroc"], abs=1e-9)
    top = max(rows.values(), key=lambda r: r["image_auroc"])
    if top["image_auroc"] > best["image_auroc"]:
        assert choice["chosen_score"] == top["name"] and choice["overrides"] == top["overrides"]
    else:
        assert choice["chosen_score"] is None and choice["overrides"] == best["overrides"]
    detect = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["detect"]
    expected = {"wide": (16.0, "max"), "mean": (4.0, "mean"), None: (4.0, "max")}[choice["chosen_score"]]
    assert (detect["smooth_sigma"], detect["score"]) == expected
    assert "image score with the highest image AUROC" in choice["rule"]
    # the measurement's own score is kept when no candidate beats it (a run scoring 1.0 cannot be beaten)
    never = choose_measurement(
        trained_run,
        tmp_path / "n",
        {"as-trained": []},
        progress=False,
        score_candidates={"same": scores["same"]},
    )
    assert never["score_candidates"] == [] and never["chosen_score"] is None
    assert "image score" not in never["rule"]
    with pytest.raises(UtadError, match="score candidate bad: .* not image-score settings"):
        choose_measurement(
            trained_run, tmp_path / "b", cands, progress=False, score_candidates={"bad": ["pm.terms=[x_m]"]}
        )
    # the command prints the second step and names the chosen score
    assert main(["choose", str(trained_run), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "image scores with" in out and "sigma-16" in out
