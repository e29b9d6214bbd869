"""Shared fixtures: tiny MVTec-layout folders built from real demo crops, and paths to ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core (pytest-xdist): one thread each, here and in the subprocesses the
    # tests start; two workers of two spinning OpenMP threads on two cores run several times slower, not faster.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
MNIST = SHARED / "data" / "mnist"
CIFAR = SHARED / "data" / "cifar10_jpeg"


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_widget(root: Path, n_train: int = 4, seed: int = 0) -> Path:
    """A valid MVTec-layout category of random 32x32 RGB images: ``n_train`` train/good, 2 test/good,
    2 test/crack with masks."""
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        save(root / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for i in range(2):
        save(root / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        save(root / "test" / "crack" / f"{i:03d}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:20] = 255
        save(root / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    """A small valid MVTec-layout category: 4 train/good, 2 test/good, 2 test/crack with masks (32x32 RGB)."""
    return make_widget(tmp_path / "widget")


# A tiny UTAD configuration for end-to-end tests: 32 px, narrow networks (seconds per epoch).
FAST = [
    *("--set", "data.image_size=32", "--set", "data.demo_size=64", "--set", "ienet.width=4"),
    *("--set", "ienet.max_width=32", "--set", "expert.dim=8", "--set", "train.batch_size=8"),
]


TRAIN_TINY = ["train", "--source", "demo", "--epochs", "2", "--seed", "0", "--quiet", *FAST]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny demo run (2 + 2 epochs, seed 0), trained once and shared by every test that only reads it."""
    from utad.cli import main

    out = tmp_path_factory.mktemp("e2e") / "run"
    assert main([*TRAIN_TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def repeat_run(tmp_path_factory) -> Path:
    """The same command as ``trained_run`` into another folder: the repeatability test compares the two, and
    the SIGKILL tests use it as the uninterrupted reference."""
    from utad.cli import main

    out = tmp_path_factory.mktemp("again") / "run"
    assert main([*TRAIN_TINY, "--out", str(out)]) == 0
    return out
