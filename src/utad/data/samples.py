"""Listing samples (paths, labels, masks) apart from the ``Dataset`` classes that read them.

Layouts:

* MVTec AD: ``<root>/train/good/*.png``, ``<root>/test/<type>/*.png`` (``good`` = normal) and
  ``<root>/ground_truth/<type>/<stem>_mask.png`` for every defect image; any category name.
* Folder: one folder of good images, one or more folders of bad images, an optional mask folder whose files are
  named ``<stem>.png`` or ``<stem>_mask.png`` after the bad image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utad.data.images import is_image_file
from utad.errors import DataError

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a split: ``label`` 1 = anomaly; ``mask`` the ground-truth path (None: no mask known)."""

    path: Path
    label: int
    defect_type: str
    mask: Path | None = None


@dataclass
class Listing:
    """The samples of one dataset: ``train`` (normal only) and ``test`` (normal and anomalous)."""

    name: str
    train: list[Sample]
    test: list[Sample]
    has_masks: bool


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; a missing or image-less folder is an error."""
    if not folder.exists():
        raise DataError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise DataError(f"{folder}: no image files (looked for .png, .jpg, .bmp, .tif, .webp)")
    return files


def mvtec_mask_path(root: Path, defect_type: str, image: Path) -> Path:
    """Where the MVTec layout keeps the mask of ``image``: ``ground_truth/<type>/<stem>_mask.png``."""
    return root / "ground_truth" / defect_type / f"{image.stem}_mask.png"


def resolve_mvtec_root(path: str | os.PathLike, category: str | None = None) -> Path:
    """Accept either a category folder (holding ``train/`` and ``test/``) or a dataset root plus category."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if category and (root / category / "train").is_dir():
        return root / category
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    cats = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
    hint = f"; categories found: {', '.join(cats)} (pass --category)" if cats else ""
    raise DataError(f"{root}: not an MVTec AD category folder (expected train/good and test/<type>){hint}")


def list_mvtec(path: str | os.PathLike, category: str | None = None, masks: bool = True) -> Listing:
    """List an MVTec-layout category. ``masks=False`` says the data has no masks (image-level metrics only).

    With ``masks=True`` a defect image without its mask, or a mask without its image, is an error naming the
    file.
    """
    root = resolve_mvtec_root(path, category)
    train = [Sample(p, 0, GOOD) for p in list_images(root / "train" / GOOD)]
    test_dir = root / "test"
    types = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    if not types:
        raise DataError(f"{test_dir}: no defect-type folders")
    test: list[Sample] = []
    for t in types:
        for img in list_images(test_dir / t):
            if t == GOOD:
                test.append(Sample(img, 0, t))
                continue
            mask = mvtec_mask_path(root, t, img) if masks else None
            if mask is not None and not mask.is_file():
                raise DataError(
                    f"{img}: defect image has no mask (expected {mask}); pass --no-masks if the data has none"
                )
            test.append(Sample(img, 1, t, mask))
    if masks:
        _check_orphan_masks(root, {s.mask for s in test if s.mask is not None})
    return Listing(root.name, train, test, has_masks=masks)


def _check_orphan_masks(root: Path, used: set[Path]) -> None:
    gt = root / "ground_truth"
    if not gt.is_dir():
        return
    for mask in sorted(gt.glob("*/*")):
        if mask.is_file() and is_image_file(mask) and mask not in used:
            raise DataError(f"{mask}: mask has no matching test image")


def list_folder(
    good: str | os.PathLike,
    bad: list[str | os.PathLike],
    mask_dir: str | os.PathLike | None = None,
    test_good: str | os.PathLike | None = None,
) -> Listing:
    """Generic custom data: ``good`` images train the model; ``bad`` folders (and ``test_good`` if given) test it.

    Without ``test_good`` there are no normal test images, so only pixel metrics over the bad images and the
    held-out validation images can be computed. Masks are looked up in ``mask_dir`` as ``<stem>.png`` or
    ``<stem>_mask.png``; a bad image without a mask there is an error.
    """
    good_dir = Path(good)
    train = [Sample(p, 0, GOOD) for p in list_images(good_dir)]
    test: list[Sample] = []
    if test_good is not None:
        test += [Sample(p, 0, GOOD) for p in list_images(Path(test_good))]
    mdir = Path(mask_dir) if mask_dir is not None else None
    if mdir is not None and not mdir.is_dir():
        raise DataError(f"{mdir}: mask folder not found")
    for b in bad:
        bdir = Path(b)
        for img in list_images(bdir):
            mask = None
            if mdir is not None:
                cands = [
                    mdir / f"{img.stem}{suf}"
                    for suf in ("_mask.png", ".png", "_mask" + img.suffix, img.suffix)
                ]
                mask = next((c for c in cands if c.is_file()), None)
                if mask is None:
                    raise DataError(f"{img}: bad image has no mask in {mdir} (expected {img.stem}_mask.png)")
            test.append(Sample(img, 1, bdir.name, mask))
    return Listing(good_dir.name, train, test, has_masks=mdir is not None)


def split_validation(
    samples: list[Sample], fraction: float, seed: int, minimum: int = 1
) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of the normal training samples for validation (normalisation and thresholds).

    Deterministic for a seed; at least ``minimum`` images are held out and at least one is kept for training.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    n = len(samples)
    k = 0 if fraction == 0 else min(max(minimum, round(n * fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:k].tolist())
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val
