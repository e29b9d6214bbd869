"""``utad branch``: a new Expert-Net trained on a finished run's IE-Net, with other stage-2 settings; the source run
is left as it was, and settings that would change stage 1 are refused by name."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
import yaml

from conftest import TRAIN_TINY
from utad.branch import branch_stage2
from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.cli import main
from utad.errors import UtadError


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_branch_keeps_ienet_trains_a_new_expert_with_the_override(trained_run, tmp_path, capsys):
    before = digest(trained_run / "checkpoint.pt")
    out = tmp_path / "x30"
    assert (
        main(["branch", str(trained_run), "--out", str(out), "--quiet", "--set", "expert.lambda_ssim=30"])
        == 0
    )
    assert f"trained: {out}" in capsys.readouterr().out
    assert digest(trained_run / "checkpoint.pt") == before
    src, new = load_checkpoint(trained_run), load_checkpoint(out)
    assert new["stage"] == "done" and new["config"]["expert"]["lambda_ssim"] == 30
    assert src["config"]["expert"]["lambda_ssim"] == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["expert"]["lambda_ssim"] == 30
    for name, weight in src["ienet"].items():
        assert torch.equal(weight, new["ienet"][name]), name
    assert any(not torch.equal(w, new["expert"][n]) for n, w in src["expert"].items())
    assert new["history"]["ienet"] == src["history"]["ienet"]
    assert len(new["history"]["expert"]) == src["config"]["train"]["expert_epochs"]
    assert new["norm"] is not None  # calibrated at the end of its own stage 2
    log = (out / "log.txt").read_text()
    assert f"branched from {trained_run.resolve()} (its IE-Net kept) with expert.lambda_ssim=30" in log
    assert main(["test", str(out), "--quiet", "--no-report"]) == 0


def test_branch_without_training_is_a_stage_2_at_epoch_0(trained_run, tmp_path):
    out = tmp_path / "b"
    sets = ["--set", "train.expert_epochs=1", "--set", "train.threads=1"]  # a runtime key is allowed too
    assert main(["branch", str(trained_run), "--out", str(out), "--no-train", *sets]) == 0
    state = load_checkpoint(out)
    assert (state["stage"], state["epoch"], state["expert"], state["norm"]) == ("expert", 0, None, None)
    assert state["config"]["train"]["expert_epochs"] == 1 and state["config"]["train"]["threads"] == 1


@pytest.mark.parametrize(
    "item, message",
    [
        ("ienet.lambda_ssim=100", "--set ienet.lambda_ssim: only stage-2 settings"),
        ("data.image_size=64", "--set data.image_size: only stage-2 settings"),
        ("train.ie_epochs=3", "--set train.ie_epochs: only stage-2 settings"),
        ("expert.lambda_ssim", "--set expert.lambda_ssim: expected KEY=VALUE"),
    ],
)
def test_branch_refuses_settings_of_stage_1_by_name(trained_run, tmp_path, item, message):
    with pytest.raises(UtadError, match=message):
        branch_stage2(trained_run, tmp_path / "b", [item])
    assert not (tmp_path / "b").exists()


def test_branch_refuses_a_bad_value_and_a_used_folder(trained_run, tmp_path, capsys):
    with pytest.raises(UtadError, match="expert.lambda_ssim"):
        branch_stage2(trained_run, tmp_path / "b", ["expert.lambda_ssim=lots"])
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert main(["branch", str(trained_run), "--out", str(used), "--quiet"]) == 2
    assert "folder exists and is not empty" in capsys.readouterr().err
    assert (used / "notes.txt").read_text() == "mine" and sorted(p.name for p in used.iterdir()) == [
        "notes.txt"
    ]


def copy_with(run, dst, **changes):
    """A copy of ``run``'s checkpoint in ``dst`` with top-level or config fields changed."""
    state = load_checkpoint(run)
    state["config"].update(changes.pop("config", {}))
    state.update(changes)
    dst.mkdir()
    save_checkpoint(dst, state)
    return dst


def test_branch_refuses_a_run_whose_stage_1_has_not_finished(trained_run, tmp_path, capsys):
    run = copy_with(trained_run, tmp_path / "stage1", stage="ienet", epoch=1)
    assert main(["branch", str(run), "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "stage 1 (IE-Net) has not finished" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_branch_refuses_a_baseline_run(trained_run, tmp_path):
    run = copy_with(trained_run, tmp_path / "knn", config={"method": "feature-knn"})
    with pytest.raises(UtadError, match="a feature-knn run has no stage 2 to branch"):
        branch_stage2(run, tmp_path / "b", [])


def test_resume_says_which_options_it_ignores(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["train", "--resume", "--out", str(run), "--quiet", "--set", "expert.lambda_ssim=30"]) == 0
    err = capsys.readouterr().err
    assert f"--resume continues {run} with its saved config; ignored: --set expert.lambda_ssim=30" in err
    assert load_checkpoint(run)["config"]["expert"]["lambda_ssim"] == 0


def test_keep_expert_continues_stage_2_as_a_longer_run_would(trained_run, tmp_path, capsys):
    """2 stage-2 epochs continued to 3 give the weights of a run trained with 3 from the start (constant
    schedule, each epoch's order from its own seed); the source is left as it was."""
    before = digest(trained_run / "checkpoint.pt")
    out = tmp_path / "more"
    sets = ["--set", "train.expert_epochs=3"]
    assert main(["branch", str(trained_run), "--out", str(out), "--quiet", "--keep-expert", *sets]) == 0
    assert digest(trained_run / "checkpoint.pt") == before
    longer = tmp_path / "longer"
    i = TRAIN_TINY.index("--epochs")  # --epochs N sets both stages' epochs, over --set
    tiny = [*TRAIN_TINY[:i], *TRAIN_TINY[i + 2 :], "--set", "train.ie_epochs=2"]
    assert main([*tiny, "--set", "train.expert_epochs=3", "--out", str(longer)]) == 0
    src, new, ref = (load_checkpoint(p) for p in (trained_run, out, longer))
    assert new["stage"] == "done" and new["config"]["train"]["expert_epochs"] == 3
    assert [r["epoch"] for r in new["history"]["expert"]] == [1, 2, 3]
    assert new["history"]["expert"][:2] == src["history"]["expert"]
    for name, weight in ref["expert"].items():
        assert torch.allclose(weight, new["expert"][name], atol=1e-6), name
    assert any(not torch.equal(w, new["expert"][n]) for n, w in src["expert"].items())
    log = (out / "log.txt").read_text()
    assert "its IE-Net and its Expert-Net after 2 epochs kept) with train.expert_epochs=3" in log


@pytest.mark.parametrize(
    "sets, message",
    [
        (["expert.lambda_ssim=30", "train.expert_epochs=3"], "--set expert.lambda_ssim: continuing"),
        (["train.expert_epochs=2"], "stage 2 ran 2 epochs; --keep-expert needs"),
        ([], "stage 2 ran 2 epochs; --keep-expert needs"),
        (["train.expert_epochs=3", "train.lr_schedule=cosine"], "--set train.lr_schedule: continuing"),
    ],
)
def test_keep_expert_refuses_what_would_not_be_a_continuation(trained_run, tmp_path, sets, message):
    with pytest.raises(UtadError, match=message):
        branch_stage2(trained_run, tmp_path / "b", sets, keep_expert=True)
    assert not (tmp_path / "b").exists()


def test_keep_expert_refuses_a_cosine_source(trained_run, tmp_path, capsys):
    train = {**load_checkpoint(trained_run)["config"]["train"], "lr_schedule": "cosine"}
    run = copy_with(trained_run, tmp_path / "cos", config={"train": train})
    args = [
        "branch",
        str(run),
        "--out",
        str(tmp_path / "b"),
        "--keep-expert",
        "--set",
        "train.expert_epochs=3",
    ]
    assert main(args) == 2
    assert "train.lr_schedule is cosine, a function of the stage's total epochs" in capsys.readouterr().err
