"""Checkpoints: one file per run, ``checkpoint.pt``, rewritten atomically after every epoch.

It holds the stage (``ienet``, ``expert``, ``done``), the epoch reached, both networks' weights and optimiser
states, the resolved config, the normalisation statistics, the backbone used and the loss history.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from utad.errors import UtadError
from utad.io import atomic_write

CHECKPOINT = "checkpoint.pt"


def checkpoint_path(run: str | os.PathLike) -> Path:
    p = Path(run)
    return p / CHECKPOINT if p.is_dir() or p.suffix != ".pt" else p


def save_checkpoint(run: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` to the run's checkpoint (a crash keeps the previous epoch's file)."""
    return atomic_write(checkpoint_path(run), lambda f: torch.save(state, f))


def load_checkpoint(run: str | os.PathLike) -> dict[str, Any]:
    """Read a run's checkpoint; a missing or unreadable file is a ``UtadError`` naming it."""
    path = checkpoint_path(run)
    if not path.is_file():
        raise UtadError(f"{path}: no checkpoint (is this a utad run folder?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UtadError(f"{path}: cannot read checkpoint ({exc})") from None
