"""Checkpoints: one file per run, ``checkpoint.pt``, rewritten atomically after every epoch.

It holds the stage (``ienet``, ``expert``, ``done``), the epoch reached, both networks' weights and optimiser
states, the resolved config, the normalisation statistics, the backbone used and the loss history: tensors and
plain data (dicts, lists, numbers, strings) only.

Loading is safe: ``torch.load(..., weights_only=True)`` rebuilds tensors and plain containers and refuses every
other pickled object, so a shared run folder whose ``checkpoint.pt`` carries a code-running pickle (a
``__reduce__`` payload) is refused with one line and its payload never runs. Checkpoints written by every
earlier utad version hold only such data and load unchanged.
"""

from __future__ import annotations

import os
import pickle
import re
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
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise UtadError(
            f"{path}: refused: the checkpoint holds objects other than tensors and plain data{what}, which "
            "could run code when loaded; utad checkpoints never do, so this file was not written by utad"
        ) from None
    except Exception as exc:
        raise UtadError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "stage" not in state or "config" not in state:
        raise UtadError(f"{path}: not a utad checkpoint (no stage/config entries)")
    return state
