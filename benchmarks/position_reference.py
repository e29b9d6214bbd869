"""Would a per-position reference for the anomaly map help? A probe, not a detector setting.

``map_postprocess.py`` asked this first (mean-map subtraction and ``z`` on the raw map of a ``cpu-fast`` run, pixel
metrics at the model's size); this probe asks it of a run as ``utad choose`` leaves it: the chosen measurement
(``--set``), maps post-processed as the detector does (``detect.open_px``), calibrated, with IoU, native-size masks,
and held-out images for one-class runs.

MVTec objects sit in the same place in every image, so a good part's map e is high in the same places (bottle's
rings, pill's outline and imprint) and PaDiM-style methods compare each position with its own normal
statistics. This script asks whether that helps UTAD's e: with mu and sd the per-position mean and standard
deviation of the post-processed raw maps over the run's *training* images (smoothed by a Gaussian of
``--stat-sigma`` px), each variant rescales the map before the usual calibration (quantile of the validation
images' pixels) and scoring:

* ``base``: e (the detector as it is)
* ``sub``: e - mu
* ``z``: (e - mu) / (sd + 0.1 median(sd))
* ``z1``: (e - mu) / (sd + median(sd))
* ``ratio``: e / (mu + median(mu))

Each is measured on the test split and on the set ``utad choose`` decides on (synthetic defects of the validation
images at ``--strength``; held-out training images for one-class runs, image AUROC only), with image AUROC, pixel
AUROC, AUPRO and IoU at alpha (set-pooled), pixel metrics at the masks' native size on the test split.

    python benchmarks/position_reference.py runs/ssim/pill-s0 --set "pm.layers=[conv2_2, conv3_4]" \\
        --set detect.open_px=3 --json /tmp/pill.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from utad.data.bundle import ONE_CLASS, build_data
from utad.detector import Detector, gaussian_kernel
from utad.evaluate import read_native_masks
from utad.io import write_json
from utad.metrics import aupro, image_auroc, iou, pixel_auroc
from utad.runs import overridden, with_measurement


@torch.no_grad()
def raw_maps(det, dataset) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """Post-processed, un-normalised maps (N, 1, S, S), masks (or None) and labels of ``dataset``."""
    maps, masks, labels = [], [], []
    for b in DataLoader(dataset, batch_size=8, shuffle=False):
        e, *_ = det.raw_map(b["image"])
        maps.append(det.postprocess(e))
        labels.append(b["label"])
        if "mask" in b:
            masks.append(b["mask"])
    return torch.cat(maps), (torch.cat(masks) if masks else None), torch.cat(labels).numpy()


def variants(train_maps: torch.Tensor, det, stat_sigma: float) -> dict:
    """The map rescalings compared, from the training images' per-position statistics."""
    mu, sd = train_maps.mean(0, keepdim=True), train_maps.std(0, keepdim=True)
    if stat_sigma > 0:
        k = gaussian_kernel(stat_sigma)
        mu, sd = det.smooth(mu, k), det.smooth(sd, k)
    med, sdm = float(mu.median()), float(sd.median())
    return {
        "base": lambda e: e,
        "sub": lambda e: e - mu,
        "z": lambda e: (e - mu) / (sd + 0.1 * sdm),
        "z1": lambda e: (e - mu) / (sd + sdm),
        "ratio": lambda e: e / (mu + med),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--set", action="append", default=[], help="pm.* / detect.* measurement to probe")
    ap.add_argument("--strength", type=float, default=0.3, help="synthetic defects' opacity scale")
    ap.add_argument("--stat-sigma", type=float, default=2.0, help="smoothing of mu and sd, model px")
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    det = Detector.load(a.run, "cpu")
    cache = Path(a.run).parent / ".utad-cache"
    data = build_data(det.config.data, det.config.seed, cache)
    if a.set:
        det = with_measurement(det, a.set, data)
    cfg = det.config
    one_class = cfg.data.source in ONE_CLASS
    where = (
        ["data.evaluate_on=holdout"]
        if one_class
        else ["data.evaluate_on=synthetic", f"data.synthetic_strength={a.strength}"]
    )
    choice = build_data(overridden(cfg, where).data, cfg.seed, cache)
    val, _, _ = raw_maps(det, data.val)
    splits = {"test": raw_maps(det, data.test), "choice": raw_maps(det, choice.test)}
    native = None if one_class else read_native_masks(data)
    out = {"run": a.run, "set": a.set, "strength": a.strength, "stat_sigma": a.stat_sigma, "variants": {}}
    for name, f in variants(raw_maps(det, data.train)[0], det, a.stat_sigma).items():
        q = float(np.quantile(f(val).flatten().numpy().astype(np.float64), cfg.detect.quantile))
        row = {}
        for split, (e, m, y) in splits.items():
            en = f(e) * (cfg.detect.norm_value / q)
            score = det.image_score(en if det.map_smoothed else det.smooth(en)).numpy()
            if one_class:
                row[split] = {"image_auroc": image_auroc(score, y)}
                continue
            if split == "test":
                masks, (h, w) = native
                mp = F.interpolate(en, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
            else:
                masks, mp = m[:, 0].numpy().astype(bool), en[:, 0].numpy()
            row[split] = {
                "image_auroc": image_auroc(score, y),
                "pixel_auroc": pixel_auroc(mp, masks),
                "aupro": aupro(mp, masks),
                "iou": iou(mp, masks, cfg.detect.alpha),
            }
        out["variants"][name] = row
        print(name, row, flush=True)
    write_json(a.json, out)


if __name__ == "__main__":
    main()
