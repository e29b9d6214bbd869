"""Would a post-processing of the anomaly map e tell pill's defects from its normal variation? A probe.

On pill, e is bright on every good pill (the red speckles, the imprint's edges, `docs/fidelity.md`).
Two classic fixes work on e alone, after the networks and before the image score, and need no training:

* **per-position normalisation**: subtract the mean map of normal images (``sub-mean``), or divide by their
  per-pixel spread (``z``: ``(e - mean) / (std + median std)``), so that what is bright at the same place on
  every good part (an imprint, an outline) no longer counts;
* **grey opening** (``open1`` .. ``open3``: erosion then dilation with a (2r+1)-px square at the model's
  resolution; the detector's own opening, ``detect.open_px``), which removes hot spots smaller than the square
  (speckles) and keeps larger ones.

Each variant is scored on the run's synthetic defects (``data.evaluate_on=synthetic``; the normal statistics
from the training images, so the validation images stay unseen) and on the test split (statistics from training
and validation images), with the detector's image score (max after its Gaussian) and pixel AUROC and AUPRO at the
model's resolution. The question is whether the synthetic ranking, which ``utad choose`` relies on, would pick
a variant that helps on the test split.

    python benchmarks/map_postprocess.py runs/bench/mvtec/pill/utad/run --json benchmarks/results/pill-map-postprocess.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from utad.data.bundle import build_data
from utad.data.synthetic import SyntheticDefects
from utad.detector import Detector, grey_opening
from utad.io import write_json
from utad.metrics import aupro, image_auroc, pixel_auroc


@torch.no_grad()
def raw_maps(det: Detector, dataset, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Un-normalised e (N, S, S), labels (N,) and masks (N, S, S) at the model's resolution."""
    maps, labels, masks = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        e, *_ = det.raw_map(batch["image"])
        maps.append(e[:, 0].numpy())
        labels.append(np.asarray(batch["label"]))
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
    return np.concatenate(maps), np.concatenate(labels), np.concatenate(masks)


def variants(e: np.ndarray, normal: np.ndarray) -> dict[str, np.ndarray]:
    """The post-processed maps of e (N, S, S), normal statistics from ``normal`` (M, S, S)."""
    mean, std = normal.mean(0), normal.std(0)
    out = {"none": e, "sub-mean": e - mean, "z": (e - mean) / (std + np.median(std) + 1e-12)}
    for r in (1, 2, 3):
        out[f"open{r}"] = grey_opening(torch.from_numpy(np.ascontiguousarray(e))[:, None], r)[:, 0].numpy()
    return out


def score(det: Detector, e: np.ndarray) -> np.ndarray:
    """The detector's image score of each map: ``detect.score`` of the map after its Gaussian."""
    t = torch.from_numpy(np.ascontiguousarray(e, dtype=np.float32))[:, None]
    return det.image_score(det.smooth(t)).numpy()


def probe(run: str, strength: float = 1.0) -> dict:
    det = Detector.load(run, "cpu")
    cfg = det.config
    data = build_data(cfg.data, cfg.seed, Path(run).parent / ".utad-cache")  # as utad choose
    train, _, _ = raw_maps(det, data.train)
    val, _, _ = raw_maps(det, data.val)
    sets = {
        "synthetic": (raw_maps(det, SyntheticDefects(data.val, cfg.seed, "synthetic", strength)), train),
        "test": (raw_maps(det, data.test), np.concatenate([train, val])),
    }
    rows: dict[str, dict] = {}
    for split, ((e, y, masks), normal) in sets.items():
        for name, v in variants(e, normal).items():
            r = {"image_auroc": image_auroc(score(det, v), y), "pixel_auroc": pixel_auroc(v, masks)}
            r["aupro"] = aupro(v, masks)
            r["mean"] = float(np.mean(list(r.values())))
            rows.setdefault(name, {})[split] = r
    return {"run": run, "resolution": cfg.data.image_size, "synthetic_strength": strength, "variants": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--strength", type=float, default=1.0, help="opacity scale of the synthetic defects")
    args = ap.parse_args()
    res = probe(args.run, args.strength)
    print(f"{'variant':10s} synthetic image / pixel / AUPRO (mean) | test image / pixel / AUPRO")
    for name, r in res["variants"].items():
        s, t = r["synthetic"], r["test"]
        print(
            f"{name:10s} {s['image_auroc']:.3f} / {s['pixel_auroc']:.3f} / {s['aupro']:.3f} ({s['mean']:.3f})"
            f" | {t['image_auroc']:.3f} / {t['pixel_auroc']:.3f} / {t['aupro']:.3f}"
        )
    if args.json:
        strength = f" --strength {args.strength:g}" if args.strength != 1.0 else ""
        res["note"] = f"python benchmarks/map_postprocess.py {args.run}{strength} --json {args.json}"
        write_json(args.json, res)


if __name__ == "__main__":
    main()
