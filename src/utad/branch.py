"""Branch a run at the start of stage 2: keep its trained IE-Net, train a new Expert-Net with other settings.

Stage 1 (IE-Net, Sec. 3.1) does not depend on any Expert-Net setting (Sec. 3.2 trains the expert on the frozen
impressions m), so variants of the second stage (its width, loss weights, crops, schedule) need IE-Net trained
once. ``branch_stage2`` writes a new run folder whose checkpoint holds the source's IE-Net, its stage-1 history
and a fresh stage 2 at epoch 0; ``utad branch`` then trains it like ``utad train --resume`` would. Only
``expert.*``, stage-2 ``train.*`` settings, the measurement (``pm.*``, ``detect.*``) and where stage 2 runs
(threads, devices, precision) may change: any other key would make the branch a different stage 1 under the same
weights.

The recipe this serves (README, "Table 1"): train ``cpu-mvtec``, branch it with the structural term on x^
(``expert.lambda_ssim=30``), then ``utad choose`` over both runs picks, on drawn defects of the validation images,
which expert (and which measurement) to keep.
"""

from __future__ import annotations

from pathlib import Path

from utad import runlog
from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.config import apply_override, dump_yaml, from_dict
from utad.errors import UtadError
from utad.io import prepare_run_dir, write_text

STAGE2_KEYS = ("expert.", "train.expert_", "train.lr_schedule", "train.val_fidelity", "detect.", "pm.")
# where and how fast stage 2 runs: these change no trained weight of stage 1
RUNTIME_KEYS = (
    "train.threads",
    "train.accelerator",
    "train.devices",
    "train.num_nodes",
    "train.strategy",
    "train.precision",
    "train.channels_last",
    "train.max_minutes",
    "data.num_workers",
)


def check_stage2_overrides(overrides: list[str]) -> None:
    """Refuse, naming the key, any override that is not a stage-2 or measurement setting."""
    for item in overrides:
        if "=" not in item:
            raise UtadError(f"--set {item}: expected KEY=VALUE")
        key = item.split("=", 1)[0].strip()
        if not key.startswith(STAGE2_KEYS) and key not in RUNTIME_KEYS:
            raise UtadError(
                f"--set {key}: only stage-2 settings ({', '.join(STAGE2_KEYS)}) and where it runs "
                f"({', '.join(RUNTIME_KEYS)}) can change in a branch; IE-Net and the data stay the source run's"
            )


def branch_stage2(src: str | Path, dst: str | Path, overrides: list[str]) -> Path:
    """Write run folder ``dst`` holding ``src``'s IE-Net and an untrained stage 2 with ``overrides`` applied.

    ``src`` must be a UTAD run whose stage 1 has finished; ``dst`` must be new or empty (nothing is replaced).
    Returns the new checkpoint's path; train it with ``utad.train.train(None, dst, resume=True)``. The branch
    starts from the random state the source saved last, so without overrides it is a new draw of stage 2.
    """
    check_stage2_overrides(overrides)
    state = load_checkpoint(src)
    method = (state.get("config") or {}).get("method", "utad")
    if method != "utad":
        raise UtadError(f"{src}: a {method} run has no stage 2 to branch (only utad runs do)")
    if state.get("stage") not in ("expert", "done"):
        raise UtadError(f"{src}: stage 1 (IE-Net) has not finished; finish it with utad train --resume first")
    prepare_run_dir(dst, create=False)  # refuse a non-empty folder before any work
    for item in overrides:
        apply_override(state["config"], item)
    cfg = from_dict(state["config"], "branch overrides")
    dst = prepare_run_dir(dst)
    state.update(stage="expert", epoch=0, expert=None, expert_opt=None, norm=None)
    for key in ("disc", "disc_opt"):  # a discriminator belongs to the source's stage 2
        state.pop(key, None)
    state["history"] = {"ienet": state["history"]["ienet"], "expert": []}
    write_text(dst / "config.yaml", dump_yaml(cfg))
    path = save_checkpoint(dst, state)
    changes = " ".join(overrides) or "no overrides"
    runlog.attach(dst, "branch", f"branched from {Path(src).resolve()} (its IE-Net kept) with {changes}")
    runlog.detach(True)
    return path
