"""Pictures: for each image the paper's intermediate results (Fig. 7) — x, m, x^, m^, e — and the outline.

Plain functions over ``Prediction``s; matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from utad.detector import Prediction
from utad.io import atomic_write


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.clip(a, 0, 1)
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def heatmap(amap: np.ndarray, vmax: float = 1.0) -> np.ndarray:
    """(H, W) normalised map -> (H, W, 3) uint8 colour image (jet), 0..vmax."""
    return (plt.get_cmap("jet")(np.clip(amap / vmax, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay(pred: Prediction, gt: np.ndarray | None = None) -> np.ndarray:
    """x with the heat map blended in, the predicted mask outlined in red and the ground truth in green."""
    from skimage.segmentation import find_boundaries

    base = _rgb(pred.image)
    heat = heatmap(pred.anomaly_map).astype(np.float32) / 255.0
    out = 0.6 * base + 0.4 * heat
    out[find_boundaries(pred.mask, mode="inner")] = (1.0, 0.0, 0.0)
    if gt is not None and gt.shape == pred.mask.shape:
        out[find_boundaries(gt, mode="inner")] = (0.0, 1.0, 0.0)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def _save_fig(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=100))
    plt.close(fig)
    return path


def save_panel(
    preds: list[Prediction],
    path: str | os.PathLike,
    gts: list[np.ndarray | None] | None = None,
    title: str = "",
) -> Path:
    """One row per image: x, m, x^, m^, e, overlay (predicted outline red, ground truth green)."""
    cols = ["input x", "impression m", "reconstruction x^", "naive impression m^", "anomaly map e", "overlay"]
    fig, axes = plt.subplots(
        len(preds), len(cols), figsize=(2.0 * len(cols), 2.1 * len(preds)), squeeze=False
    )
    for r, p in enumerate(preds):
        gt = gts[r] if gts else None
        images = [p.image, p.impression, p.reconstruction, p.naive_impression]
        for c, im in enumerate(images):
            ax = axes[r, c]
            if im is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center")
            else:
                ax.imshow(_rgb(im))
        axes[r, 4].imshow(heatmap(p.anomaly_map))
        axes[r, 5].imshow(overlay(p, gt))
        axes[r, 0].set_ylabel(
            f"{Path(p.path).parent.name}/{Path(p.path).stem}\nscore {p.score:.2f}", fontsize=7
        )
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save_fig(fig, path)


def save_learning_curve(history: dict, path: str | os.PathLike) -> Path:
    """Loss per epoch of both stages."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for ax, stage in zip(axes, ("ienet", "expert"), strict=True):
        rows = history.get(stage) or []
        for key in rows[0].keys() if rows else []:
            if key in ("epoch", "seconds"):
                continue
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=key)
        ax.set_title({"ienet": "stage 1: IE-Net", "expert": "stage 2: Expert-Net"}[stage])
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        if rows:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save_fig(fig, path)
