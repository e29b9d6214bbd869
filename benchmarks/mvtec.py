"""Benchmark UTAD on a real MVTec AD category (default: ../shared/data/mvtec_ad/bottle); writes JSON.

Measures image AUROC, pixel AUROC, AUPRO, IoU at alpha, F1-max, training images/s per stage, inference
ms/image, peak resident memory, training wall time and the backbone used. Example:

    python benchmarks/mvtec.py --preset cpu-fast --set data.image_size=128 --out runs/bench-bottle \
        --json benchmarks/results/bottle-cpu-fast-128.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from utad.checkpoint import load_checkpoint
from utad.config import load_config
from utad.io import write_json
from utad.runs import test_run
from utad.train import train

ROOT = Path(__file__).resolve().parents[1]


def stage_rate(rows: list[dict], n_images: int) -> float | None:
    """Training images per second of a stage from its history (epochs x images / seconds)."""
    if not rows:
        return None
    return len(rows) * n_images / rows[-1]["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"))
    ap.add_argument("--preset", default="cpu-fast")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--json", required=True, help="where to write the benchmark JSON")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    cfg = load_config(args.preset, ["data.source=mvtec", f"data.path={args.data}", *args.set])
    start = time.perf_counter()
    if args.resume:
        train(None, args.out, resume=True, progress=False)
    else:
        train(cfg, args.out, progress=False)
    train_seconds = time.perf_counter() - start
    metrics = test_run(args.out, progress=False)
    ckpt = load_checkpoint(args.out)
    from utad.data.bundle import build_data

    n_train = len(build_data(cfg.data, cfg.seed, Path(args.out).parent / ".utad-cache").train)
    result = {
        "dataset": metrics["dataset"],
        "preset": args.preset,
        "overrides": args.set,
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "aupro": metrics["aupro"],
        "iou_at_alpha": metrics["iou"],
        "alpha": metrics["alpha"],
        "f1_max": metrics["f1_max"],
        "eval_resolution": metrics.get("eval_resolution"),
        "train_images_per_s": {
            "ienet": stage_rate(ckpt["history"]["ienet"], n_train),
            "expert": stage_rate(ckpt["history"]["expert"], n_train),
        },
        "epochs": metrics["epochs"],
        "inference_ms_per_image": metrics["inference_ms_per_image"],
        "train_wall_seconds": train_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "backbone": metrics["backbone"],
        "image_size": cfg.data.image_size,
        "machine": {
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "command": "python benchmarks/mvtec.py "
        + " ".join(
            [f"--preset {args.preset}"]
            + [f"--set {s}" for s in args.set]
            + [f"--out {args.out} --json {args.json}"]
        ),
    }
    write_json(args.json, result)
    print(
        json.dumps({k: result[k] for k in ("image_auroc", "pixel_auroc", "aupro", "iou_at_alpha")}, indent=1)
    )


if __name__ == "__main__":
    main()
