"""Library entry points behind the CLI: test a run, predict on files, the end-to-end demo."""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from utad import runlog
from utad.checkpoint import load_checkpoint
from utad.config import UtadConfig, apply_override, dump_yaml, from_dict, load_config, to_dict
from utad.data.bundle import DataBundle, build_data
from utad.data.images import is_image_file, load_image, load_mask
from utad.detector import Detector, MapDetector, Prediction
from utad.errors import DataError, UtadError
from utad.evaluate import evaluate
from utad.explain import code_analysis, explain_image, normal_index
from utad.fidelity import low_fidelity_warning
from utad.html_report import per_defect_type, write_html_report
from utad.io import atomic_write, prepare_run_dir, write_json
from utad.methods import count_parameters
from utad.model import build_pm
from utad.report import heatmap, overlay, save_fidelity_panel, save_learning_curve, save_panel
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


# data settings a test may change (what it evaluates on, and how strong the drawn defects of "synthetic" are)
TEST_TIME_DATA = ("data.evaluate_on", "data.synthetic_strength")


def _key(item: str) -> str:
    return item.split("=", 1)[0].strip()


def overridden(cfg: UtadConfig, items: list[str]) -> UtadConfig:
    """``cfg`` with the ``section.key=value`` test-time overrides ``items`` applied."""
    values = to_dict(cfg)
    for item in items:
        apply_override(values, item)
    return from_dict(values, "test overrides")


def with_measurement(det: Detector, overrides: list[str], data: DataBundle) -> Detector:
    """The same trained networks with another measurement (``pm.*``) or detection (``detect.*``) setting,
    recalibrated on the run's validation images: Table 3's single measurements without retraining."""
    for item in overrides:
        if not _key(item).startswith(("pm.", "detect.")):
            raise UtadError(
                f"{item}: only pm.*, detect.*, {' and '.join(TEST_TIME_DATA)} can change at test time; "
                "retrain for others"
            )
    cfg = overridden(det.config, overrides)
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
    report: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a trained run on its test split; writes ``metrics.json``, ``report.png``,
    ``learning_curve.png``, ``tsne.png`` and (``report``) the self-contained ``report.html`` into ``out``
    (default: the run). ``overrides`` (``pm.*``, ``detect.*``) evaluate
    another measurement with the same networks, recalibrated on validation images; they need an ``out``."""
    run = Path(run)
    det = Detector.load(run, device)
    overrides = list(overrides or [])
    if overrides and out is None:
        raise UtadError("a test with --set overrides needs --out, so the run's own metrics.json is kept")
    on_data = [o for o in overrides if _key(o) in TEST_TIME_DATA]
    if on_data:  # what to evaluate on, not how: no recalibration
        det.config = overridden(det.config, on_data)
    cfg: UtadConfig = det.config
    data = build_data(cfg.data, cfg.seed, run.parent / ".utad-cache")
    measurement = [o for o in overrides if o not in on_data]
    if measurement:
        det = with_measurement(det, measurement, data)
        cfg = det.config
    out = Path(out) if out is not None else run
    out.mkdir(parents=True, exist_ok=True)
    runlog.attach(
        out, "test", f"run {run}, method {cfg.method}, backbone {det.backbone.name} ({det.backbone.weights})"
    )
    ok = False
    try:
        metrics = _test_run(run, out, det, cfg, data, progress, report)
        ok = True
        return metrics
    finally:
        runlog.detach(ok)


def _test_run(
    run: Path, out: Path, det, cfg: UtadConfig, data: DataBundle, progress: bool, report: bool
) -> dict:
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
            "method": cfg.method,
            "parameters": count_parameters(det),
            "train_seconds": train_seconds(ckpt["history"]),
            "epochs": {stage: len(rows) for stage, rows in ckpt["history"].items() if stage != "fit"},
            "config": to_dict(cfg),
        }
    )
    warnings = []
    if metrics["random_backbone_weights"]:
        warnings.append("PM backbone has RANDOM (untrained) weights: not the paper's perceptual measurement")
    f = metrics.get("fidelity") or {}
    low = low_fidelity_warning(f.get("gain"), f"{f.get('n_images')} normal test images")
    if low:
        warnings.append(low)
    if warnings:
        metrics["warning"] = "; ".join(warnings)
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
    title = f"{cfg.method}: {title}" if cfg.method != "utad" else title
    save_panel([preds[i] for i in chosen], out / "report.png", gts, title)
    analysis = code_analysis(det, data, out, cfg.seed)  # tsne.png, tsne.csv (UTAD only)
    if analysis is not None:
        metrics["code_analysis"] = analysis
    kinds = data.test_kinds or ["good" if y == 0 else "anomalous" for y in np.asarray(labels)]
    all_gts = None
    if data.test_samples and data.has_masks:
        size = cfg.data.image_size
        all_gts = [
            load_mask(s.mask, size) if s.mask else np.zeros((size, size), bool) for s in data.test_samples
        ]
    metrics["per_defect_type"] = per_defect_type(preds, kinds, all_gts, cfg.detect.alpha)
    write_json(out / "metrics.json", metrics)
    write_test_scores(out / "test_scores.csv", preds, np.asarray(labels), kinds)
    if preds[0].impression is not None:
        save_fidelity_panel([preds[i] for i in chosen], out / "fidelity.png")
    if any(stage != "fit" and rows for stage, rows in ckpt["history"].items()):
        save_learning_curve(ckpt["history"], out / "learning_curve.png")
    if report:
        write_html_report(out, metrics, preds, np.asarray(labels), kinds, all_gts, dump_yaml(cfg))
    return metrics


SCORE_FIELDS = ["path", "score", "anomalous", "anomalous_pixels"]  # scores.csv of predict
TEST_SCORE_FIELDS = [SCORE_FIELDS[0], "label", "kind", *SCORE_FIELDS[1:]]  # test_scores.csv: plus the truth


def score_row(pred: Prediction) -> dict[str, Any]:
    """A prediction's row of ``scores.csv`` (``SCORE_FIELDS``)."""
    return {
        "path": pred.path,
        "score": f"{pred.score:.6f}",
        "anomalous": int(pred.is_anomaly),
        "anomalous_pixels": int(pred.mask.sum()),
    }


def write_test_scores(path: Path, preds: list[Prediction], labels: np.ndarray, kinds: list[str]) -> None:
    """One row per evaluated image, atomically: its path (a file, or ``<split>:<index>`` for in-memory data),
    label (1 = anomalous), kind ("good", the defect type or the foreign class), image score, whether the score
    is above alpha, and the number of pixels above alpha; ``predict``'s columns plus the ground truth."""

    def write(f) -> None:
        writer = csv.DictWriter(f, fieldnames=TEST_SCORE_FIELDS)
        writer.writeheader()
        for pred, label, kind in zip(preds, labels, kinds, strict=True):
            writer.writerow({**score_row(pred), "label": int(label), "kind": kind})

    atomic_write(path, write, mode="w")


def train_seconds(history: dict[str, list[dict]]) -> float:
    """Training time of a run from its history: the last epoch's time of every stage (or the fit's)."""
    return float(sum(rows[-1].get("seconds", 0.0) for rows in history.values() if rows))


def _png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def _output_names(files: list[Path]) -> list[str]:
    """Output stems, one per input, unique and safe as file names inside ``--out``.

    Only the input's own stem is used (never its folders), with characters outside letters, digits, ``._-``
    replaced, so no name can climb out of ``--out`` (``..``, separators, absolute paths); stems that collide get
    their folder's name in front, then an index.
    """

    def clean(text: str) -> str:
        text = re.sub(r"[^\w.-]", "_", text).strip(".") or "image"
        return text[:120]

    stems = [clean(f.stem) for f in files]
    names = [f"{clean(f.parent.name)}_{st}" if stems.count(st) > 1 else st for f, st in zip(files, stems)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def collect_inputs(inputs: list[str | os.PathLike]) -> tuple[list[Path], list[dict[str, str]]]:
    """Image files named directly or found in folders (not recursive), and the inputs skipped with why."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for q in sorted(p.iterdir()):
                if is_image_file(q) and not q.is_file():
                    skipped.append({"path": str(q), "reason": "not a file (a folder or special file)"})
                elif is_image_file(q):
                    files.append(q)
        elif p.is_file():
            if is_image_file(p):
                files.append(p)
            else:
                skipped.append(
                    {"path": str(p), "reason": "not an image file name (.png, .jpg, .bmp, .tif, .webp, .gif)"}
                )
        else:
            skipped.append({"path": str(p), "reason": "file or folder not found"})
    return files, skipped


class _DecodedFiles(torch.utils.data.Dataset):
    """``(index, image array or None, reason it was unreadable)`` per file, for the prediction loader."""

    def __init__(self, files: list[Path], size: int, channels: int) -> None:
        self.files, self.size, self.channels = files, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str]:
        path = self.files[i]
        try:
            return i, load_image(path, self.size, self.channels), ""
        except DataError as exc:
            return i, None, str(exc).removeprefix(f"{path}: ")


def predict_images(
    run: str | os.PathLike,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    overwrite: bool = False,
    batch_size: int = 8,
    progress: bool = False,
    explain: bool = False,
    workers: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    """Predict image files or folders into ``out``: maps/, masks/, overlays/, scores.csv and predict.json
    (``explain``: also ``explain/<name>.png`` and ``.json`` per image, ``utad.explain.explain_image``).
    Images are decoded in ``workers`` background processes (0: in this one) while the model runs; memory stays
    flat however many files there are (one batch of decoded images and its outputs at a time).

    Every readable image is scored; a file that cannot be read (corrupt, truncated, not an image, too large)
    is skipped and listed with its reason, never stopping the batch. Results are written as they come: each
    picture atomically, each batch's rows appended to scores.csv and flushed, so a crash keeps what was done.
    Returns the summary written to predict.json (``rows``, ``skipped``, ...).
    """
    from utad.export import load_any

    files, skipped = collect_inputs(inputs)
    det = load_any(
        run, device
    )  # a run folder, or an exported .onnx; before the output folder: a bad one leaves nothing
    index = _explain_index(det, run) if explain else None
    out = prepare_run_dir(out, overwrite=overwrite)
    cfg = det.config
    names = _output_names(files)
    rows: list[dict[str, Any]] = []
    with open(out / "scores.csv", "w", newline="", encoding="utf-8") as csv_file:
        writer = csv.DictWriter(csv_file, fieldnames=SCORE_FIELDS)
        writer.writeheader()
        batch: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            x = torch.from_numpy(np.stack([a for _, a in batch]).transpose(0, 3, 1, 2).copy())
            preds = det.predict_tensor(x, [str(files[i]) for i, _ in batch])
            for (i, _), pred in zip(batch, preds, strict=True):
                stem = names[i]
                _png(out / "maps" / f"{stem}.png", heatmap(pred.anomaly_map))
                _png(out / "masks" / f"{stem}.png", pred.mask.astype(np.uint8) * 255)
                _png(out / "overlays" / f"{stem}.png", overlay(pred))
                if explain:
                    x1 = torch.from_numpy(pred.image.transpose(2, 0, 1).copy())[None]
                    explain_image(det, x1, pred.path, out / "explain" / stem, index)
                row = score_row(pred)
                writer.writerow(row)
                rows.append(row)
            csv_file.flush()
            os.fsync(csv_file.fileno())
            batch.clear()

        bar = tqdm(total=len(files), desc="predict", unit="image", disable=not progress, dynamic_ncols=True)
        decoded = DataLoader(  # decoding in worker processes overlaps the networks' compute
            _DecodedFiles(files, cfg.data.image_size, cfg.data.channels),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=list,
        )
        for chunk in decoded:
            for i, array, reason in chunk:
                bar.update(1)
                if array is None:
                    skipped.append({"path": str(files[i]), "reason": reason})
                    log.warning("skipped %s: %s", files[i], reason)
                    continue
                batch.append((i, array))
                if len(batch) == batch_size:
                    flush()
        if batch:
            flush()
        bar.close()
    summary = {
        "run": str(run),
        "n_images": len(rows),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "alpha": det.detect.alpha,
        "backbone": det.backbone.to_dict(),
        "normalisation": {"method": det.detect.normalisation, **det.norm},
    }
    write_json(out / "predict.json", summary)
    if not rows:
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5]) or "no inputs"
        raise UtadError(f"no image could be read ({reasons})")
    return {**summary, "rows": rows}


def _explain_index(det, run, data: DataBundle | None = None):
    """The nearest-normal index over the run's training images (None for methods without IE-Net)."""
    if not isinstance(det, MapDetector):
        raise UtadError(
            f"{run}: explanations need the trained networks (a run folder), not an exported model"
        )
    cfg = det.config
    data = data or build_data(cfg.data, cfg.seed, Path(run).parent / ".utad-cache")
    return normal_index(det, data.train)


def explain_images(
    run: str | os.PathLike,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    k: int = 3,
    overwrite: bool = False,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """``utad explain``: for each image the panel of ``utad.explain.explain_image`` as ``<out>/<name>.png`` and its
    numbers as ``<name>.json``; the ground truth outline is drawn when the image is one of the run's test images
    with a mask."""
    det = Detector.load(run, device)
    cfg = det.config
    files, skipped = collect_inputs(inputs)
    if skipped:
        raise UtadError("; ".join(f"{s['path']}: {s['reason']}" for s in skipped))
    data = build_data(cfg.data, cfg.seed, Path(run).parent / ".utad-cache")  # decoded once, for both uses
    index = _explain_index(det, run, data)
    masks = {str(Path(s.path).resolve()): s.mask for s in (data.test_samples or []) if s.mask is not None}
    out = prepare_run_dir(out, overwrite=overwrite)
    infos = []
    for f, name in zip(files, _output_names(files), strict=True):
        x = torch.from_numpy(load_image(f, cfg.data.image_size, cfg.data.channels).transpose(2, 0, 1).copy())
        mask = masks.get(str(f.resolve()))
        gt = load_mask(mask, cfg.data.image_size) if mask is not None else None
        infos.append(explain_image(det, x[None], str(f), out / name, index, gt, k))
    return infos


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
