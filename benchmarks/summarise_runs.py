"""Collect the metrics and fidelity of finished runs into one JSON (for results tables), with how each ran.

python benchmarks/summarise_runs.py runs/demo-base runs/demo-b3 ... --json benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from utad.io import write_json


def summary(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    hist = run / "history.json"  # none in a folder of `utad test --out`: no per-stage times there
    h = json.loads(hist.read_text()) if hist.exists() else {}
    cfg = m["config"]
    keys = ("image_auroc", "pixel_auroc", "aupro", "iou", "f1_max")
    row = {
        "run": str(run),
        "method": cfg.get("method", "utad"),
        "dataset": m["dataset"],
        **{k: m[k] for k in keys},
        "iou_defect_mean": m.get("iou_defect_mean"),
        "per_defect_type": m.get("per_defect_type"),  # one-class runs: per original class
        "parameters": m.get("parameters"),
        "fidelity": m.get("fidelity"),
        "defect_fidelity": m.get("defect_fidelity"),  # the same on the defect pixels (a leak shows here)
        "train_seconds_total": m.get("train_seconds"),  # the trained run's, as metrics.json records it
        # per stage, where the folder has the run's history (ienet and expert; fit or ae for the baselines)
        "train_seconds": {
            s: (v[-1].get("seconds", 0.0) if v else 0.0) for s, v in h.items() if isinstance(v, list)
        },
        "epochs": m.get("epochs"),
        "image_size": cfg["data"]["image_size"],
        "channels": cfg["data"].get("channels", 3),
        "backbone": m["backbone"]["name"],
        "seed": cfg["seed"],
    }
    if row["method"] != "utad":
        return row
    return {
        **row,
        "ienet_blocks": cfg["ienet"]["blocks"],
        "expert": {
            k: cfg["expert"].get(k)
            for k in (
                "dim",
                "downsample",
                "res_blocks",
                "mlp_dim",
                "residual",
                "skips",
                "use_detail",
                "detail_stride",
                "lambda_s",
                "lambda_s_prior",
                "detail_judge",
                "lambda_perceptual",
                "lambda_adv",
                "disc_lr",
            )
        },
        "expert_lr": cfg["train"].get("expert_lr"),
        "last_expert_epoch": h["expert"][-1] if h.get("expert") else None,
        "lr_schedule": cfg["train"].get("lr_schedule", "constant"),
        "expert_crop": cfg["train"].get("expert_crop"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json", required=True)
    ap.add_argument("--note", default="", help="how the runs were made (commands)")
    args = ap.parse_args()
    rows = [summary(Path(r)) for r in args.runs]
    write_json(args.json, {"note": args.note, "runs": rows})
    for r in rows:
        f = r["fidelity"] or {}
        shown = {k: r[k] for k in ("image_auroc", "pixel_auroc", "aupro", "iou")}
        text = " ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in shown.items())
        d = r["defect_fidelity"] or {}
        gain = "-" if f.get("gain") is None else f"{f['gain']:.2f}"
        defect = "-" if d.get("gain") is None else f"{d['gain']:.2f}"
        swap = (
            "-"
            if f.get("detail_swap") is None
            else f"{f['detail_swap']:.4f} of |x^ - m| {f['l1_xhat_m']:.4f}"
        )
        print(f"{r['run']}: {text} gain {gain} (on defect pixels {defect}), detail swap {swap}")


if __name__ == "__main__":
    main()
