"""How far can an anomaly-free expert get? The fidelity gain of an oracle x^ that is perfect except on random
texture it cannot place.

The expert sees x only through a global detail vector s (Sec. 3.2), so detail that is randomly placed on every
good part (pill's red speckles) cannot be put back at the right pixels by any anomaly-free x^: the best it can
do there is the impression's colour. This script measures the fidelity gain (``utad.fidelity``) of that best
case on a run's normal test images:

    oracle = where(T, m, x)

with T the random-texture mask: pixels whose redness ``r - (g + b) / 2`` exceeds ``--threshold``, dilated by
``--dilate`` pixels (pill's speckles; a rule for other categories would be another mask). ``phi(x, oracle)``
is then the part of ``phi(x, m)`` that no expert without a spatial path from x can remove, and
``phi(x, m) / phi(x, oracle)`` is the ceiling of the fidelity gain. The run's own x^ is measured beside it.

That oracle is still perfect on every other pixel, fine random surface grain included. A second reference
measures how much of phi comes from the finest scale alone: ``x`` blurred by a Gaussian of ``--sigma`` px (all
structure kept, only pixel-level grain removed). If ``phi(x, blur(x))`` is already more than half of
``phi(x, m)``, a fidelity gain of 2 needs x^ to reproduce pixel-level grain, which no smooth reconstruction
does.

    python benchmarks/fidelity_ceiling.py runs/pill-b3 --json benchmarks/results/pill-fidelity-ceiling.json
    python benchmarks/fidelity_ceiling.py runs/demo-b3 --no-texture --json benchmarks/results/demo-fidelity-ceiling.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utad.data.bundle import build_data
from utad.detector import Detector, gaussian_kernel
from utad.fidelity import FidelityMeter
from utad.io import write_json


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (the detector's kernel, ``gaussian_kernel``; reflect padding) of (B, C, H, W)."""
    k = gaussian_kernel(sigma).to(x.dtype)
    r, c = k.numel() // 2, x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def texture_mask(x: torch.Tensor, threshold: float, dilate: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) bool: redness above ``threshold``, dilated by ``dilate`` px."""
    red = x[:, :1] - (x[:, 1:2] + x[:, 2:3]) / 2
    mask = (red > threshold).float()
    if dilate:
        mask = F.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate)
    return mask > 0


@torch.no_grad()
def ceiling(run: str, thresholds: list[float], dilate: int, sigmas: list[float], batch_size: int = 8) -> dict:
    det = Detector.load(run)
    cfg = det.config
    data = build_data(cfg.data, cfg.seed, Path(run).parent / ".utad-cache")
    normal = [i for i, s in enumerate(data.test_samples) if s.label == 0]
    meters = {t: FidelityMeter(det.pm, with_ssim=False) for t in thresholds}
    actual = FidelityMeter(det.pm, with_ssim=False)
    share = {t: [] for t in thresholds}
    blurred = {s: FidelityMeter(det.pm, with_ssim=False) for s in sigmas}
    for start in range(0, len(normal), batch_size):
        x = torch.stack([data.test[i]["image"] for i in normal[start : start + batch_size]])
        m = det.ienet.impression(x)
        x_hat = det.expert(x, m).x_hat if det.expert is not None else None
        actual.update(x, m, x_hat)
        for t in thresholds:
            mask = texture_mask(x, t, dilate)
            share[t].append(float(mask.float().mean()))
            meters[t].update(x, m, torch.where(mask, m, x))
        for s in sigmas:
            blurred[s].update(x, m, gaussian_blur(x, s))
    result = {
        "run": str(run),
        "n_images": len(normal),
        "image_size": cfg.data.image_size,
        "backbone": det.backbone.name,
        "dilate_px": dilate,
        "actual": actual.result(),
        "oracle": [
            {
                "redness_threshold": t,
                "mask_share": float(np.mean(share[t])),
                **{k: v for k, v in meters[t].result().items() if k != "n_images"},
            }
            for t in thresholds
        ],
        "blurred_x": [
            {"sigma_px": s, **{k: v for k, v in blurred[s].result().items() if k != "n_images"}}
            for s in sigmas
        ],
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument(
        "--threshold", type=float, action="append", help="redness thresholds (default 0.02 0.03 0.05)"
    )
    ap.add_argument("--no-texture", action="store_true", help="skip the red-speckle oracle (not pill)")
    ap.add_argument("--dilate", type=int, default=1)
    ap.add_argument("--sigma", type=float, action="append", help="blur sigmas in px (default 0.5 1.0)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    thresholds = [] if args.no_texture else (args.threshold or [0.02, 0.03, 0.05])
    result = ceiling(args.run, thresholds, args.dilate, args.sigma or [0.5, 1.0])
    if args.json:
        write_json(args.json, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
