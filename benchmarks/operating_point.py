"""Could the operating point (which normal quantile becomes alpha) be chosen on synthetic defects? A probe.

The paper thresholds e at alpha = 0.5 (Sec. 4.1) without saying how e is scaled. utad maps the
``detect.quantile`` (0.999) of the validation images' normal pixels to ``detect.norm_value`` (0.5), so the mask
at alpha holds the pixels above that quantile. A lower quantile marks more pixels. The quantile changes neither
the image AUROC, the pixel AUROC nor the AUPRO (e is only scaled), only the masks and so the IoU. ``utad
choose`` ranks by the first three, so it cannot pick the quantile; this probe asks whether the IoU on the drawn
defects of the validation images (``data.evaluate_on=synthetic``) would: for each quantile it gives the set IoU
and the mean per-image IoU over defect images on the synthetic defects and on the test split (native
resolution, as ``utad test``), from one set of maps per split (the threshold on the normalised map is
``alpha * q(quantile) / q(detect.quantile)``, q from the validation images' raw maps).

    python benchmarks/operating_point.py runs/choose/pill --strength 0.3 --json benchmarks/results/F.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from utad.data.bundle import build_data
from utad.detector import Detector
from utad.evaluate import evaluate, maps_and_masks, read_native_masks
from utad.io import write_json
from utad.metrics import iou
from utad.runs import overridden

QUANTILES = (0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999)


def probe(run: Path, strength: float, quantiles=QUANTILES) -> dict:
    det = Detector.load(run, "cpu")
    cfg = det.config
    cache = run.parent / ".utad-cache"
    synthetic = build_data(
        overridden(cfg, ["data.evaluate_on=synthetic", f"data.synthetic_strength={strength}"]).data,
        cfg.seed,
        cache,
    )
    values = det.normal_values(DataLoader(synthetic.val, batch_size=cfg.train.batch_size))
    qv = {q: float(np.quantile(values, q)) for q in quantiles}
    own = det.norm["quantile"]
    row: dict = {"run": str(run), "detect.quantile": cfg.detect.quantile, "alpha": cfg.detect.alpha}
    for split, data in (("synthetic", synthetic), ("test", build_data(cfg.data, cfg.seed, cache))):
        metrics, preds = evaluate(det, data, cfg.train.batch_size, False)
        maps, masks, _ = maps_and_masks(preds, data, read_native_masks(data))
        row[split] = {
            "reported_iou": metrics["iou"],
            "by_quantile": {
                str(q): {
                    "iou": iou(maps, masks, cfg.detect.alpha * qv[q] / own),
                    "iou_defect_mean": iou(maps, masks, cfg.detect.alpha * qv[q] / own, pooling="defect"),
                }
                for q in quantiles
            },
        }
    best = max(quantiles, key=lambda q: row["synthetic"]["by_quantile"][str(q)]["iou"])
    row["synthetic_choice"] = best
    row["test_iou_at_synthetic_choice"] = row["test"]["by_quantile"][str(best)]["iou"]
    row["test_iou_as_trained"] = row["test"]["reported_iou"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="trained (or chosen) run folders with masks")
    ap.add_argument("--strength", type=float, default=0.3, help="opacity scale of the drawn defects")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for run in args.runs:
        rows.append(probe(run, args.strength))
        r = rows[-1]
        print(
            f"{run}: synthetic picks {r['synthetic_choice']}; test IoU there {r['test_iou_at_synthetic_choice']:.3f}"
            f" (at detect.quantile {r['detect.quantile']}: {r['test_iou_as_trained']:.3f})",
            flush=True,
        )
        write_json(args.json, {"note": args.note, "quantiles": list(QUANTILES), "runs": rows})


if __name__ == "__main__":
    main()
