"""Atomic file writes and run folders: nothing the user made is half-written or silently overwritten."""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from utad.errors import UtadError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None

TMP_SUFFIX = ".tmp"  # atomic_write's temporary files: .<name>.<random>.tmp beside the target


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file_object)`` into a temporary file beside it, then rename it into place.

    A crash mid-write leaves the previous file intact (rename is atomic on POSIX file systems).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UtadError(
                f"{path}: cannot write: {_os_reason(exc)}; the previous file, if any, is kept"
            ) from None
        if isinstance(exc, RuntimeError) and "enospc" in str(exc).lower():  # torch.save's wording
            raise UtadError(
                f"{path}: cannot write: no space left on device; the previous file is kept"
            ) from None
        raise
    return path


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device (free some space, or choose another --out)"
    return exc.strerror or str(exc)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed write left in ``folder`` (``.<name>.*.tmp``); returns them."""
    stale = sorted(Path(folder).glob(f".*{TMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write a text file."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is not valid JSON, so it is refused)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


_run_locks: dict[str, int] = {}  # run folder -> the descriptor holding its lock, in this process


def lock_run(path: str | os.PathLike) -> None:
    """Hold an exclusive lock on the run folder while this process trains it, so that a second training of the
    same run (another terminal, a benchmark restarted while its old training still runs) stops with an error
    instead of interleaving checkpoints. ``flock`` on the folder itself: no file is added, and the lock ends
    with the process, also when it is killed. Released by ``unlock_run``; a no-op where ``flock`` is missing."""
    key = str(Path(path).resolve())
    if fcntl is None or key in _run_locks:
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UtadError(
            f"{path}: another process is training this run now; wait for it to finish (or stop it), then "
            "continue with --resume"
        ) from None
    except OSError as exc:  # a file system without flock (some network mounts): train, unguarded
        os.close(fd)
        logging.getLogger(__name__).warning(
            "%s: cannot lock the run folder (%s); a second training of it would not be refused", path, exc
        )
        return
    _run_locks[key] = fd


def unlock_run(path: str | os.PathLike) -> None:
    """Release the lock ``lock_run`` took on this run folder (nothing if none is held)."""
    fd = _run_locks.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


def prepare_run_dir(
    path: str | os.PathLike, overwrite: bool = False, resume: bool = False, create: bool = True
) -> Path:
    """Create a run folder; refuse to reuse a non-empty one unless ``overwrite`` or ``resume`` is asked for.

    ``overwrite`` keeps the folder and lets files in it be replaced one by one; nothing is deleted.
    ``create=False`` only checks (to refuse before any work is done).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UtadError(f"{path}: exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not (overwrite or resume):
        raise UtadError(
            f"{path}: folder exists and is not empty; pass --resume to continue it, --overwrite to replace "
            "its files, or choose another --out"
        )
    if not create:
        return path
    path.mkdir(parents=True, exist_ok=True)
    if resume:
        remove_stale_temporaries(path)
    return path
