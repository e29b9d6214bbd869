"""Reliability and security: hostile checkpoints, bad files in a batch, output names that try to escape."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST, TRAIN_TINY, make_widget
from utad.checkpoint import load_checkpoint
from utad.cli import main
from utad.detector import Detector
from utad.errors import UtadError
from utad.runs import _output_names


class Payload:
    """A pickle that creates a marker file when unpickled: what a hostile run folder would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def hostile_run(trained_run, tmp_path) -> tuple[Path, Path]:
    run = tmp_path / "shared-run"
    shutil.copytree(trained_run, run)
    state = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    marker = tmp_path / "PAYLOAD-RAN"
    state["history"]["note"] = Payload(marker)  # a real checkpoint with one poisoned entry
    torch.save(state, run / "checkpoint.pt")
    return run, marker


def test_every_entry_point_refuses_a_code_running_checkpoint(trained_run, hostile_run, tmp_path, capsys):
    run, marker = hostile_run
    demo = next((trained_run.parent / ".utad-cache").glob("demo-*"))
    good = str(sorted((demo / "test" / "good").glob("*.png"))[0])
    calls = [
        ["predict", str(run), good, "--out", str(tmp_path / "pred"), "--quiet"],
        ["test", str(run), "--quiet"],
        ["train", "--resume", "--out", str(run), "--quiet"],
    ]
    for argv in calls:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "checkpoint.pt: refused" in err and "Traceback" not in err, argv
    with pytest.raises(UtadError, match="refused"):
        Detector.load(run)
    with pytest.raises(UtadError, match="refused: the checkpoint holds objects other than tensors"):
        load_checkpoint(run)
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "pred").exists()  # a refused run leaves no output folder behind


def test_checkpoints_written_by_utad_load_safely(trained_run):
    state = load_checkpoint(trained_run)  # weights_only=True
    assert state["stage"] == "done" and isinstance(state["ienet"], dict)


# ---- a corpus of bad and unusual files, built here (no binary junk committed) -----------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A valid PNG header claiming width x height pixels, with a tiny (incomplete) image stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def build_corpus(folder: Path, good: list[Path]) -> tuple[set[str], set[str]]:
    """Writes good, unusual-but-valid and bad files into ``folder``; returns (names to score, names to skip)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    ok: set[str] = set()
    for i, g in enumerate(good):
        shutil.copy(g, folder / f"good{i}.png")
        ok.add(f"good{i}.png")
    png = encode(rgb, "PNG")
    valid = {
        "one_pixel.png": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "grey16.png": encode(Image.fromarray((rng.random((40, 40)) * 65535).astype(np.uint16)), "PNG"),
        "palette.png": encode(rgb.convert("P"), "PNG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "float.tif": encode(Image.fromarray(rng.random((40, 40)).astype(np.float32)), "TIFF"),
        "animated.gif": encode(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.convert("P")]),
        "name with spaces é ü.png": png,
    }
    broken_crc = bytearray(png)
    broken_crc[40] ^= 0xFF  # inside the IDAT data: the checksum no longer matches
    invalid = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": encode(rgb, "JPEG")[:200],
        "text.png": b"this is not an image\n",
        "bad_crc.png": bytes(broken_crc),
        "bomb.png": bomb_png(),
    }
    for name, data in {**valid, **invalid}.items():
        (folder / name).write_bytes(data)
    (folder / "x.png").mkdir()  # a folder with an image name
    return ok | set(valid), set(invalid) | {"x.png"}


def test_predict_scores_every_readable_file_and_lists_the_rest(trained_run, tmp_path):
    demo = next((trained_run.parent / ".utad-cache").glob("demo-*"))
    good = sorted((demo / "test" / "good").glob("*.png"))[:3]
    corpus = tmp_path / "incoming"
    ok, bad = build_corpus(corpus, good)
    out = tmp_path / "pred"
    cmd = [
        sys.executable,
        "-m",
        "utad",
        "predict",
        str(trained_run),
        str(corpus),
        "--out",
        str(out),
        "--quiet",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    info = json.loads((out / "predict.json").read_text())
    scored = {Path(r["path"]).name for r in _csv_rows(out / "scores.csv")}
    skipped = {Path(s["path"]).name: s["reason"] for s in info["skipped"]}
    assert scored == ok and set(skipped) == bad
    assert info["n_images"] == len(ok) and info["n_skipped"] == len(bad)
    assert "too large" in skipped["bomb.png"] and "3600000000 pixels" in skipped["bomb.png"]
    assert "not an image" in skipped["text.png"] and "not a file" in skipped["x.png"]
    for name in bad:
        assert name in res.stdout  # the console summary names every skipped file
    assert len(list((out / "maps").glob("*.png"))) == len(ok)
    # --strict: the same batch exits 1 because something was skipped (in this process: no second start-up)
    assert (
        main(["predict", str(trained_run), str(corpus), "--out", str(tmp_path / "strict"), "--strict"]) == 1
    )
    assert (tmp_path / "strict" / "scores.csv").is_file()  # what could be scored is still written


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_output_names_stay_inside_out(tmp_path):
    files = [
        Path("/data/a/../../etc/passwd.png"),
        Path("../../escape.png"),
        Path("/abs/path/..png"),
        Path("/x/a/same.png"),
        Path("/x/b/same.png"),
        Path("/x/b/same.png"),
        Path("/x/ü name.png"),
    ]
    names = _output_names(files)
    assert len(set(names)) == len(names)
    for n in names:
        target = (tmp_path / "out" / "maps" / f"{n}.png").resolve()
        assert target.parent == (tmp_path / "out" / "maps").resolve(), n
        assert "/" not in n and ".." not in n and n


# ---- training: unreadable files, config errors, divergence, full disk, SIGKILL and resume -----------------

TINY = [*FAST, "--quiet"]


def test_train_stops_before_training_with_every_unreadable_file(tmp_path, capsys):
    data = make_widget(tmp_path / "widget", n_train=10, seed=1)
    (data / "train" / "good" / "900.png").write_bytes(b"")
    (data / "train" / "good" / "901.png").write_bytes(b"not an image")
    args = ["train", "--source", "mvtec", "--data", str(data), "--epochs", "1", *TINY]
    set_batch = ["--set", "train.batch_size=4"]
    assert main([*args, *set_batch, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "2 unreadable file(s)" in err and "900.png" in err and "901.png" in err and "--skip-bad" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    assert main([*args, *set_batch, "--skip-bad", "--out", str(tmp_path / "run2")]) == 0
    skipped = json.loads((tmp_path / "run2" / "skipped.json").read_text())
    assert sorted(Path(s["path"]).name for s in skipped) == ["900.png", "901.png"]
    assert load_checkpoint(tmp_path / "run2")["stage"] == "done"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.ie_epochs=0", "train.ie_epochs: must be greater than 0"),
        ("train.expert_epochs=-3", "train.expert_epochs: must be greater than 0"),
        ("data.image_size=36", "data.image_size: must be divisible by 8"),
        ("train.batch_size=500", "train.batch_size 500 is larger than the training set"),
        ("train.nonsense=1", "unknown key(s) train.nonsense"),
        ("train.ie_lr=fast", "train.ie_lr: expected float"),
        ("train.lr_schedule=steps", "train.lr_schedule: must be one of constant, cosine"),
    ],
)
def test_config_errors_are_one_line_and_write_nothing(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert main(["train", "--source", "demo", *TINY, "--set", override, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_unknown_preset_is_one_line(tmp_path, capsys):
    assert main(["train", "--preset", "turbo", "--out", str(tmp_path / "r")]) == 2
    assert "unknown preset 'turbo'" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_divergence_stops_with_stage_epoch_and_term(tmp_path, monkeypatch, capsys):
    import utad.train as train_mod

    real, calls = train_mod.ie_loss, {"n": 0}

    def nan_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        loss, parts, _ = real(*args, **kwargs)
        if calls["n"] > 8:  # 8 batches per epoch: epoch 2 diverges
            parts = {**parts, "rec": float("nan")}
            loss = loss * float("nan")
        return loss, parts, None

    monkeypatch.setattr(train_mod, "ie_loss", nan_in_epoch_2)
    out = tmp_path / "run"
    assert main(["train", "--source", "demo", "--epochs", "3", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "stage 1 IE-Net: the loss became nan in epoch 2 (term rec)" in err
    ckpt = load_checkpoint(out)  # the last good checkpoint is kept
    assert ckpt["stage"] == "ienet" and ckpt["epoch"] == 1


def test_full_disk_is_one_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    import errno

    import utad.checkpoint as ck

    real, calls = ck.torch.save, {"n": 0}

    def disk_full_on_second_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(ck.torch, "save", disk_full_on_second_save)
    out = tmp_path / "run"
    assert main(["train", "--source", "demo", "--epochs", "3", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt: cannot write: no space left on device" in err and "Traceback" not in err
    assert load_checkpoint(out)["epoch"] == 1  # epoch 1's checkpoint intact
    assert not list(out.glob(".*.tmp"))  # no temporary left behind


KILLER = """
import os, sys, time
from pathlib import Path
mode, marker = sys.argv[1], Path(sys.argv[2])
if mode in ("mid-epoch", "mid-expert"):  # stop in the 3rd batch of epoch 2 (8 batches per epoch)
    import utad.train as tr
    name = "ie_loss" if mode == "mid-epoch" else "expert_loss"
    real, n = getattr(tr, name), [0]
    def slow(*a, **k):
        n[0] += 1
        if n[0] == 8 + 3:
            marker.touch(); time.sleep(120)
        return real(*a, **k)
    setattr(tr, name, slow)
else:  # stop while the 2nd checkpoint is written: the temporary file is complete, not yet renamed
    real_replace, n = os.replace, [0]
    def slow_replace(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            n[0] += 1
            if n[0] == 2:
                marker.touch(); time.sleep(120)
        return real_replace(src, dst)
    os.replace = slow_replace
from utad.cli import main
sys.exit(main(sys.argv[3:]))
"""


KILL_TRAIN = TRAIN_TINY  # the command of repeat_run (2 + 2 epochs, seed 0)


@pytest.mark.parametrize(
    ("mode", "saved"),
    [("mid-epoch", ("ienet", 1)), ("mid-write", ("ienet", 1)), ("mid-expert", ("expert", 1))],
)
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path, repeat_run, mode, saved):
    """``repeat_run`` (conftest) is the uninterrupted reference: the same config, seed and epochs."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out, marker = tmp_path / "run", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, str(script), mode, str(marker), *KILL_TRAIN, "--out", str(out)])
    try:
        for _ in range(1200):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the run never reached the kill point"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(out)
    assert (ckpt["stage"], ckpt["epoch"]) == saved  # the last complete epoch
    if mode == "mid-write":
        assert list(out.glob(".checkpoint.pt.*.tmp"))  # the half-done write is there ...
    assert main(["train", "--resume", "--out", str(out), "--quiet"]) == 0
    assert not list(out.glob(".*.tmp"))  # ... and cleaned up by --resume
    a, b = load_checkpoint(out), load_checkpoint(repeat_run)
    assert a["stage"] == b["stage"] == "done"
    for net in ("ienet", "expert"):
        for k, v in b[net].items():
            assert torch.equal(a[net][k], v), (net, k)
    assert a["norm"] == b["norm"]


def _flock_free(folder: Path) -> bool:
    """Whether another open file description could lock ``folder`` now (what a second process would find)."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a lock taken here


@pytest.mark.skipif(sys.platform == "win32", reason="flock: runs are not locked on Windows")
def test_a_run_being_trained_elsewhere_is_refused_and_the_lock_ends_with_training(tmp_path):
    import fcntl

    from detector_runs import hand_made_run
    from utad.io import lock_run, unlock_run
    from utad.train import train

    run = tmp_path / "run"
    hand_made_run(run, stage="expert", epoch=0, expert=None)  # stage 2 left to train: resume would work on it
    lock_run(run)
    assert not _flock_free(run)
    unlock_run(run)
    assert _flock_free(run)

    other = os.open(run, os.O_RDONLY)  # "another process" training this run
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    before = load_checkpoint(run)
    with pytest.raises(UtadError, match=r"run: another process is training this run now; .* --resume"):
        train(None, run, resume=True, progress=False)
    os.close(other)
    assert _flock_free(run)  # the refused training left no lock behind
    assert load_checkpoint(run)["epoch"] == before["epoch"] and (run / "checkpoint.pt").is_file()
    assert not any(p.name.startswith(".") for p in run.iterdir())  # the lock adds no file


def test_a_terminated_benchmark_takes_its_cell_process_with_it(tmp_path):
    from utad import benchmark

    out = tmp_path / "cell-run"
    argv = ["train", "--source", "demo", "--epochs", "50", "--out", str(out), "--quiet", *FAST]
    timer = __import__("threading").Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        benchmark._run(argv, tmp_path / "cell.log")
    timer.join()
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and str(out).encode() in cmdline:
            alive.append(proc.name)
    assert alive == []  # the training started for the cell was killed, not left running
    assert signal.getsignal(signal.SIGTERM) is not benchmark._interrupt  # the runner's handler is gone again


@pytest.mark.skipif(sys.platform == "win32", reason="flock: runs are not locked on Windows")
def test_a_folder_that_cannot_be_locked_trains_unguarded_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from utad.io import _run_locks, lock_run

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")  # what some network file systems answer

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock_run(tmp_path)  # no error: training goes on
    assert "cannot lock the run folder" in caplog.text and "would not be refused" in caplog.text
    assert str(tmp_path.resolve()) not in _run_locks
