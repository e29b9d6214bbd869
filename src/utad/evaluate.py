"""``utad test``: run a trained detector over the test split and compute the standard metrics.

Pixel metrics are computed at the ground truth's native resolution when every test image shares one size (as
in each MVTec AD category): normalised maps are upsampled bilinearly to it and masks read unresized. Otherwise
they are computed at the model's resolution. IoU is at alpha on the normalised map, pooled over the set
(``iou``) and, paper-comparable, as the mean of per-image IoUs over the defect images (``iou_defect_mean``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from utad.data.bundle import DataBundle
from utad.data.images import load_mask, open_image, resize_mask
from utad.detector import MapDetector, Prediction
from utad.errors import UtadError
from utad.fidelity import FidelityMeter, swapped_reconstruction
from utad.metrics import aupro, f1_max, image_auroc, iou, pixel_auroc


def run_detector(det: MapDetector, dataset, batch_size: int = 8, progress: bool = True) -> list[Prediction]:
    preds: list[Prediction] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="test", unit="batch", disable=not progress, dynamic_ncols=True):
        preds += det.predict_tensor(batch["image"], list(batch["path"]))
    return preds


def _stack(arrays: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(H, W, C) images -> one (B, C, H, W) tensor on ``device``."""
    return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()).to(device)


def normal_fidelity(
    det: MapDetector, preds: list[Prediction], labels: np.ndarray, batch_size: int = 8
) -> dict | None:
    """Fidelity (``utad.fidelity``) of x^ and m on the normal test images, with the detector's measurement;
    None for methods without an impression m and a perceptual measurement (the baselines)."""
    if det.pm is None or not preds or preds[0].impression is None:
        return None
    meter = FidelityMeter(det.pm)
    normal = [p for p, y in zip(preds, labels, strict=True) if y == 0]
    stack = partial(_stack, device=det.kernel.device)
    expert = getattr(det, "expert", None)
    for i in range(0, len(normal), batch_size):
        chunk = normal[i : i + batch_size]
        x_hat = None if chunk[0].reconstruction is None else stack([p.reconstruction for p in chunk])
        x, m = stack([p.image for p in chunk]), stack([p.impression for p in chunk])
        swapped = swapped_reconstruction(expert, x, m) if x_hat is not None else None
        meter.update(x, m, x_hat, x_hat_swapped=swapped)
    return meter.result()


def defect_fidelity(
    det: MapDetector,
    preds: list[Prediction],
    data: DataBundle,
    batch_size: int = 8,
    native_masks: np.ndarray | None = None,
) -> dict | None:
    """The same distances as ``normal_fidelity`` averaged over the ground-truth defect pixels of the anomalous
    test images (masks at the model's resolution): the *defect gain* near 1 says x^ keeps the defect out as m
    does, near the normal gain that x^ copies it (``utad.fidelity``). None without masks, an impression or a
    perceptual measurement. ``native_masks`` (N, H, W) bool: the masks already read at native resolution,
    resized here as ``load_mask`` does (``resize_mask``) (else read from disk again)."""
    if det.pm is None or not preds or preds[0].impression is None or not data.test_samples:
        return None
    size = preds[0].image.shape[0]
    if native_masks is not None:
        masks = [
            resize_mask(g, size) if s.label and s.mask else None
            for s, g in zip(data.test_samples, native_masks, strict=True)
        ]
    else:
        masks = [load_mask(s.mask, size) if s.label and s.mask else None for s in data.test_samples]
    chosen = [(p, g) for p, g in zip(preds, masks, strict=True) if g is not None and g.any()]
    if not chosen:
        return None
    meter = FidelityMeter(det.pm, masked=True)
    stack = partial(_stack, device=det.kernel.device)
    for i in range(0, len(chosen), batch_size):
        chunk = [p for p, _ in chosen[i : i + batch_size]]
        mask = stack([g[..., None].astype(np.float32) for _, g in chosen[i : i + batch_size]])
        x_hat = None if chunk[0].reconstruction is None else stack([p.reconstruction for p in chunk])
        meter.update(stack([p.image for p in chunk]), stack([p.impression for p in chunk]), x_hat, mask)
    return meter.result()


def read_native_masks(data: DataBundle) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Masks at native resolution (N, H, W) when all test images share one size, else None."""
    samples = data.test_samples
    if not samples:
        return None
    sizes = {open_image(s.path).size for s in samples}
    if len(sizes) != 1:
        return None
    w, h = sizes.pop()
    masks = np.zeros((len(samples), h, w), dtype=bool)
    for i, s in enumerate(samples):
        if s.mask is not None:
            masks[i] = load_mask(s.mask, None)
    return masks, (h, w)


def test_labels(data: DataBundle) -> np.ndarray:
    """The test images' labels (1 = anomalous) without decoding the images."""
    if data.test_samples is None:
        return np.asarray(data.test.labels)
    return np.array([s.label for s in data.test_samples])


def maps_and_masks(
    preds: list[Prediction], data: DataBundle, native: tuple[np.ndarray, tuple[int, int]] | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """The normalised maps (N, H, W) and ground-truth masks the pixel metrics score, and at which resolution:
    the masks' native one (``native``, from ``read_native_masks``; maps upsampled bilinearly) where every test image
    has one size, else the model's (the dataset's resized masks)."""
    maps = torch.from_numpy(np.stack([p.anomaly_map for p in preds]))[:, None]
    if native is None:
        masks = np.stack([data.test[i]["mask"][0].numpy() for i in range(len(data.test))])
        return maps[:, 0].numpy(), masks, f"{maps.shape[-1]}x{maps.shape[-2]} (model)"
    masks, (h, w) = native
    if maps.shape[-2:] != (h, w):
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)
    return maps[:, 0].numpy(), masks, f"{w}x{h} (native)"


def evaluate(
    det: MapDetector, data: DataBundle, batch_size: int = 8, progress: bool = True
) -> tuple[dict[str, Any], list[Prediction]]:
    """Metrics dict (keys image_auroc, pixel_auroc, aupro, iou, f1_max, ...) and the predictions."""
    labels = test_labels(data)
    if len(set(labels.tolist())) < 2:
        missing = "normal" if labels.min() == 1 else "anomalous"
        hint = " (folder source: add test_good)" if missing == "normal" else ""
        raise UtadError(
            f"{data.name}: the test set has no {missing} images, so image AUROC and F1 are undefined{hint}"
        )
    preds = run_detector(det, data.test, batch_size, progress)
    scores = np.array([p.score for p in preds])
    f1, f1_thr = f1_max(scores, labels)
    metrics: dict[str, Any] = {
        "image_auroc": image_auroc(scores, labels),
        "pixel_auroc": None,
        "aupro": None,
        "iou": None,
        "f1_max": f1,
        "f1_max_threshold": f1_thr,
        "alpha": det.detect.alpha,
        "iou_pooling": "set: |pred & gt| / |pred | gt| summed over every test pixel",
        "iou_defect_mean_pooling": "mean over defect images of each image's |pred & gt| / |pred | gt|",
        "n_test": len(preds),
        "n_anomalous": int(labels.sum()),
        "fidelity": normal_fidelity(det, preds, labels, batch_size),
    }
    if data.has_masks:
        native = read_native_masks(data)
        maps_np, masks, metrics["eval_resolution"] = maps_and_masks(preds, data, native)
        metrics["pixel_auroc"] = pixel_auroc(maps_np, masks)
        metrics["aupro"] = aupro(maps_np, masks)
        metrics["iou"] = iou(maps_np, masks, det.detect.alpha)
        metrics["iou_defect_mean"] = iou(maps_np, masks, det.detect.alpha, pooling="defect")
        metrics["defect_fidelity"] = defect_fidelity(
            det, preds, data, batch_size, native[0] if native is not None else None
        )
    return metrics, preds
