"""Library entry points behind the CLI: test a run, predict on files, the end-to-end demo."""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from utad.checkpoint import load_checkpoint
from utad.config import UtadConfig, apply_override, from_dict, load_config, to_dict
from utad.data.bundle import DataBundle, build_data
from utad.data.images import is_image_file, load_mask
from utad.data.samples import list_images
from utad.detector import Detector
from utad.errors import UtadError
from utad.evaluate import evaluate
from utad.io import atomic_write, prepare_run_dir, write_json, write_text
from utad.model import build_pm
from utad.report import heatmap, overlay, save_learning_curve, save_panel
from utad.train import train

log = logging.getLogger("utad")


def _pick_examples(preds, labels: np.ndarray, per_group: int = 3) -> list[int]:
    """A few normal images and the highest- and lowest-scored anomalous ones, for the report."""
    idx = np.arange(len(preds))
    normal, anomalous = idx[labels == 0], idx[labels == 1]
    scores = np.array([p.score for p in preds])
    top = anomalous[np.argsort(-scores[anomalous])][:per_group]
    low = anomalous[np.argsort(scores[anomalous])][:1]
    return list(normal[:2]) + list(top) + [i for i in low if i not in top]


def with_measurement(det: Detector, overrides: list[str], data: DataBundle) -> Detector:
    """The same trained networks with another measurement (``pm.*``) or detection (``detect.*``) setting,
    recalibrated on the run's validation images: Table 3's single measurements without retraining."""
    values = to_dict(det.config)
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith(("pm.", "detect.")):
            raise UtadError(
                f"{item}: only pm.* and detect.* settings can change at test time; retrain for others"
            )
        apply_override(values, item)
    cfg = from_dict(values, "test overrides")
    pm, info = build_pm(cfg)
    new = Detector(det.ienet, det.expert, pm, cfg.detect, None, cfg.data.image_size).eval()
    new.config, new.backbone = cfg, info
    new.calibrate(DataLoader(data.val, batch_size=cfg.train.batch_size, shuffle=False))
    return new


def test_run(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained run on its test split; writes ``metrics.json``, ``report.png`` and
    ``learning_curve.png`` into ``out`` (default: the run). ``overrides`` (``pm.*``, ``detect.*``) evaluate
    another measurement with the same networks, recalibrated on validation images; they need an ``out``."""
    run = Path(run)
    det = Detector.load(run)
    cfg: UtadConfig = det.config
    data = build_data(cfg.data, cfg.seed, run.parent / ".utad-cache")
    if overrides:
        if out is None:
            raise UtadError("a test with --set overrides needs --out, so the run's own metrics.json is kept")
        det = with_measurement(det, overrides, data)
        cfg = det.config
    out = Path(out) if out is not None else run
    start = time.perf_counter()
    metrics, preds = evaluate(det, data, cfg.train.batch_size, progress)
    seconds = time.perf_counter() - start
    ckpt = load_checkpoint(run)
    metrics.update(
        {
            "dataset": data.name,
            "backbone": det.backbone.to_dict(),
            "random_backbone_weights": not det.backbone.pretrained and det.backbone.name != "none",
            "normalisation": {"method": cfg.detect.normalisation, **det.norm},
            "inference_ms_per_image": 1000 * seconds / max(1, len(preds)),
            "epochs": {"ienet": len(ckpt["history"]["ienet"]), "expert": len(ckpt["history"]["expert"])},
            "config": to_dict(cfg),
        }
    )
    if metrics["random_backbone_weights"]:
        metrics["warning"] = (
            "PM backbone has RANDOM (untrained) weights: not the paper's perceptual measurement"
        )
    write_json(out / "metrics.json", metrics)
    labels = np.array([s.label for s in data.test_samples]) if data.test_samples else data.test.labels
    chosen = _pick_examples(preds, np.asarray(labels))
    gts = None
    if data.test_samples and data.has_masks:
        size = cfg.data.image_size
        gts = [
            load_mask(data.test_samples[i].mask, size) if data.test_samples[i].mask else None for i in chosen
        ]
    title = f"{data.name}: image AUROC {metrics['image_auroc']:.3f}"
    if metrics["pixel_auroc"] is not None:
        title += f", pixel AUROC {metrics['pixel_auroc']:.3f}, IoU@{cfg.detect.alpha} {metrics['iou']:.3f}"
    title += f" — backbone {det.backbone.name}" + (
        " (RANDOM weights)" if metrics["random_backbone_weights"] else ""
    )
    save_panel([preds[i] for i in chosen], out / "report.png", gts, title)
    save_learning_curve(ckpt["history"], out / "learning_curve.png")
    return metrics


def _png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def _output_names(files: list[Path]) -> list[str]:
    """File stems for the outputs; inputs whose stems collide get their folder name in front (and an index)."""
    stems = [f.stem for f in files]
    names = [f"{f.parent.name}_{f.stem}" if stems.count(f.stem) > 1 else f.stem for f in files]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def predict_images(
    run: str | os.PathLike, inputs: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False
) -> list[dict[str, Any]]:
    """Predict image files or folders; writes maps/, masks/, overlays/ and scores.csv into ``out``."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += list_images(p)
        elif p.is_file():
            if not is_image_file(p):
                raise UtadError(f"{p}: not an image file (expected .png, .jpg, .bmp, .tif, .webp)")
            files.append(p)
        else:
            raise UtadError(f"{p}: file or folder not found")
    out = prepare_run_dir(out, overwrite=overwrite)
    det = Detector.load(run)
    rows = []
    names = _output_names(files)
    for pred, stem in zip(det.predict(files), names, strict=True):
        _png(out / "maps" / f"{stem}.png", heatmap(pred.anomaly_map))
        _png(out / "masks" / f"{stem}.png", pred.mask.astype(np.uint8) * 255)
        _png(out / "overlays" / f"{stem}.png", overlay(pred))
        rows.append(
            {
                "path": pred.path,
                "score": f"{pred.score:.6f}",
                "anomalous": int(pred.is_anomaly),
                "anomalous_pixels": int(pred.mask.sum()),
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "score", "anomalous", "anomalous_pixels"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "scores.csv", buf.getvalue())
    write_json(
        out / "predict.json",
        {
            "run": str(run),
            "n_images": len(rows),
            "alpha": det.detect.alpha,
            "backbone": det.backbone.to_dict(),
            "normalisation": {"method": det.detect.normalisation, **det.norm},
        },
    )
    return rows


def demo(
    out: str | os.PathLike, overrides: list[str] | None = None, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train on the built-in demo data with the ``cpu-fast`` preset, test, and write metrics and pictures."""
    cfg = load_config("cpu-fast", ["data.source=demo", *(overrides or [])])
    out = Path(out)
    start = time.perf_counter()
    train(cfg, out, overwrite=overwrite, progress=progress)
    metrics = test_run(out, progress=progress)
    metrics["wall_seconds"] = time.perf_counter() - start
    write_json(out / "metrics.json", metrics)
    return metrics
