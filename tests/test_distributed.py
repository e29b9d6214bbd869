"""Distributed training: two CPU processes (DDP over gloo) started by Fabric from the real CLI.

One run is trained for one epoch per stage on the demo data; the test checks what each process did (its share
of the images, the weights at the end of each stage), that only rank 0 wrote the run, and that a checkpoint of
such a run resumes with two processes again.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from conftest import FAST
from utad.checkpoint import load_checkpoint, save_checkpoint

DDP = ["--set", "train.accelerator=cpu", "--set", "train.devices=2", "--set", "train.threads=1"]


def _utad(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "utad", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_two_processes_split_the_data_agree_on_weights_write_once_and_resume(tmp_path):
    run = tmp_path / "run"
    done = _utad(
        "train", "--source", "demo", "--epochs", "1", "--seed", "0", "--out", str(run), "--quiet", *FAST, *DDP
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained:") == 1  # rank 0 reports, rank 1 stays quiet

    # only rank 0 wrote: the usual files, one log entry, no temporaries
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.pt",
        "config.yaml",
        "history.json",
        "log.txt",
    ]
    log = (run / "log.txt").read_text()
    assert log.count("\ncommand: ") == 1  # one entry: rank 1 never attached to the run's log
    assert "distributed: 2 processes" in log
    # DDP kept the replicas identical (check_replicas compares a fingerprint of every rank's weights)
    assert "stage 1 IE-Net: weights identical on all 2 processes" in log
    assert "stage 2 Expert-Net: weights identical on all 2 processes" in log

    # the data was split: each process trained on its half of the images in every epoch
    ckpt = load_checkpoint(run)
    n_train = int(log.split(" train / ")[0].rsplit("(", 1)[1])
    share = -(-n_train // 2)  # DistributedSampler: ceil(n / 2) indices per process
    full_batches = share // 8 * 8  # batch 8 per process, the last partial batch dropped
    for stage in ("ienet", "expert"):
        (row,) = ckpt["history"][stage]
        assert row["images_per_process"] == [full_batches, full_batches], stage
        assert row["images"] == 2 * full_batches
    assert ckpt["stage"] == "done" and ckpt["norm"]["quantile"] > 0

    # resume with two processes: pretend the run was stopped after stage 2's first of two epochs
    ckpt["stage"], ckpt["epoch"], ckpt["norm"] = "expert", 1, None
    ckpt["config"]["train"]["expert_epochs"] = 2
    expert_before = {k: v.clone() for k, v in ckpt["expert"].items()}
    save_checkpoint(run, ckpt)
    resumed = _utad("train", "--resume", "--out", str(run), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = load_checkpoint(run)
    assert after["stage"] == "done" and [r["epoch"] for r in after["history"]["expert"]] == [1, 2]
    assert (
        after["history"]["expert"][1]["images_per_process"]
        == ckpt["history"]["expert"][0]["images_per_process"]
    )
    assert all(torch.equal(v, ckpt["ienet"][k]) for k, v in after["ienet"].items())  # stage 1 stays frozen
    changed = [k for k, v in after["expert"].items() if not torch.equal(v, expert_before[k])]
    assert changed  # the resumed epoch trained Expert-Net from the saved weights
    assert (run / "log.txt").read_text().count("weights identical on all 2 processes") == 3
    json.loads((run / "history.json").read_text())  # rewritten whole
