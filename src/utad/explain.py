"""Why was this part rejected? Per-image explanations and the IE-Net feature analysis of the paper's Sec. 4.3.

* ``explain_image``: x, m, x^, m^, the normalised anomaly map e with its colour bar and alpha marked, the overlay
  with the predicted outline (and the ground truth's), the three PM terms phi(x, x^), phi(m, m^), phi(x, m) as
  separate maps on the same scale (they add up to e, so one sees which comparison fired), and the k nearest
  anomaly-free training images in IE-Net feature space with their distances (Fig. 8, k = 3).
* ``code_analysis``: IE-Net codes of the training images and of the normal and anomalous test images, a t-SNE
  of them (scikit-learn) coloured by set and defect type, saved as a picture and as coordinates (CSV), and the
  AUROC of each test image's distance to its nearest training code: how well the codes alone separate.

The IE-Net code of an image is its posterior mean mu (z_dim at every position of E_M's last map), flattened.
Other methods than ``utad`` have neither impression nor code: their explanation shows x, x^ (autoencoders), e and
the overlay.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import DataLoader

from utad.detector import MapDetector, Prediction
from utad.io import atomic_write, write_json
from utad.report import _rgb, _save_fig, overlay

TERM_NAMES = {"x_xhat": "phi(x, x^)", "m_mhat": "phi(m, m^)", "x_m": "phi(x, m)"}


@torch.no_grad()
def ie_codes(det: MapDetector, images: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """IE-Net codes (N, D): the flattened posterior mean mu of each image (B, C, S, S)."""
    out = []
    for i in range(0, len(images), batch_size):
        _, mu, _ = det.ienet.encode(images[i : i + batch_size].to(det.kernel.device))
        out.append(mu.flatten(1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def dataset_codes(det: MapDetector, dataset, batch_size: int = 16) -> tuple[np.ndarray, list[str]]:
    """Codes and paths of every image of a dataset (dicts with ``image`` and ``path``)."""
    codes, paths = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        codes.append(ie_codes(det, batch["image"], batch_size))
        paths += list(batch["path"])
    return np.concatenate(codes), paths


@dataclass
class NormalIndex:
    """IE-Net codes of the anomaly-free training images, for nearest-neighbour retrieval."""

    codes: np.ndarray  # (N, D)
    paths: list[str]

    def nearest(self, code: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The k training images whose codes are nearest (Euclidean) to ``code`` (D,), with distances."""
        d = np.sqrt(((self.codes - code[None]) ** 2).sum(1))
        order = np.argsort(d)[:k]
        return [(self.paths[i], float(d[i])) for i in order]

    def distance(self, codes: np.ndarray) -> np.ndarray:
        """Distance of each code (M, D) to its nearest training code (M,)."""
        sq = (codes**2).sum(1)[:, None] - 2 * codes @ self.codes.T + (self.codes**2).sum(1)[None]
        return np.sqrt(np.clip(sq.min(1), 0, None))


def normal_index(det: MapDetector, train_dataset) -> NormalIndex | None:
    """The index over a run's training images, or None for a method without IE-Net."""
    if getattr(det, "ienet", None) is None:
        return None
    return NormalIndex(*dataset_codes(det, train_dataset))


@torch.no_grad()
def term_maps(det: MapDetector, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The PM terms of Eq. 8 for images x (B, C, S, S), each on the scale of the normalised map (they sum to e;
    with ``detect.open_px`` or ``detect.map_sigma`` they are shown before the opening and the smoothing)."""
    if getattr(det, "ienet", None) is None or det.pm is None:
        return {}
    m, x_hat, m_hat = det.intermediates(x.to(det.kernel.device))
    raw = det.pm.term_maps(x.to(det.kernel.device), m, x_hat, m_hat)
    return {k: det.normalise(v)[:, 0].cpu().numpy() for k, v in raw.items()}


def explain_image(
    det: MapDetector,
    x: torch.Tensor,
    path: str,
    out: str | os.PathLike,
    index: NormalIndex | None = None,
    gt: np.ndarray | None = None,
    k: int = 3,
) -> dict[str, Any]:
    """Write ``<out>.png`` (the panel) and ``<out>.json`` for one image x (1, C, S, S); returns the JSON."""
    from PIL import Image

    out = Path(out)
    pred: Prediction = det.predict_tensor(x, [path])[0]
    terms = term_maps(det, x)
    neighbours = index.nearest(ie_codes(det, x)[0], k) if index is not None else []
    alpha, vmax = det.detect.alpha, max(1.0, float(pred.anomaly_map.max()))
    images = [("input x", pred.image), ("impression m", pred.impression)]
    images += [("reconstruction x^", pred.reconstruction), ("naive impression m^", pred.naive_impression)]
    images = [(t, a) for t, a in images if a is not None]
    n_cols = max(len(images) + 2, len(terms), len(neighbours), 1)
    n_rows = 1 + (1 if terms else 0) + (1 if neighbours else 0)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.3 * n_cols, 2.5 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for c, (title, a) in enumerate(images):
        axes[0, c].imshow(_rgb(a))
        axes[0, c].set_title(title, fontsize=8)
        axes[0, c].axis("on")
    ax = axes[0, len(images)]
    im = ax.imshow(pred.anomaly_map, cmap="jet", vmin=0, vmax=vmax)
    ax.contour(pred.anomaly_map, levels=[alpha], colors="white", linewidths=0.8)
    ax.set_title("anomaly map e (normalised)", fontsize=8)
    ax.axis("on")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.ax.axhline(alpha, color="white", lw=2)
    bar.ax.tick_params(labelsize=6)
    bar.set_label(f"alpha = {alpha}", fontsize=7)
    axes[0, len(images) + 1].imshow(overlay(pred, gt))
    axes[0, len(images) + 1].set_title(
        "outline: red predicted" + (", green truth" if gt is not None else ""), fontsize=8
    )
    axes[0, len(images) + 1].axis("on")
    row = 1
    shares = {}
    if terms:
        total = sum(float(t.sum()) for t in terms.values()) or 1.0
        for c, (name, t) in enumerate(terms.items()):
            shares[name] = float(t.sum()) / total
            axes[row, c].imshow(t[0], cmap="jet", vmin=0, vmax=vmax)
            axes[row, c].set_title(f"{TERM_NAMES[name]}: {100 * shares[name]:.0f}% of e", fontsize=8)
            axes[row, c].axis("on")
        row += 1
    for c, (npath, dist) in enumerate(neighbours):
        size = pred.image.shape[0]
        with Image.open(npath) as img:
            axes[row, c].imshow(np.asarray(img.convert("RGB").resize((size, size))))
        axes[row, c].set_title(f"nearest normal {c + 1}: d = {dist:.2f}", fontsize=8)
        axes[row, c].axis("on")
    fig.suptitle(
        f"{Path(path).name}: score {pred.score:.3f} ({'ANOMALOUS' if pred.is_anomaly else 'normal'}, alpha "
        f"{alpha}), {int(pred.mask.sum())} pixels above alpha",
        fontsize=9,
    )
    fig.tight_layout()
    _save_fig(fig, out.with_suffix(".png"))
    info = {
        "path": path,
        "score": pred.score,
        "anomalous": pred.is_anomaly,
        "alpha": alpha,
        "anomalous_pixels": int(pred.mask.sum()),
        "max_at": [
            int(v) for v in np.unravel_index(int(np.argmax(pred.anomaly_map)), pred.anomaly_map.shape)
        ],
        "term_share": shares,
        "nearest_normal": [{"path": p, "distance": d} for p, d in neighbours],
    }
    write_json(out.with_suffix(".json"), info)
    return info


def code_analysis(
    det: MapDetector, data, out: str | os.PathLike, seed: int = 0, max_points: int = 1500
) -> dict[str, Any] | None:
    """t-SNE of IE-Net codes (train, normal test, anomalous test by defect type) -> ``tsne.png``, ``tsne.csv``
    (at most ``max_points`` codes, a fixed random subset beyond that); returns the separation: AUROC of each test
    image's distance to the nearest training code (``code_knn_auroc``, over every test image)."""
    if getattr(det, "ienet", None) is None:
        return None
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from utad.metrics import image_auroc

    out = Path(out)
    index = NormalIndex(*dataset_codes(det, data.train))
    test_codes, test_paths = dataset_codes(det, data.test)
    if data.test_samples is not None:
        labels = np.array([s.label for s in data.test_samples])
        kinds = [s.defect_type if s.label else "good" for s in data.test_samples]
    else:
        labels = np.asarray(data.test.labels)
        kinds = ["normal" if y == 0 else "anomalous" for y in labels]
    dist = index.distance(test_codes)
    codes = np.concatenate([index.codes, test_codes])
    groups = ["train"] * len(index.codes) + [f"test {k}" for k in kinds]
    paths = index.paths + test_paths
    if len(codes) > max_points:  # t-SNE of a fixed random subset (the AUROC above uses every test image)
        keep = np.sort(np.random.default_rng(seed).permutation(len(codes))[:max_points])
        codes, groups, paths = codes[keep], [groups[i] for i in keep], [paths[i] for i in keep]
    n = len(codes)
    reduced = PCA(n_components=min(50, n - 1, codes.shape[1]), random_state=seed).fit_transform(codes)
    xy = TSNE(
        n_components=2, perplexity=min(30.0, max(2.0, (n - 1) / 3)), init="pca", random_state=seed
    ).fit_transform(reduced)
    rows = zip(paths, groups, xy[:, 0], xy[:, 1], strict=True)

    def write_csv(f) -> None:
        w = csv.writer(f)
        w.writerow(["path", "group", "x", "y"])
        w.writerows([p, g, f"{a:.4f}", f"{b:.4f}"] for p, g, a, b in rows)

    atomic_write(out / "tsne.csv", write_csv, mode="w")
    fig, ax = plt.subplots(figsize=(6, 5))
    for g in dict.fromkeys(groups):
        sel = np.array([x == g for x in groups])
        style = {"marker": ".", "alpha": 0.4, "color": "grey"} if g == "train" else {"marker": "o", "s": 14}
        ax.scatter(xy[sel, 0], xy[sel, 1], label=g, **style)
    auroc = image_auroc(dist, labels) if len(set(labels.tolist())) == 2 else None
    ax.set_title(
        "t-SNE of IE-Net codes"
        + (f" (nearest-training-code AUROC {auroc:.3f})" if auroc is not None else ""),
        fontsize=9,
    )
    ax.legend(fontsize=7, markerscale=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    _save_fig(fig, out / "tsne.png")
    return {
        "code_knn_auroc": auroc,
        "n_train_codes": len(index.codes),
        "n_test_codes": len(test_codes),
        "n_tsne_points": n,
    }
