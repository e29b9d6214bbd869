"""From a ``DataConfig`` to the three datasets a run needs: train (normal), validation (normal), test."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from utad.config import DataConfig
from utad.data.datasets import ArrayDataset, SampleDataset
from utad.data.demo import write_demo
from utad.data.images import open_image
from utad.data.oneclass import class_name, load_one_class
from utad.data.samples import Sample, list_folder, list_mvtec, split_validation
from utad.data.synthetic import SyntheticDefects
from utad.errors import DataError

ONE_CLASS = ("mnist", "fashion-mnist", "cifar10")
FILE_EVALUATE_ON = ("test", "synthetic")  # file-backed sources: the test split, or synthetic defects on val


@dataclass
class DataBundle:
    name: str  # dataset / category name for reports
    train: Dataset
    val: Dataset
    test: Dataset
    has_masks: bool  # pixel metrics possible
    test_samples: list[Sample] | None  # file-backed test sets: the listed samples (native masks for metrics)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable files left out (skip_bad)
    # per test image "good" or its anomaly's kind: the defect type of a file-backed sample (filled in from
    # test_samples when not given), the original class of a one-class image, the drawn synthetic defect
    test_kinds: list[str] | None = None

    def __post_init__(self) -> None:
        if self.test_kinds is None and self.test_samples is not None:
            self.test_kinds = [s.defect_type if s.label else "good" for s in self.test_samples]


def check_readable(samples: list[Sample]) -> tuple[list[Sample], list[dict[str, str]]]:
    """Decode every image and mask once: (the readable samples, ``{"path", "reason"}`` for the others).

    Run before training so that an unreadable file is reported with all the others up front, never as a
    traceback in the middle of an epoch.
    """
    good, bad = [], []
    for s in samples:
        try:
            for f in (s.path, s.mask):
                if f is not None:
                    open_image(f)
        except DataError as exc:
            bad.append({"path": str(f), "reason": str(exc).removeprefix(f"{f}: ")})
            continue
        good.append(s)
    return good, bad


def demo_root(cache: Path, cfg: DataConfig) -> Path:
    """Where the built-in demo data is generated (reused when already complete)."""
    return write_demo(
        cache / f"demo-seed{cfg.demo_seed}-{cfg.demo_size}", seed=cfg.demo_seed, size=cfg.demo_size
    )


def build_data(cfg: DataConfig, seed: int, cache: Path) -> DataBundle:
    """Datasets for ``cfg.source``; the validation split holds out ``val_fraction`` of normal train images."""
    size, ch = cfg.image_size, cfg.channels
    if cfg.source in ONE_CLASS:
        data = load_one_class(
            cfg.source, cfg.path, cfg.normal_class, cfg.limit_test, cfg.limit_train, seed, cfg.evaluate_on
        )
        order = np.random.default_rng(seed).permutation(len(data.train))
        k = max(1, round(len(order) * cfg.val_fraction))
        val_idx, tr_idx = np.sort(order[:k]), np.sort(order[k:])
        zeros = np.zeros(len(data.train), np.int64)
        return DataBundle(
            name=f"{cfg.source}-class{cfg.normal_class}",
            train=ArrayDataset(data.train[tr_idx], zeros[tr_idx], size, ch, f"{cfg.source}-train"),
            val=ArrayDataset(data.train[val_idx], zeros[val_idx], size, ch, f"{cfg.source}-val"),
            # path "mnist-test:1234": index 1234 of the test split; "mnist-holdout:…" indexes the training split
            test=ArrayDataset(
                data.test, data.test_labels, size, ch, f"{cfg.source}-{cfg.evaluate_on}", data.test_index
            ),
            has_masks=False,
            test_samples=None,
            test_kinds=[
                "good" if y == data.normal_class else class_name(cfg.source, int(y))
                for y in data.test_classes
            ],
        )
    if cfg.source == "demo":
        listing = list_mvtec(demo_root(cache, cfg))
    elif cfg.source == "mvtec":
        if cfg.path is None:
            raise DataError("data.path is required for source mvtec (utad train --data PATH)")
        listing = list_mvtec(cfg.path, cfg.category, masks=cfg.masks)
    elif cfg.source == "folder":
        if cfg.path is None or not cfg.bad:
            raise DataError(
                "source folder needs data.path (good images) and data.bad (folders of bad images)"
            )
        listing = list_folder(cfg.path, cfg.bad, cfg.mask_dir if cfg.masks else None, cfg.test_good)
    else:
        raise DataError(f"unknown data source {cfg.source!r} (demo, mvtec, folder, {', '.join(ONE_CLASS)})")
    if cfg.evaluate_on not in FILE_EVALUATE_ON:
        raise DataError(
            f"data.evaluate_on={cfg.evaluate_on!r} is not available for source {cfg.source}: use "
            f"{' or '.join(FILE_EVALUATE_ON)} (holdout is for the one-class sources {', '.join(ONE_CLASS)})"
        )
    train_ok, bad_train = check_readable(listing.train)
    test_ok, bad_test = check_readable(listing.test)
    skipped = bad_train + bad_test
    if skipped and not cfg.skip_bad:
        lines = "\n  ".join(f"{b['path']}: {b['reason']}" for b in skipped)
        raise DataError(
            f"{len(skipped)} unreadable file(s) in {listing.name}; fix or remove them, or pass --skip-bad "
            f"(data.skip_bad=true) to leave them out:\n  {lines}"
        )
    if not train_ok:
        raise DataError(f"{listing.name}: no readable training images")
    train, val = split_validation(train_ok, cfg.val_fraction, seed)
    if not val:
        raise DataError("no validation images: set data.val_fraction > 0 (needed to normalise anomaly maps)")
    val_set = SampleDataset(val, size, ch)
    bundle = DataBundle(
        name=listing.name,
        train=SampleDataset(train, size, ch),
        val=val_set,
        test=SampleDataset(test_ok, size, ch),
        has_masks=listing.has_masks,
        test_samples=test_ok,
        skipped=skipped,
    )
    if cfg.evaluate_on == "synthetic":  # the validation images with drawn defects instead of the test split
        if len(val) < 2:
            raise DataError(
                f"{listing.name}: data.evaluate_on=synthetic needs at least 2 validation images, the split "
                f"has {len(val)}; raise data.val_fraction"
            )
        bundle.name = f"{listing.name}-synthetic"
        if not 0 < cfg.synthetic_strength <= 1:
            raise DataError(f"data.synthetic_strength must be in (0, 1], got {cfg.synthetic_strength}")
        bundle.test = SyntheticDefects(val_set, seed, bundle.name, cfg.synthetic_strength)
        bundle.has_masks, bundle.test_samples = True, None
        bundle.test_kinds = [bundle.test.kind(i) or "good" for i in range(len(bundle.test))]
    return bundle
