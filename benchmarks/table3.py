"""Table 3 of the paper on a trained run: IoU (and AUROCs) of single measurements vs. the full PM; writes JSON.

Each row re-measures the same trained networks (no retraining) and recalibrates the map normalisation on the
run's validation images:

    python benchmarks/table3.py runs/bench-bottle-128 --json benchmarks/results/bottle-table3.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from utad.data.bundle import build_data
from utad.detector import Detector
from utad.evaluate import evaluate
from utad.io import write_json
from utad.runs import with_measurement

ROWS = {
    "|x - x^|": ["pm.distance=pixel", "pm.terms=[x_xhat]"],
    "|x - m|": ["pm.distance=pixel", "pm.terms=[x_m]"],
    "|m - m^|": ["pm.distance=pixel", "pm.terms=[m_mhat]"],
    "conv1_2": ["pm.layers=[conv1_2]"],
    "conv2_2": ["pm.layers=[conv2_2]"],
    "conv3_4": ["pm.layers=[conv3_4]"],
    "PM": [],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    base = Detector.load(args.run)
    data = build_data(base.config.data, base.config.seed, Path(args.run).parent / ".utad-cache")
    rows = {}
    for name, overrides in ROWS.items():
        det = with_measurement(base, ["pm.distance=perceptual", *overrides], data)
        metrics, _ = evaluate(det, data, base.config.train.batch_size, progress=False)
        rows[name] = {
            k: metrics[k]
            for k in ("iou", "image_auroc", "pixel_auroc", "aupro")
            if metrics.get(k) is not None
        }
        rows[name]["backbone_layers"] = det.backbone.layers
        print(name, json.dumps(rows[name]))
    write_json(
        args.json, {"run": args.run, "dataset": data.name, "backbone": base.backbone.name, "rows": rows}
    )


if __name__ == "__main__":
    main()
