"""Built-in demo dataset: real texture photographs with synthetic defects, in the MVTec AD layout.

The good images are crops of scikit-image's brick photograph (``skimage.data.brick()``), tinted to colour;
training crops and test crops come from disjoint rows of the photograph. Test defects are drawn into test
crops: ``scratch`` (a bright or dark polyline), ``hole`` (a dark disc), ``foreign`` (an ellipse of a foreign
texture, gravel or grass) and ``color`` (a colour-shifted blob). Every pixel inside a defect's mask is changed
(by at least ``MIN_DELTA`` grey levels in some channel) and no pixel outside it is, so the masks are exact.
Everything is deterministic for a seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from utad.io import atomic_write

DEFECT_TYPES = ("scratch", "hole", "foreign", "color")
MIN_DELTA = 24  # grey levels: every masked pixel differs at least this much from the clean crop
_TINT = np.array([1.0, 0.80, 0.66])
_TRAIN_ROWS = (0, 320)  # rows of the 512x512 photograph used for training crops
_TEST_ROWS = (320, 512)  # disjoint rows for test crops


@dataclass
class DemoImage:
    """One generated image: where it goes in the MVTec layout, its pixels, mask and the clean crop it came from."""

    split: str  # "train" or "test"
    defect_type: str  # "good" or one of DEFECT_TYPES
    name: str  # file stem, e.g. "007"
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray | None  # (H, W) bool for defects, None for good images
    clean: np.ndarray  # (H, W, 3) uint8, the crop before any defect


def _texture(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), dtype=np.float64)


def _colourise(grey: np.ndarray, tint: np.ndarray = _TINT) -> np.ndarray:
    return np.clip(np.rint(grey[..., None] * tint), 0, 255).astype(np.uint8)


def _crop(photo: np.ndarray, rows: tuple[int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(rows[0], rows[1] - size + 1))
    x = int(rng.integers(0, photo.shape[1] - size + 1))
    return photo[y : y + size, x : x + size]


def _region(size: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A random defect region (bool (size, size)) of the given kind, away from the border."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    s = size / 128.0
    cx, cy = rng.uniform(0.25, 0.75, size=2) * size
    if kind == "scratch":
        n = int(rng.integers(2, 4))
        pts = [(cx, cy)]
        angle = rng.uniform(0, np.pi)
        for _ in range(n):
            angle += rng.uniform(-0.5, 0.5)
            length = rng.uniform(12, 24) * s
            x, y = pts[-1]
            pts.append(
                (
                    float(np.clip(x + length * np.cos(angle), 2, size - 3)),
                    float(np.clip(y + length * np.sin(angle), 2, size - 3)),
                )
            )
        draw.line(pts, fill=255, width=max(2, round(rng.uniform(2, 4) * s)))
    elif kind == "hole":
        r = rng.uniform(5, 10) * s
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:  # foreign, color: an irregular blob, the union of a few ellipses
        for _ in range(int(rng.integers(2, 4))):
            ox, oy = rng.uniform(-6, 6, size=2) * s
            rx, ry = rng.uniform(5, 11, size=2) * s
            draw.ellipse([cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry], fill=255)
    return np.asarray(canvas) > 0


def _enforce(clean: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Put ``target`` inside ``region`` and keep ``clean`` outside; push masked pixels that changed too little."""
    clean_i = clean.astype(np.int16)
    out = np.where(region[..., None], np.rint(target).astype(np.int16), clean_i)
    out = np.clip(out, 0, 255)
    weak = region & (np.abs(out - clean_i).max(axis=-1) < MIN_DELTA)
    direction = np.where(clean_i.mean(axis=-1, keepdims=True) < 128, MIN_DELTA, -MIN_DELTA)
    out = np.where(weak[..., None], clean_i + direction, out)
    return np.clip(out, 0, 255).astype(np.uint8)


def render_defect(clean: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw a defect of ``kind`` into a clean (H, W, 3) uint8 crop; returns (image, exact bool mask)."""
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown demo defect {kind!r}; choose from {DEFECT_TYPES}")
    size = clean.shape[0]
    region = _region(size, kind, rng)
    c = clean.astype(np.float64)
    if kind == "scratch":
        level = 240.0 if rng.random() < 0.5 else 20.0
        target = np.full_like(c, level)
    elif kind == "hole":
        target = c * 0.15
    elif kind == "foreign":
        other = _texture("gravel" if rng.random() < 0.5 else "grass")
        patch = _crop(other, (0, other.shape[0]), size, rng)
        target = patch[..., None] * np.array([0.55, 0.75, 0.95])
    else:  # color
        shift = rng.choice([-1.0, 1.0]) * np.array([-60.0, 50.0, 70.0])
        target = c + shift
    image = _enforce(clean, target, region)
    mask = (image != clean).any(axis=-1)
    return image, mask


def generate_demo(
    seed: int = 0,
    size: int = 128,
    n_train: int = 80,
    n_test_good: int = 16,
    n_test_per_defect: int = 8,
    defect_types: tuple[str, ...] = DEFECT_TYPES,
) -> Iterator[DemoImage]:
    """Yield the demo dataset's images (deterministic for ``seed``): train/good, test/good, test/<defect>."""
    if size > _TEST_ROWS[1] - _TEST_ROWS[0]:
        raise ValueError(f"demo crop size must be at most {_TEST_ROWS[1] - _TEST_ROWS[0]}, got {size}")
    photo = _colourise(_texture("brick"))
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        crop = _crop(photo, _TRAIN_ROWS, size, rng)
        yield DemoImage("train", "good", f"{i:03d}", crop, None, crop)
    for i in range(n_test_good):
        crop = _crop(photo, _TEST_ROWS, size, rng)
        yield DemoImage("test", "good", f"{i:03d}", crop, None, crop)
    for kind in defect_types:
        for i in range(n_test_per_defect):
            crop = _crop(photo, _TEST_ROWS, size, rng)
            image, mask = render_defect(crop, kind, rng)
            yield DemoImage("test", kind, f"{i:03d}", image, mask, crop)


def _save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def write_demo(root: str | os.PathLike, seed: int = 0, size: int = 128, **kwargs: int) -> Path:
    """Write the demo dataset to ``root`` in the MVTec AD layout (category folder ``root``); returns ``root``.

    A folder that already holds a complete demo written with the same arguments is reused as it is.
    """
    root = Path(root)
    stamp = root / ".utad-demo"
    key = f"seed={seed} size={size} {sorted(kwargs.items())}\n"
    if stamp.is_file() and stamp.read_text() == key:
        return root
    for item in generate_demo(seed=seed, size=size, **kwargs):
        _save_png(root / item.split / item.defect_type / f"{item.name}.png", item.image)
        if item.mask is not None:
            mask = item.mask.astype(np.uint8) * 255
            _save_png(root / "ground_truth" / item.defect_type / f"{item.name}_mask.png", mask)
    atomic_write(stamp, lambda f: f.write(key), mode="w")
    return root
