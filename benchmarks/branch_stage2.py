"""Branch a run at the start of stage 2: keep its trained IE-Net, train a new Expert-Net with other settings.

Stage 1 is the same for every Expert-Net variant, so comparing variants (width, residual output, crops,
schedule, loss weights) needs IE-Net trained once. Only ``expert.*`` and stage-2 ``train.*`` settings may
change. The branch is an ordinary run folder; finish it with ``utad train --resume --out NEW``. Example:

    python benchmarks/branch_stage2.py runs/demo-base runs/demo-res --set expert.residual=true
    utad train --resume --out runs/demo-res && utad test runs/demo-res
"""

from __future__ import annotations

import argparse
from pathlib import Path

from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.config import apply_override, dump_yaml, from_dict
from utad.io import prepare_run_dir, write_text

STAGE2_KEYS = ("expert.", "train.expert_", "train.lr_schedule", "train.val_fidelity", "detect.", "pm.")


def branch(src: str | Path, dst: str | Path, overrides: list[str]) -> Path:
    state = load_checkpoint(src)
    if state["stage"] == "ienet":
        raise SystemExit(f"{src}: stage 1 has not finished")
    for item in overrides:
        if not item.split("=", 1)[0].startswith(STAGE2_KEYS):
            raise SystemExit(
                f"{item}: only stage-2 settings ({', '.join(STAGE2_KEYS)}) can change in a branch"
            )
        apply_override(state["config"], item)
    cfg = from_dict(state["config"], "branch overrides")
    dst = prepare_run_dir(dst)
    state.update(stage="expert", epoch=0, expert=None, expert_opt=None, norm=None)
    state["history"] = {"ienet": state["history"]["ienet"], "expert": []}
    write_text(dst / "config.yaml", dump_yaml(cfg))
    return save_checkpoint(dst, state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="run folder whose IE-Net is kept")
    ap.add_argument("dst", help="new run folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    print(branch(args.src, args.dst, args.set))


if __name__ == "__main__":
    main()
