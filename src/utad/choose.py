"""``utad choose``: pick a trained run's measurement (and, given several runs, the run) on synthetic defects of
the validation images.

Not part of the paper, which fixes PM to three VGG-19 layers and three terms (Eq. 8). Which layers and terms
separate defects from normal variation best depends on the category and the backbone (on bottle with
EfficientNet-Lite0 the deepest layer alone beats the sum; on pill it does not, ``benchmarks/results/
mvtec-choice.md``), and MVTec's training split has no defects to choose with. This module measures each
candidate measurement with the same networks on ``data.evaluate_on=synthetic`` (``utad.data.synthetic``: the
run's validation images, as they are and with drawn defects), picks the best by ``RULE``, and writes a new run
folder: the same network weights with the chosen measurement, recalibrated on the validation images, so that
``utad test / predict / export`` use it. Given several runs trained on the same data with the same seed (so the
same validation images and defects), e.g. IE-Net with a code per position and with one code per image, it
also chooses between them. The trained runs are never changed.

One-class runs (MNIST, Fashion-MNIST, CIFAR-10: whole-image anomalies, no masks) are measured instead on
``data.evaluate_on=holdout`` (training images the run did not use: the normal class's beyond
``data.limit_train`` and the other classes'), ranked by ``RULE_ONE_CLASS``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.config import dump_yaml, to_dict
from utad.data.bundle import ONE_CLASS, build_data
from utad.detector import Detector, MapDetector, Prediction
from utad.errors import UtadError
from utad.evaluate import evaluate, test_labels
from utad.io import prepare_run_dir, write_json, write_text
from utad.metrics import image_auroc
from utad.runs import overridden, with_measurement

# name -> test-time overrides; "as-trained" is the run's own measurement (the paper's PM in the presets)
CANDIDATES: dict[str, list[str]] = {
    "as-trained": [],
    "layers-2-3": ["pm.layers=[conv2_2, conv3_4]"],
    "layer-3": ["pm.layers=[conv3_4]"],
    "term-x-m": ["pm.terms=[x_m]"],
    "term-x-xhat": ["pm.terms=[x_xhat]"],
}
# image-score settings tried on the chosen measurement, a second step: they change the image score only (not e,
# not the masks), so image AUROC alone decides between them, the measurement's choice stands, and the chosen
# measurement's maps are scored again instead of measured again (SCORE_KEYS only). On pill the
# smoothed maximum at sigma 4 let single red speckles of good pills decide the score (docs/fidelity.md)
SCORE_CANDIDATES: dict[str, list[str]] = {
    "sigma-8": ["detect.smooth_sigma=8"],
    "sigma-16": ["detect.smooth_sigma=16"],
    "top-1%": ["detect.score=topk", "detect.top_k=0.01"],
}
SCORE_KEYS = ("detect.smooth_sigma", "detect.score", "detect.top_k")
RULE_KEYS = ("image_auroc", "pixel_auroc", "aupro")
RULE = "the highest mean of image AUROC, pixel AUROC and AUPRO on the synthetic defects (ties: listed first)"
RULE_ONE_CLASS = "the highest image AUROC on held-out training images (ties: listed first)"
RULE_SCORE = (
    "then, on the same images, the image score with the highest image AUROC (the measurement's own unless "
    "another is strictly higher)"
)


def rule_score(metrics: dict[str, Any], keys: tuple[str, ...] = RULE_KEYS) -> float:
    """What ``RULE`` ranks candidates by: the mean of ``keys`` (``RULE_KEYS``) in a metrics dict."""
    return float(np.mean([metrics[k] for k in keys]))


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


def _validation_digest(data) -> str:
    """A digest of the validation images' pixels (where the data lives does not matter, what it holds does)."""
    h = hashlib.sha256()
    for i in range(len(data.val)):
        h.update(data.val[i]["image"].numpy().tobytes())
    return h.hexdigest()


def choose_measurement(
    runs: str | os.PathLike | list[str | os.PathLike],
    out: str | os.PathLike,
    candidates: dict[str, list[str]] | None = None,
    progress: bool = True,
    device: str = "auto",
    strength: float = 1.0,
    score_candidates: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Measure ``candidates`` (default ``CANDIDATES``) with each of ``runs`` (trained on the same data with the
    same seed, e.g. two IE-Net codes) on synthetic defects of their validation images, drawn at opacity scale
    ``strength`` (``data.synthetic_strength``), or for one-class runs on held-out training images; write
    ``out`` (a new run folder: the best run's networks with the best measurement, and ``choice.json``); returns
    the choice. Then ``score_candidates`` (default ``SCORE_CANDIDATES``; ``{}``: none) try other image scores
    with the chosen measurement on the same images (``RULE_SCORE``)."""
    runs = [Path(r) for r in (runs if isinstance(runs, list) else [runs])]
    out = Path(out)
    prepare_run_dir(out, create=False)  # refuse an existing, non-empty folder before any work
    candidates = dict(CANDIDATES if candidates is None else candidates)
    score_candidates = dict(SCORE_CANDIDATES if score_candidates is None else score_candidates)
    for name, extra in score_candidates.items():
        if not all(o.split("=", 1)[0].strip() in SCORE_KEYS for o in extra):
            raise UtadError(
                f"score candidate {name}: {extra} are not image-score settings ({', '.join(SCORE_KEYS)})"
            )
    rows, detectors, val_digest, seed, evaluated_on, keys, rule = [], {}, None, None, "", RULE_KEYS, RULE
    datas: dict[str, Any] = {}
    best_preds: list[Prediction] = []
    for run in runs:
        det = Detector.load(run, device)
        if det.config.method != "utad" or det.pm is None:
            raise UtadError(f"{run}: method {det.config.method} has no perceptual measurement to choose")
        cfg = det.config
        one_class = cfg.data.source in ONE_CLASS
        if one_class and strength != 1.0:
            raise UtadError(
                f"{run}: a one-class run is measured on held-out training images, not on drawn defects, so "
                "--synthetic-strength does not apply"
            )
        where = (
            ["data.evaluate_on=holdout"]
            if one_class
            else ["data.evaluate_on=synthetic", f"data.synthetic_strength={strength}"]
        )
        data = build_data(overridden(cfg, where).data, cfg.seed, run.parent / ".utad-cache")
        digest = _validation_digest(data)
        if val_digest is None:
            val_digest, seed = digest, cfg.seed
            n_defects = int(data.test.labels.sum())
            if one_class:
                keys, rule = ("image_auroc",), RULE_ONE_CLASS
                evaluated_on = (
                    f"{data.name}: {len(data.test)} held-out training images ({n_defects} of other classes)"
                )
            else:
                evaluated_on = (
                    f"{data.name}: {len(data.test)} images ({n_defects} with a defect, strength {strength:g})"
                )
        elif digest != val_digest or cfg.seed != seed:
            raise UtadError(
                f"{run}: its validation images or seed differ from {runs[0]}'s, so their evaluation images "
                "differ; runs compared by utad choose need the same data, data.val_fraction and seed"
            )
        datas[str(run)] = data
        for name, overrides in candidates.items():
            cand = with_measurement(det, overrides, data) if overrides else det
            metrics, preds = evaluate(cand, data, cfg.train.batch_size, progress)
            if not rows or rule_score(metrics, keys) > max(r["score"] for r in rows):
                best_preds = preds  # the maps of the best so far, for the image-score step
            rows.append(
                {
                    "run": str(run),
                    "name": name,
                    "overrides": overrides,
                    "score": rule_score(metrics, keys),
                    **{k: metrics.get(k) for k in (*RULE_KEYS, "iou", "iou_defect_mean")},
                }
            )
            detectors[(str(run), name)] = cand
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores
    chosen = detectors[(best["run"], best["name"])]
    score_rows, chosen_score, overrides, rescored = _choose_score(
        chosen, best, best_preds, datas[best["run"]], score_candidates
    )
    chosen = rescored if rescored is not None else chosen
    source = Path(best["run"])
    ckpt = load_checkpoint(source)
    ckpt.update(config=to_dict(chosen.config), norm=dict(chosen.norm), backbone=chosen.backbone.to_dict())
    choice = {
        "runs": [str(r) for r in runs],
        "rule": rule + ("; " + RULE_SCORE if score_rows else ""),
        "evaluated_on": evaluated_on,
        "chosen_run": best["run"],
        "chosen": best["name"],
        "chosen_score": chosen_score,
        "overrides": overrides,
        "candidates": rows,
        "score_candidates": score_rows,
    }
    out = prepare_run_dir(out)
    save_checkpoint(out, ckpt)
    write_text(out / "config.yaml", dump_yaml(chosen.config))
    for name in ("history.json", "learning_curve.png"):
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    write_json(out / "choice.json", choice)
    return choice


def _choose_score(
    chosen: Detector,
    best: dict[str, Any],
    preds: list[Prediction],
    data: Any,
    candidates: dict[str, list[str]],
) -> tuple[list[dict[str, Any]], str | None, list[str], Detector | None]:
    """The second step of :func:`choose_measurement`: ``candidates`` (image-score settings, ``SCORE_KEYS``) on
    top of the chosen measurement, scored from its normalised maps ``preds`` (the settings change neither the map
    nor its calibration); returns their rows, the name of the one chosen (None: the measurement's own score
    stays), the chosen overrides and its detector (None: ``chosen`` stays). A candidate that leaves the detection
    settings as they are is skipped (e.g. top-1 % for a run that already scores so)."""
    labels = test_labels(data)
    maps = torch.from_numpy(np.stack([p.anomaly_map for p in preds]))[:, None]
    rows: list[dict[str, Any]] = []
    for name, extra in candidates.items():
        cfg = overridden(chosen.config, extra)
        if cfg.detect == chosen.config.detect:
            continue
        scorer = MapDetector(cfg.detect, chosen.norm, cfg.data.image_size)
        scores = scorer.image_score(scorer.smooth(maps)).numpy()
        rows.append(
            {
                "name": name,
                "overrides": [*best["overrides"], *extra],
                "image_auroc": image_auroc(scores, labels),
            }
        )
    top = max(rows, key=lambda r: r["image_auroc"], default=None)
    if top is None or top["image_auroc"] <= best["image_auroc"]:
        return rows, None, list(best["overrides"]), None
    return rows, top["name"], top["overrides"], with_measurement(chosen, candidates[top["name"]], data)
