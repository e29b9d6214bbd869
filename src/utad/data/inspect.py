"""``utad data inspect``: count and check an MVTec-layout folder without stopping at the first problem."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from utad.data.images import image_info, is_image_file
from utad.data.samples import GOOD, mvtec_mask_path, resolve_mvtec_root
from utad.errors import DataError


def inspect_mvtec(path: str | os.PathLike, category: str | None = None) -> dict[str, Any]:
    """Report counts per split and defect type, masks, image sizes and modes, and every problem found.

    Every image and mask is decoded, so corrupt or truncated files are found. Returns a JSON-ready dict with
    ``problems`` a list of ``"<file>: <problem>"`` lines (empty when the folder is clean).
    """
    root = resolve_mvtec_root(path, category)
    problems: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    image_sizes: dict[Path, tuple[int, int]] = {}
    used_masks: set[Path] = set()
    n_masks = 0

    def scan(folder: Path) -> list[Path]:
        files = []
        for p in sorted(folder.iterdir()):
            if p.is_dir():
                problems.append(f"{p}: unexpected sub-folder")
            elif not is_image_file(p):
                problems.append(f"{p}: not an image file (ignored)")
            else:
                files.append(p)
        if not files:
            problems.append(f"{folder}: no image files")
        return files

    def read(p: Path) -> tuple[tuple[int, int], str] | None:
        try:
            return image_info(p)
        except DataError as exc:
            problems.append(str(exc))
            return None

    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            problems.append(f"{split_dir}: folder not found")
            continue
        counts[split] = {}
        type_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
        if split == "train" and not (split_dir / GOOD).is_dir():
            problems.append(f"{split_dir / GOOD}: folder not found (training needs good images)")
        for tdir in type_dirs:
            files = scan(tdir)
            counts[split][tdir.name] = len(files)
            for f in files:
                info = read(f)
                if info is not None:
                    (w, h), mode = info
                    image_sizes[f] = (w, h)
                    sizes[f"{w}x{h}"] += 1
                    modes[mode] += 1
                if split == "test" and tdir.name != GOOD:
                    mask = mvtec_mask_path(root, tdir.name, f)
                    if not mask.is_file():
                        problems.append(f"{f}: defect image has no mask (expected {mask})")

    gt = root / "ground_truth"
    if gt.is_dir():
        for tdir in sorted(p for p in gt.iterdir() if p.is_dir()):
            for m in sorted(tdir.iterdir()):
                if not m.is_file() or not is_image_file(m):
                    problems.append(f"{m}: not an image file (ignored)")
                    continue
                n_masks += 1
                stem = m.stem[: -len("_mask")] if m.stem.endswith("_mask") else m.stem
                images = [p for p in image_sizes if p.parent == root / "test" / tdir.name and p.stem == stem]
                candidates = list((root / "test" / tdir.name).glob(f"{stem}.*"))
                if not images and not candidates:
                    problems.append(f"{m}: mask has no matching test image")
                    continue
                used_masks.add(m)
                info = read(m)
                if info is not None and images and info[0] != image_sizes[images[0]]:
                    iw, ih = image_sizes[images[0]]
                    problems.append(
                        f"{m}: mask size {info[0][0]}x{info[0][1]} differs from its image ({iw}x{ih})"
                    )
    return {
        "root": str(root),
        "category": root.name,
        "counts": counts,
        "n_images": sum(sum(c.values()) for c in counts.values()),
        "n_masks": n_masks,
        "sizes": dict(sizes.most_common()),
        "modes": dict(modes.most_common()),
        "problems": problems,
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text of an ``inspect_mvtec`` report."""
    lines = [f"{report['root']} (category {report['category']})"]
    for split, per_type in report["counts"].items():
        total = sum(per_type.values())
        lines.append(f"  {split}: {total} images")
        for t, n in per_type.items():
            lines.append(f"    {t:<24} {n:>6}")
    lines.append(f"  masks: {report['n_masks']}")
    lines.append("  sizes: " + ", ".join(f"{k} ({v})" for k, v in report["sizes"].items()))
    lines.append("  modes: " + ", ".join(f"{k} ({v})" for k, v in report["modes"].items()))
    if report["problems"]:
        lines.append(f"  problems ({len(report['problems'])}):")
        lines += [f"    {p}" for p in report["problems"]]
    else:
        lines.append("  problems: none")
    return "\n".join(lines)
