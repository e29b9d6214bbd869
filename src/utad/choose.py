"""``utad choose``: pick a trained run's measurement on synthetic defects of its validation images.

Not part of the paper, which fixes PM to three VGG-19 layers and three terms (Eq. 8). Which layers and terms
separate defects from normal variation best depends on the category and the backbone (on bottle with
EfficientNet-Lite0 the deepest layer alone beats the sum; on pill it does not, ``benchmarks/results/
mvtec-choice.md``), and MVTec's training split has no defects to choose with. This module measures each
candidate measurement with the same networks on ``data.evaluate_on=synthetic`` (``utad.data.synthetic``: the
run's validation images, as they are and with drawn defects), picks the best by ``RULE``, and writes a new run
folder: the same network weights with the chosen measurement, recalibrated on the validation images, so that
``utad test / predict / export`` use it. The trained run is never changed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.config import dump_yaml, to_dict
from utad.data.bundle import build_data
from utad.detector import Detector
from utad.errors import UtadError
from utad.evaluate import evaluate
from utad.io import prepare_run_dir, write_json, write_text
from utad.runs import overridden, with_measurement

# name -> test-time overrides; "as-trained" is the run's own measurement (the paper's PM in the presets)
CANDIDATES: dict[str, list[str]] = {
    "as-trained": [],
    "layers-2-3": ["pm.layers=[conv2_2, conv3_4]"],
    "layer-3": ["pm.layers=[conv3_4]"],
    "term-x-m": ["pm.terms=[x_m]"],
    "term-x-xhat": ["pm.terms=[x_xhat]"],
}
RULE_KEYS = ("image_auroc", "pixel_auroc", "aupro")
RULE = "the highest mean of image AUROC, pixel AUROC and AUPRO on the synthetic defects (ties: listed first)"


def parse_candidates(items: list[str] | None) -> dict[str, list[str]]:
    """``NAME=OVERRIDE[;OVERRIDE...]`` strings (``--candidate``) as a candidate table; none: ``CANDIDATES``."""
    if not items:
        return dict(CANDIDATES)
    out: dict[str, list[str]] = {"as-trained": []}
    for item in items:
        name, sep, rest = item.partition(":")
        overrides = [o.strip() for o in rest.split(";") if o.strip()]
        if not sep or not name.strip() or not overrides:
            raise UtadError(f"--candidate {item!r}: expected NAME:KEY=VALUE[;KEY=VALUE...]")
        if name.strip() in out:
            raise UtadError(f"--candidate {item!r}: the name {name.strip()!r} is used twice")
        out[name.strip()] = overrides
    return out


def choose_measurement(
    run: str | os.PathLike,
    out: str | os.PathLike,
    candidates: dict[str, list[str]] | None = None,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Measure ``candidates`` (default ``CANDIDATES``) on synthetic defects of ``run``'s validation images,
    write ``out`` (a new run folder with the chosen measurement, and ``choice.json``); returns the choice."""
    run, out = Path(run), Path(out)
    prepare_run_dir(out, create=False)  # refuse an existing, non-empty folder before any work
    det = Detector.load(run, device)
    if det.config.method != "utad" or det.pm is None:
        raise UtadError(f"{run}: method {det.config.method} has no perceptual measurement to choose")
    candidates = dict(CANDIDATES if candidates is None else candidates)
    cfg = det.config
    synthetic = overridden(cfg, ["data.evaluate_on=synthetic"]).data
    data = build_data(synthetic, cfg.seed, run.parent / ".utad-cache")
    rows, detectors = [], {}
    for name, overrides in candidates.items():
        cand = with_measurement(det, overrides, data) if overrides else det
        metrics, _ = evaluate(cand, data, cfg.train.batch_size, progress)
        score = float(np.mean([metrics[k] for k in RULE_KEYS]))
        rows.append(
            {
                "name": name,
                "overrides": overrides,
                "score": score,
                **{k: metrics[k] for k in (*RULE_KEYS, "iou", "iou_defect_mean")},
            }
        )
        detectors[name] = cand
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores
    chosen = detectors[best["name"]]
    ckpt = load_checkpoint(run)
    ckpt.update(config=to_dict(chosen.config), norm=dict(chosen.norm), backbone=chosen.backbone.to_dict())
    choice = {
        "run": str(run),
        "rule": RULE,
        "evaluated_on": f"{data.name}: {len(data.test)} images ({int(data.test.labels.sum())} with a defect)",
        "chosen": best["name"],
        "overrides": best["overrides"],
        "candidates": rows,
    }
    out = prepare_run_dir(out)
    save_checkpoint(out, ckpt)
    write_text(out / "config.yaml", dump_yaml(chosen.config))
    for name in ("history.json", "learning_curve.png"):
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    write_json(out / "choice.json", choice)
    return choice
