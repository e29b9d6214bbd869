"""Synthetic defects on the validation images: an evaluation set for choosing settings without the test split.

Not part of the paper. MVTec AD's training split holds normal images only, so a setting (an IE-Net code, a
measurement's layers) chosen by test-set metrics is chosen on the test set. ``data.evaluate_on=synthetic``
evaluates instead on the run's own validation images (held out from training), each four times: as it is
(normal) and with each of three kinds of drawn defect whose mask is known (anomalous), in the spirit of
CutPaste (Li et al., 2021) and DRAEM (Zavrtanik et al., 2021):

- ``patch``: a rectangle (1/16 to 1/8 of the side) cut from another validation image, flipped, pasted
  elsewhere (a structural defect);
- ``stain``: an irregular blob of a random colour, 30-80 % opaque (contamination, colour defects);
- ``scratch``: a thin random polyline, light or dark.

The defects are kept small and partly transparent: real defects are, and a set of easy ones ranks every
variant near 1. ``strength`` (``data.synthetic_strength``, in (0, 1]) scales every defect's opacity (the patch
is blended in at that opacity): 1 draws them as above; lower values give subtler defects, for categories whose
real defects are faint next to their normal variation (on pill the default defects outrank the red speckles
of good pills under every measurement, so they cannot tell measurements apart by how they treat speckles).

Defects are drawn at the model resolution and are the same for every run with the same seed and validation
split, so two variants are compared on the same images. The normal quarter is the images the run calibrated its
maps on: that favours no variant, but rank metrics (AUROC, AUPRO) read more reliably here than IoU at alpha.
Synthetic defects are not real ones: use these numbers to rank settings, and the test split to report.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset

KINDS = ("patch", "stain", "scratch")


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    return u * u + v * v <= 1.0


def _patch(
    image: np.ndarray, donor: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) image with a flipped rectangle of ``donor`` pasted (at opacity ``strength``) at a random place;
    the mask (H, W)."""
    _, h, w = image.shape
    ph = int(rng.integers(max(3, h // 16), max(4, h // 8) + 1))
    pw = int(rng.integers(max(3, w // 16), max(4, w // 8) + 1))
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    ty, tx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    piece = donor[:, sy : sy + ph, sx : sx + pw][:, ::-1, ::-1]
    out = image.copy()
    region = out[:, ty : ty + ph, tx : tx + pw]
    out[:, ty : ty + ph, tx : tx + pw] = (1 - strength) * region + strength * piece
    mask = np.zeros((h, w), bool)
    mask[ty : ty + ph, tx : tx + pw] = True
    return out, mask


def _stain(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """An irregular blob (two to four overlapping ellipses) of one random colour, 30-80 % opaque (times
    ``strength``)."""
    c, h, w = image.shape
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(2, 5))):
        ry, rx = rng.uniform(0.015, 0.05) * h, rng.uniform(0.015, 0.05) * w
        oy, ox = rng.normal(0, 0.02 * h), rng.normal(0, 0.02 * w)
        mask |= _ellipse(h, w, cy + oy, cx + ox, ry, rx, rng.uniform(0, np.pi))
    colour = rng.uniform(0, 1, size=(c, 1, 1)).astype(image.dtype)
    opacity = rng.uniform(0.3, 0.8) * strength
    out = np.where(mask[None], (1 - opacity) * image + opacity * colour, image)
    return out, mask


def _scratch(
    image: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A polyline of three to five segments, one to two pixels wide (at 128 px), light or dark, 60-100 %
    opaque (times ``strength``)."""
    _, h, w = image.shape
    points = [np.array([rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w])]
    step = 0.08 * min(h, w)
    for _ in range(int(rng.integers(3, 6))):
        angle = rng.uniform(0, 2 * np.pi)
        points.append(
            np.clip(points[-1] + step * np.array([np.sin(angle), np.cos(angle)]), 0, [h - 1, w - 1])
        )
    radius = max(0.6, min(h, w) / 128)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mask = np.zeros((h, w), bool)
    for a, b in itertools.pairwise(points):
        d = b - a
        t = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
        mask |= (yy - a[0] - t * d[0]) ** 2 + (xx - a[1] - t * d[1]) ** 2 <= radius**2
    value, opacity = rng.choice([0.05, 0.95]), rng.uniform(0.6, 1.0) * strength
    out = np.where(mask[None], (1 - opacity) * image + opacity * value, image).astype(image.dtype)
    return out, mask


class SyntheticDefects(Dataset):
    """``base`` (n items with ``image`` (C, H, W) in [0, 1]) four times: items ``0..n-1`` as they are (label
    0), then each image with a patch (items ``n..2n-1``), a stain and a scratch (label 1, the defect's mask),
    each at opacity scaled by ``strength`` in (0, 1]."""

    def __init__(self, base: Dataset, seed: int = 0, name: str = "synthetic", strength: float = 1.0) -> None:
        if len(base) < 2:
            raise ValueError(f"synthetic defects need at least 2 validation images, got {len(base)}")
        if not 0 < strength <= 1:
            raise ValueError(f"data.synthetic_strength must be in (0, 1], got {strength}")
        self.strength = float(strength)
        self.base = base
        self.seed = seed
        self.name = name
        n = len(base)
        self.labels = np.r_[np.zeros(n, np.int64), np.ones(len(KINDS) * n, np.int64)]

    def __len__(self) -> int:
        return (1 + len(KINDS)) * len(self.base)

    def kind(self, i: int) -> str | None:
        """The defect drawn on item ``i`` (None for the normal half)."""
        n = len(self.base)
        return None if i < n else KINDS[i // n - 1]

    def __getitem__(self, i: int) -> dict:
        n = len(self.base)
        item = dict(self.base[i % n])
        kind = self.kind(i)
        if kind is None:
            return item
        rng = np.random.default_rng([self.seed, i])
        image = item["image"].numpy()
        if kind == "patch":
            donor = self.base[(i + 1 + int(rng.integers(0, n - 1))) % n]["image"].numpy()
            out, mask = _patch(image, donor, rng, self.strength)
        elif kind == "stain":
            out, mask = _stain(image, rng, self.strength)
        else:
            out, mask = _scratch(image, rng, self.strength)
        item["image"] = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        item["mask"] = torch.from_numpy(mask[None])
        item["label"] = 1
        item["path"] = f"{item['path']}#synthetic-{kind}"
        return item
