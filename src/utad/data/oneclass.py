"""One-class benchmarks (paper Sec. 4.2): MNIST, Fashion-MNIST and CIFAR-10.

One class is normal: train on that class's train-split images, test on the whole test split with label
1 = anomaly (any other class). Readers return uint8 arrays ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (colour)
and int64 class labels.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utad.data.images import IMAGE_SUFFIXES, open_image
from utad.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"
)  # fmt: skip


def class_name(dataset: str, label: int) -> str:
    """How reports name a one-class evaluation image's original class: ``class 7`` (MNIST), ``class 7 (sneaker)``."""
    names = {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}.get(dataset)
    return f"class {label}" + (f" ({names[label]})" if names else "")


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise DataError(f"{path}: truncated IDX file ({len(body)} bytes of data, expected {expected})")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: missing {stem}[.gz]")


def load_mnist_like(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST from the four official IDX files: ``split`` is ``train`` or ``test``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    if len(images) != len(labels):
        raise DataError(
            f"{root}: {prefix} images ({len(images)}) and labels ({len(labels)}) differ in number"
        )
    return images, labels


def load_cifar10(
    root: str | os.PathLike, split: str, select: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from the official python batches (``data_batch_1..5``, ``test_batch``) or class folders.

    Class folders: ``<root>/<split>/<class>/*.jpg`` with the ten official class names. ``select(labels) ->
    indices`` keeps only those images (in the order given); from class folders only they are decoded, so one
    class of the JPEG copy reads in a fraction of a second instead of decoding all 10 000 files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    batch_dir = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    if all((batch_dir / n).is_file() for n in names):
        xs, ys = [], []
        for n in names:
            try:
                with open(batch_dir / n, "rb") as f:
                    d = pickle.load(f, encoding="bytes")
            except (OSError, pickle.UnpicklingError, EOFError) as exc:
                raise DataError(f"{batch_dir / n}: cannot read CIFAR-10 batch ({exc})") from None
            xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(d[b"labels"], np.int64))
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = select(y) if select is not None else slice(None)
        return x[keep], y[keep]
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{root}: neither CIFAR-10 python batches nor a {split}/<class>/ folder layout")
    files, ys = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        cdir = split_dir / cls
        if not cdir.is_dir():
            raise DataError(f"{cdir}: class folder not found")
        for p in sorted(cdir.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
                ys.append(label)
    y = np.asarray(ys, np.int64)
    keep = select(y) if select is not None else np.arange(len(y))
    x = [np.asarray(open_image(files[i]).convert("RGB"), np.uint8) for i in keep]
    return (np.stack(x) if x else np.zeros((0, 32, 32, 3), np.uint8)), y[keep]


def _test_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of a stratified, deterministic subset of about ``limit`` test images (all of them for None)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(0)
    per_class = max(1, limit // 10)
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)])
    keep.sort()
    return keep


@dataclass
class OneClassData:
    """A one-class split: normal train images and a labelled evaluation set (label 1 = anomaly): the test
    split, or with ``evaluate_on="holdout"`` held-out training images (see ``load_one_class``)."""

    name: str
    normal_class: int
    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    test_classes: np.ndarray
    # each evaluation image's index in the split it comes from (the test split; the training split for holdout)
    test_index: np.ndarray


def _train_subset(labels: np.ndarray, normal_class: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of the normal training images a run uses: all, or a fixed random subset of ``limit``."""
    normal = np.flatnonzero(labels == normal_class)
    if limit is None or limit >= len(normal):
        return normal
    return normal[np.sort(np.random.default_rng(seed).permutation(len(normal))[:limit])]


def _holdout(labels: np.ndarray, used: np.ndarray, limit_test: int | None) -> np.ndarray:
    """Indices of the held-out evaluation set: the training images the run does not use (the normal class's
    others and every image of the other classes), a stratified subset of ``limit_test`` as for the test split."""
    pool = np.setdiff1d(np.arange(len(labels)), used)
    return pool[_test_subset(labels[pool], limit_test)]


EVALUATE_ON = ("test", "holdout")


def load_one_class(
    dataset: str,
    root: str | os.PathLike | None,
    normal_class: int,
    limit_test: int | None = None,
    limit_train: int | None = None,
    seed: int = 0,
    evaluate_on: str = "test",
) -> OneClassData:
    """Load ``dataset`` (``mnist``, ``fashion-mnist`` or ``cifar10``) with ``normal_class`` as normal.

    ``root=None`` uses Debian's ``dataset-fashion-mnist`` location for Fashion-MNIST. ``limit_test`` keeps a
    stratified, deterministic subset of the evaluation set (for quick runs; the paper uses all of the test
    split). ``limit_train`` keeps a fixed random subset (``seed``) of the normal training images.

    ``evaluate_on="holdout"`` (not the paper's protocol; for choosing settings without the test images): the
    evaluation set is drawn from the *training* split instead, from the images the run does not train on: the
    normal class's images outside the ``limit_train`` subset and the other nine classes' training images.
    """
    if not 0 <= normal_class <= 9:
        raise DataError(f"normal class must be 0..9, got {normal_class}")
    if evaluate_on not in EVALUATE_ON:
        raise DataError(
            f"data.evaluate_on for a one-class dataset must be one of {', '.join(EVALUATE_ON)} (synthetic "
            f"defects are for the demo, mvtec and folder sources), got {evaluate_on!r}"
        )
    holdout = evaluate_on == "holdout"
    if holdout and limit_train is None:
        raise DataError(
            "evaluate_on=holdout draws normal evaluation images from the training images a run does not use: "
            "set data.limit_train below the number of normal training images"
        )
    if dataset in ("mnist", "fashion-mnist"):
        if root is None:
            if dataset == "mnist":
                raise DataError("mnist: give the folder holding the four IDX files (--data PATH)")
            root = FASHION_MNIST_DIR
        xtr, ytr = load_mnist_like(root, "train")
        used = _train_subset(ytr, normal_class, limit_train, seed)
        if holdout:
            keep = _holdout(ytr, used, limit_test)
            xte, yte = xtr[keep], ytr[keep]
        else:
            xte, yte = load_mnist_like(root, "test")
            keep = _test_subset(yte, limit_test)
            xte, yte = xte[keep], yte[keep]
        xtr, index = xtr[used], keep
    elif dataset == "cifar10":  # the loader selects before decoding (the JPEG copy: only what is kept)
        if root is None:
            raise DataError("cifar10: give the folder holding the batches or class folders (--data PATH)")
        picked: dict[str, np.ndarray] = {}

        def select(y: np.ndarray) -> np.ndarray:
            picked["train"] = _train_subset(y, normal_class, limit_train, seed)
            picked["eval"] = _holdout(y, picked["train"], limit_test) if holdout else np.zeros(0, np.int64)
            return np.union1d(picked["train"], picked["eval"])

        x, y = load_cifar10(root, "train", select)
        order = np.union1d(picked["train"], picked["eval"])
        xtr = x[np.searchsorted(order, picked["train"])]
        if holdout:
            at = np.searchsorted(order, picked["eval"])
            xte, yte, index = x[at], y[at], picked["eval"]
        else:

            def select_test(y: np.ndarray) -> np.ndarray:
                picked["test"] = _test_subset(y, limit_test)
                return picked["test"]

            xte, yte = load_cifar10(root, "test", select_test)
            index = picked["test"]
    else:
        raise DataError(f"unknown one-class dataset {dataset!r} (mnist, fashion-mnist, cifar10)")
    if holdout and not np.any(yte == normal_class):
        raise DataError(
            f"{dataset}: evaluate_on=holdout found no normal training image outside data.limit_train "
            f"({limit_train}); lower it"
        )
    return OneClassData(
        name=dataset,
        normal_class=normal_class,
        train=xtr,
        test=xte,
        test_labels=(yte != normal_class).astype(np.int64),
        test_classes=yte,
        test_index=np.asarray(index, np.int64),
    )
