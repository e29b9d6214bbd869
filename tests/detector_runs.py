"""Run folders written by hand (untrained tiny networks, known statistics): loading and prediction can be
tested in seconds, without training."""

from __future__ import annotations

from pathlib import Path

import torch

from utad.checkpoint import save_checkpoint
from utad.config import load_config, to_dict

TINY = ["data.image_size=32", "ienet.width=4", "ienet.max_width=32", "expert.dim=8"]
STORED_NORM = {"quantile": 0.0123, "min": 0.001, "max": 0.05, "n_pixels": 1024}


def hand_made_run(run: Path, overrides: list[str] | None = None, **changes):
    """A finished UTAD run in ``run``; ``changes`` replace checkpoint entries. Returns (ienet, expert)."""
    from utad.model import build_expert, build_ienet, build_pm

    cfg = load_config("cpu-fast", [*TINY, *(overrides or [])])
    torch.manual_seed(0)
    ienet, expert = build_ienet(cfg), build_expert(cfg)
    _, info = build_pm(cfg)
    state = {"stage": "done", "epoch": 0, "ienet": ienet.state_dict(), "history": {}}
    state |= {"expert": expert.state_dict() if expert is not None else None, "config": to_dict(cfg)}
    state |= {"backbone": info.to_dict(), "norm": dict(STORED_NORM), **changes}
    save_checkpoint(run, state)
    return ienet, expert
