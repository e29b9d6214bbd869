"""Branch a run at the start of stage 2: keep its trained IE-Net, train a new Expert-Net with other settings.

Stage 1 (IE-Net, Sec. 3.1) does not depend on any Expert-Net setting (Sec. 3.2 trains the expert on the frozen
impressions m), so variants of the second stage (its width, loss weights, crops, schedule) need IE-Net trained
once. ``branch_stage2`` writes a new run folder whose checkpoint holds the source's IE-Net, its stage-1 history
and a fresh stage 2 at epoch 0; ``utad branch`` then trains it like ``utad train --resume`` would. Only
``expert.*``, stage-2 ``train.*`` settings, the measurement (``pm.*``, ``detect.*``) and where stage 2 runs
(threads, devices, precision) may change: any other key would make the branch a different stage 1 under the same
weights.

``keep_expert=True`` (``utad branch --keep-expert``) instead continues the source's Expert-Net (weights, optimiser,
discriminator, stage-2 history) for more epochs: when the validation learning curve of stage 2 still rises, a
longer stage 2 costs only the added epochs. Only ``train.expert_epochs`` (more than ran) and where it runs may
change, and only under the constant schedule: a cosine schedule is a function of the stage's total epochs, so its
continuation would not be the longer run's.

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


def check_keep_expert(state: dict, cfg, src: str | Path, overrides: list[str]) -> int:
    """What ``keep_expert`` needs, refused with the reason: a source with a trained Expert-Net, overrides of
    ``train.expert_epochs`` and runtime keys only, more epochs than ran, the constant schedule. Returns the
    stage-2 epochs the source ran."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key != "train.expert_epochs" and key not in RUNTIME_KEYS:
            raise UtadError(
                f"--set {key}: continuing the source's Expert-Net (--keep-expert) changes only train.expert_epochs "
                "and where it runs; for other stage-2 settings branch without --keep-expert"
            )
    if state.get("expert") is None:
        raise UtadError(f"{src}: has no trained Expert-Net to continue; branch without --keep-expert")
    ran = len(state["history"].get("expert", []))
    if cfg.train.expert_epochs <= ran:
        raise UtadError(
            f"{src}: stage 2 ran {ran} epochs; --keep-expert needs --set train.expert_epochs=N with N > {ran}"
        )
    if cfg.train.lr_schedule != "constant":
        raise UtadError(
            f"{src}: train.lr_schedule is {cfg.train.lr_schedule}, a function of the stage's total epochs: its "
            "continuation would not be the longer run's; branch without --keep-expert to train stage 2 afresh"
        )
    return ran


def branch_stage2(src: str | Path, dst: str | Path, overrides: list[str], keep_expert: bool = False) -> Path:
    """Write run folder ``dst`` holding ``src``'s IE-Net and an untrained stage 2 with ``overrides`` applied.

    With ``keep_expert`` the stage 2 is the source's, continued from the epochs it ran to ``train.expert_epochs``
    (``check_keep_expert`` says what may change); the calibration is redone at the end.

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
    ran = check_keep_expert(state, cfg, src, overrides) if keep_expert else 0
    dst = prepare_run_dir(dst)
    if keep_expert:
        state.update(stage="expert", epoch=ran, norm=None)
        state["history"] = {"ienet": state["history"]["ienet"], "expert": state["history"]["expert"][:ran]}
    else:
        state.update(stage="expert", epoch=0, expert=None, expert_opt=None, norm=None)
        for key in ("disc", "disc_opt"):  # a discriminator belongs to the source's stage 2
            state.pop(key, None)
        state["history"] = {"ienet": state["history"]["ienet"], "expert": []}
    write_text(dst / "config.yaml", dump_yaml(cfg))
    path = save_checkpoint(dst, state)
    changes = " ".join(overrides) or "no overrides"
    kept = f"its IE-Net and its Expert-Net after {ran} epochs kept" if keep_expert else "its IE-Net kept"
    runlog.attach(dst, "branch", f"branched from {Path(src).resolve()} ({kept}) with {changes}")
    runlog.detach(True)
    return path
