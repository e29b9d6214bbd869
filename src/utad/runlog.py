"""Every run folder keeps ``log.txt``: a plain-text record of what ran there (appended by each command).

Each entry starts with the command line, the versions (utad, torch, Python, platform, threads), and for training
the method, the data and the backbone; then the log messages and Python warnings of that command (skipped files,
random backbone weights, early stops) with their times; and ends with how long it took and how it ended.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path

log = logging.getLogger("utad")
_active: list[tuple[logging.Handler, str, float]] = []


def attach(folder: str | os.PathLike, what: str, details: str = "") -> None:
    """Start recording into ``<folder>/log.txt`` (the folder exists); ``detach`` ends the entry."""
    import torch

    from utad import __version__

    handler = logging.FileHandler(Path(folder) / "log.txt", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    for name in ("utad", "py.warnings"):
        logging.getLogger(name).addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    logging.captureWarnings(True)
    _active.append((handler, what, time.perf_counter()))
    handler.stream.write(
        f"\n=== {what} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n"
        f"command: {' '.join(sys.argv)}\n"
        f"versions: utad {__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.platform()}, {torch.get_num_threads()} threads\n" + (f"{details}\n" if details else "")
    )
    handler.flush()


def detach(ok: bool = True) -> None:
    """End the innermost entry with its duration and outcome."""
    if not _active:
        return
    handler, what, start = _active.pop()
    handler.stream.write(
        f"=== {what} {'finished' if ok else 'stopped'} after {time.perf_counter() - start:.1f} s ===\n"
    )
    for name in ("utad", "py.warnings"):
        logging.getLogger(name).removeHandler(handler)
    handler.close()
    if not _active:
        logging.captureWarnings(False)  # warnings go back to where they went before
