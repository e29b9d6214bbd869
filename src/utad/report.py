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


PANEL_GAP = 4  # white pixels between the panel's tiles


def _tile(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) float image in [0, 1] at ``shape`` (bilinear resize only when the sizes differ)."""
    a = _rgb(a.astype(np.float32))
    if a.shape[:2] == shape:
        return a
    from PIL import Image

    im = Image.fromarray((a * 255).astype(np.uint8)).resize(shape[::-1], Image.BILINEAR)
    return np.asarray(im, np.float32) / 255.0


def panel_columns(preds: list[Prediction]) -> tuple[list[str], list[str | None]]:
    """The panel's column titles and the ``Prediction`` field each shows (None: e and the overlay, drawn from
    the map). A column no image has (m, x^, m^ for methods without them) is left out."""
    names = ["input x", "impression m", "reconstruction x^", "naive impression m^"]
    fields = ["image", "impression", "reconstruction", "naive_impression"]
    keep = [i for i, f in enumerate(fields) if i == 0 or any(getattr(p, f) is not None for p in preds)]
    return [names[i] for i in keep] + ["anomaly map e", "overlay"], [fields[i] for i in keep] + [None, None]


def panel_mosaic(preds: list[Prediction], gts: list[np.ndarray | None] | None = None) -> np.ndarray:
    """One row per image and one tile per ``panel_columns`` column, at the first image's resolution, tiles
    ``PANEL_GAP`` white pixels apart: x, m, x^, m^ (a grey tile where an image lacks one), e as a jet heat map
    and the overlay (predicted outline red, ground truth green). uint8 (H', W', 3)."""
    h, w = preds[0].image.shape[:2]
    _, fields = panel_columns(preds)
    rows_ = []
    for r, p in enumerate(preds):
        gt = gts[r] if gts else None
        tiles = []
        for f in fields[:-2]:
            im = getattr(p, f)
            tiles.append(np.full((h, w, 3), 0.85, np.float32) if im is None else _tile(im, (h, w)))
        tiles.append(_tile(heatmap(p.anomaly_map).astype(np.float32) / 255.0, (h, w)))
        tiles.append(_tile(overlay(p, gt).astype(np.float32) / 255.0, (h, w)))
        gap = np.ones((h, PANEL_GAP, 3), np.float32)
        rows_.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
    gap = np.ones((PANEL_GAP, rows_[0].shape[1], 3), np.float32)
    body = np.concatenate([t for row in rows_ for t in (row, gap)][:-1], axis=0)
    return np.round(np.clip(body, 0, 1) * 255).astype(np.uint8)


def _short_name(path: str) -> str:
    """``defect type/image stem`` for a file (``crack/003``); a name without a folder (``mnist-test:12``) as is;
    a synthetic defect on a validation image (``.../good/003.png#synthetic-stain``) as ``synthetic-stain/003``."""
    path, _, synthetic = path.partition("#")
    p = Path(path)
    if synthetic:
        return f"{synthetic}/{p.stem}"
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.name


def save_panel(
    preds: list[Prediction],
    path: str | os.PathLike,
    gts: list[np.ndarray | None] | None = None,
    title: str = "",
) -> Path:
    """``panel_mosaic`` with the column titles, each row's image name and score, and ``title``; drawn as one
    image in one matplotlib axes (one axes per tile made a 10-row panel take over a second)."""
    cols, _ = panel_columns(preds)
    mosaic = panel_mosaic(preds, gts)
    h, w = preds[0].image.shape[:2]
    n_cols = len(cols)
    labels = [f"{_short_name(p.path)}\nscore {p.score:.2f}" for p in preds]
    longest = max(len(line) for label in labels for line in label.splitlines())
    left = max(1.0, 0.06 * longest + 0.15)  # room for the row labels: about 0.06 in per character at 7 pt
    top, bottom = 0.3 + (0.25 if title else 0.0), 0.05  # inches around the image
    width = 2.0 * n_cols
    height = width * mosaic.shape[0] / mosaic.shape[1]
    fig = plt.figure(figsize=(left + width + 0.1, top + height + bottom))
    fw, fh = fig.get_size_inches()
    ax = fig.add_axes((left / fw, bottom / fh, width / fw, height / fh))
    ax.imshow(mosaic, interpolation="antialiased")
    ax.set_axis_off()
    for c, name in enumerate(cols):
        ax.text(c * (w + PANEL_GAP) + w / 2, -3, name, ha="center", va="bottom", fontsize=8)
    for r, label in enumerate(labels):
        ax.text(-4, r * (h + PANEL_GAP) + h / 2, label, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / fh, va="top")
    return _save_fig(fig, path)


def save_learning_curve(history: dict, path: str | os.PathLike) -> Path:
    """Loss terms per epoch of both stages, and the validation fidelity (``utad.fidelity``) per epoch:
    phi(x, m) and phi(x, x^) on the held-out normal images and their ratio, the fidelity gain."""
    if "ienet" not in history:  # another method: one panel per stage it has (the autoencoder's "ae")
        stages = [s for s, rows in history.items() if rows and "epoch" in rows[0]]
        fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(5, 3.2), squeeze=False)
        for ax, stage in zip(axes[0], stages, strict=False):
            rows = history[stage]
            for key in [k for k in rows[0] if k not in ("epoch", "seconds", "images", "images_per_process")]:
                ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=key)
            ax.set_title(f"{stage} losses")
            ax.set_xlabel("epoch")
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return _save_fig(fig, path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, stage in zip(axes[:2], ("ienet", "expert"), strict=True):
        rows = history.get(stage) or []
        keys = [
            k
            for k in (rows[0] if rows else {})
            if k not in ("epoch", "seconds", "images", "images_per_process") and not k.startswith("val_")
        ]
        for key in keys:
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], label=key)
        ax.set_title({"ienet": "stage 1: IE-Net losses", "expert": "stage 2: Expert-Net losses"}[stage])
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        if keys:
            ax.legend(fontsize=7)
    ax = axes[2]
    ie, ex = history.get("ienet") or [], history.get("expert") or []
    n_ie = len(ie)
    if any("val_phi_x_m" in r for r in ie + ex):
        ax.plot([r["epoch"] for r in ie], [r.get("val_phi_x_m") for r in ie], label="phi(x, m), stage 1")
        ax.plot(
            [n_ie + r["epoch"] for r in ex],
            [r.get("val_phi_x_xhat") for r in ex],
            label="phi(x, x^), stage 2",
        )
        if ex:
            gx = ax.twinx()
            gx.plot([n_ie + r["epoch"] for r in ex], [r.get("val_gain") for r in ex], "k--", label="gain")
            gx.axhline(1.0, color="grey", lw=0.5)
            gx.set_ylabel("fidelity gain phi(x,m)/phi(x,x^)", fontsize=7)
            gx.legend(fontsize=7, loc="upper right")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title("validation fidelity (normal images)")
    ax.set_xlabel("epoch (stage 1, then stage 2)")
    fig.tight_layout()
    return _save_fig(fig, path)


def _zoom(a: np.ndarray, centre: tuple[int, int], factor: int) -> np.ndarray:
    """The (H/factor, W/factor) window of (H, W, 3) ``a`` around ``centre``, enlarged back to (H, W) by pixel
    repetition (no interpolation, so blur in the picture is blur in the image)."""
    h, w = a.shape[:2]
    ch, cw = max(1, h // factor), max(1, w // factor)
    top = int(np.clip(centre[0] - ch // 2, 0, h - ch))
    left = int(np.clip(centre[1] - cw // 2, 0, w - cw))
    crop = a[top : top + ch, left : left + cw]
    return np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)[:h, :w]


def fidelity_mosaic(preds: list[Prediction], zoom: int = 4) -> np.ndarray:
    """(rows, cols) mosaic at the model's full resolution: per image x, m, x^, then the same three zoomed
    ``zoom``x around the maximum of e, so that a blurry m or x^ shows pixel for pixel. uint8 (H', W', 3)."""
    from PIL import Image, ImageDraw

    rows = []
    for p in preds:
        images = [_rgb(p.image), _rgb(p.impression)]
        images.append(_rgb(p.reconstruction) if p.reconstruction is not None else np.zeros_like(images[0]))
        centre = np.unravel_index(int(np.argmax(p.anomaly_map)), p.anomaly_map.shape)
        tiles = images + [_zoom(a, centre, zoom) for a in images]
        sep = np.ones((tiles[0].shape[0], 2, 3))
        rows.append(np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=1))
    body = np.concatenate([r for row in rows for r in (row, np.ones((2, row.shape[1], 3)))][:-1], axis=0)
    body = (np.clip(body, 0, 1) * 255).astype(np.uint8)
    header = Image.new("RGB", (body.shape[1], 14), "white")
    draw = ImageDraw.Draw(header)
    tile_w = preds[0].image.shape[1] + 2
    names = ["x", "m", "x^", f"x {zoom}x", f"m {zoom}x", f"x^ {zoom}x"]
    for i, name in enumerate(names):
        draw.text((i * tile_w + 3, 1), name, fill="black")
    return np.concatenate([np.asarray(header), body], axis=0)


def save_fidelity_panel(preds: list[Prediction], path: str | os.PathLike, zoom: int = 4) -> Path:
    """``fidelity.png``: ``fidelity_mosaic`` written as a PNG at 1:1 pixels."""
    from PIL import Image

    mosaic = fidelity_mosaic(preds, zoom)
    return atomic_write(Path(path), lambda f: Image.fromarray(mosaic).save(f, format="PNG"))
