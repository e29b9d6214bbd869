"""Anomaly-detection metrics as pure functions over numpy arrays (the MVTec AD reference definitions).

Shapes: ``scores``/``labels`` (N,); ``maps``/``masks`` (N, H, W) (or anything that flattens consistently), maps
float, masks bool or {0, 1}. Higher score = more anomalous. A set without both classes has no AUROC: that is a
``ValueError`` saying so, not a silent NaN.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _check_binary(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what} must be binary (0/1 or bool)")
    y = y.astype(bool)
    if y.all() or not y.any():
        kind = "anomalous" if not y.any() else "normal"
        raise ValueError(f"{what} contain no {kind} entries: AUROC/AUPRO need both normal and anomalous data")
    return y


def _check_shapes(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} differ in shape: {a.shape} vs {b.shape}")


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve over one score per image; ``labels`` 1 = anomalous image."""
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    _check_shapes(scores, labels, "scores and labels")
    return float(roc_auc_score(_check_binary(labels, "labels"), scores))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """ROC AUC over all pixels of the set pooled (anomaly-free images included), at the masks' resolution."""
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks)
    _check_shapes(maps, masks, "maps and masks")
    return float(roc_auc_score(_check_binary(masks.ravel(), "masks"), maps.ravel()))


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap (PRO) against false-positive rate, at every distinct threshold (descending).

    Ground truth of each image is split into 8-connected regions. At threshold t, FPR(t) is the fraction of all
    normal pixels of the set with score >= t, PRO(t) the mean over all regions of the fraction of the region's
    pixels with score >= t. Returns (fpr, pro), both starting at 0 and ending at 1, fpr non-decreasing.
    """
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks).astype(bool)
    _check_shapes(maps, masks, "maps and masks")
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    _check_binary(masks.ravel(), "masks")
    weights = np.zeros(maps.shape, dtype=np.float64)  # contribution of each pixel to PRO
    n_regions = 0
    for i in range(len(masks)):
        labelled, n = ndimage.label(masks[i], structure=_EIGHT_CONNECTED)
        if n == 0:
            continue
        sizes = np.bincount(labelled.ravel(), minlength=n + 1).astype(np.float64)
        region_w = np.zeros(n + 1)
        region_w[1:] = 1.0 / sizes[1:]
        weights[i] = region_w[labelled]
        n_regions += n
    weights /= n_regions
    normal = ~masks
    fp_w = normal.astype(np.float64) / normal.sum()

    order = np.argsort(-maps.ravel(), kind="stable")
    sorted_scores = maps.ravel()[order]
    fpr = np.cumsum(fp_w.ravel()[order])
    pro = np.cumsum(weights.ravel()[order])
    # one point per distinct threshold: the last index of each run of equal scores
    last = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), sorted_scores.size - 1]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    return np.clip(fpr, 0.0, 1.0), np.clip(pro, 0.0, 1.0)


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [0, x_max], interpolating y linearly at x_max."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max:
        j = np.searchsorted(x, x_max, side="right")  # first point beyond x_max
        if j < len(x):
            y_at = ys[-1] + (y[j] - ys[-1]) * (x_max - xs[-1]) / (x[j] - xs[-1])
        else:  # the curve ends (rounding) just short of x_max: extend it flat
            y_at = ys[-1]
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_at]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD reference definition).

    Trapezoid rule over (FPR, PRO) up to ``fpr_limit`` with linear interpolation at the limit, divided by
    ``fpr_limit`` (not by the FPR actually reached), so a perfect detector scores 1.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(maps, masks)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def iou(maps: np.ndarray, masks: np.ndarray, threshold: float, pooling: str = "set") -> float:
    """Intersection over union of ``maps > threshold`` (the paper's Eq. 9 with alpha) and the masks.

    ``pooling="set"`` (default): |pred AND gt| / |pred OR gt| with both counts summed over every pixel of the
    whole set, anomaly-free images included (their false positives enlarge the union). ``pooling="image"``: the
    mean of per-image IoUs over the images whose union is non-empty. ``pooling="defect"``: the mean of per-image
    IoUs over the images with ground-truth anomalous pixels (anomaly-free images left out): the paper-comparable
    reading of "IoU at alpha" per category.
    """
    maps, masks = np.asarray(maps), np.asarray(masks).astype(bool)
    _check_shapes(maps, masks, "maps and masks")
    pred = maps > threshold
    if pooling == "set":
        union = np.logical_or(pred, masks).sum()
        if union == 0:
            raise ValueError("IoU undefined: no predicted and no ground-truth anomalous pixel in the set")
        return float(np.logical_and(pred, masks).sum() / union)
    if pooling in ("image", "defect"):
        if maps.ndim < 3:
            raise ValueError(f"pooling={pooling!r} needs maps of shape (N, H, W)")
        axes = tuple(range(1, maps.ndim))
        inter = np.logical_and(pred, masks).sum(axis=axes)
        union = np.logical_or(pred, masks).sum(axis=axes)
        keep = union > 0 if pooling == "image" else masks.any(axis=axes)
        if not keep.any():
            what = (
                "no predicted and no ground-truth anomalous pixel"
                if pooling == "image"
                else "no defect image"
            )
            raise ValueError(f"IoU undefined: {what} in the set")
        return float(np.mean(inter[keep] / union[keep]))
    raise ValueError(f"pooling must be 'set', 'image' or 'defect', got {pooling!r}")


def f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds and the threshold reaching it (predict anomalous when score >= it).

    Report it on the test set as a ceiling; choose operating thresholds on validation data, never on test data.
    """
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel()
    _check_shapes(scores, labels, "scores and labels")
    precision, recall, thresholds = precision_recall_curve(_check_binary(labels, "labels"), scores)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)[:-1]
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])
