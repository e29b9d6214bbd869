"""Reliability and security: hostile checkpoints, bad files in a batch, output names that try to escape."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
    # --strict: the same batch exits 1 because something was skipped
    res = subprocess.run(
        [*cmd[:-2], str(tmp_path / "strict"), "--strict", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr


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
