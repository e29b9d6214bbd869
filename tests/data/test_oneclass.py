import gzip
import pickle

import numpy as np
import pytest

from conftest import CIFAR, MNIST, save
from utad.data import ArrayDataset
from utad.data.oneclass import (
    CIFAR10_CLASSES,
    FASHION_MNIST_DIR,
    load_cifar10,
    load_mnist_like,
    load_one_class,
    read_idx,
)
from utad.errors import DataError


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_plain_and_gzip(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    assert np.array_equal(read_idx(tmp_path / name), arr)


def test_read_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((2, 3, 3), np.uint8)
    write_idx(tmp_path / "short", arr)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated IDX"):
        read_idx(tmp_path / "short")


def test_real_mnist_one_class_split():
    data = load_one_class("mnist", MNIST, normal_class=3)
    _xte, yte = load_mnist_like(MNIST, "test")
    assert data.train.shape[1:] == (28, 28) and len(data.train) == 6131  # official count of 3s in train
    assert len(data.test) == 10000 and data.test_labels.sum() == 10000 - (yte == 3).sum()
    ds = ArrayDataset(data.test, data.test_labels, size=64)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["label"] == int(yte[0] != 3)


def test_real_cifar10_folders_limited():
    data = load_one_class("cifar10", CIFAR, normal_class=0, limit_test=200)
    assert data.train.shape == (1000, 32, 32, 3)
    assert len(data.test) == 200 and data.test_labels.sum() == 180
    assert np.bincount(data.test_classes).tolist() == [20] * 10


def test_cifar10_folders_decode_only_the_images_kept(tmp_path):
    """One class of the JPEG copy: only its training files and the test subset are opened (a broken file of
    another class is never read); what is kept equals what decoding everything and then selecting gives."""
    for split, n in (("train", 3), ("test", 4)):
        for c, cls in enumerate(CIFAR10_CLASSES):
            for i in range(n):
                save(tmp_path / split / cls / f"{i}.png", np.full((32, 32, 3), 10 * c + i, np.uint8))
    everything = load_one_class("cifar10", tmp_path, normal_class=2, limit_test=20)
    (tmp_path / "train" / "truck" / "9.png").write_bytes(b"not an image")
    data = load_one_class("cifar10", tmp_path, normal_class=2, limit_test=20)
    assert data.train.shape == (3, 32, 32, 3) and data.train[:, 0, 0, 0].tolist() == [20, 21, 22]
    assert np.bincount(data.test_classes).tolist() == [2] * 10 and data.test_labels.sum() == 18
    for k in ("train", "test", "test_labels", "test_classes"):
        assert np.array_equal(getattr(data, k), getattr(everything, k)), k
    with pytest.raises(DataError, match="9.png"):
        load_cifar10(tmp_path, "train")  # decoding everything does read it
    x, y = load_cifar10(tmp_path, "test", lambda labels: np.flatnonzero(labels == 9)[::-1])
    assert y.tolist() == [9] * 4 and x[:, 0, 0, 0].tolist() == [93, 92, 91, 90]


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(d, f)
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (50, 32, 32, 3) and list(y[:10]) == list(range(10))


def test_cifar10_missing_class_folder(tmp_path):
    save(tmp_path / "test" / "airplane" / "0.jpg", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="automobile: class folder not found"):
        load_cifar10(tmp_path, "test")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist (CI does)")
def test_fashion_mnist_from_debian_package():
    data = load_one_class("fashion-mnist", None, normal_class=0)
    assert len(data.train) == 6000 and len(data.test) == 10000


def test_limit_train_keeps_a_fixed_subset_of_normal_images(tmp_path):
    from utad.config import DataConfig
    from utad.data.bundle import build_data

    cfg = DataConfig(source="mnist", path=str(MNIST), normal_class=1, limit_train=200, limit_test=100)
    a, b = build_data(cfg, 0, tmp_path), build_data(cfg, 0, tmp_path)
    assert len(a.train) + len(a.val) == 200 and len(a.test) == 100
    assert np.array_equal(a.train[0]["image"].numpy(), b.train[0]["image"].numpy())


@pytest.mark.parametrize(
    "source, root, named", [("mnist", MNIST, "class 7"), ("cifar10", CIFAR, "class 7 (horse)")]
)
def test_every_one_class_test_image_is_named_by_its_original_class(tmp_path, source, root, named):
    """Reports break the image AUROC down per anomalous class (``per_defect_type``): which classes the
    normal model confuses with its own."""
    from utad.config import DataConfig
    from utad.data.bundle import build_data

    cfg = DataConfig(source=source, path=str(root), normal_class=1, limit_train=50, limit_test=100)
    data = build_data(cfg, 0, tmp_path)
    kinds, labels = data.test_kinds, data.test.labels
    assert len(kinds) == len(labels) == 100
    assert all((k == "good") == (y == 0) for k, y in zip(kinds, labels))
    assert sorted(set(kinds) - {"good"}) == sorted(n for n in set(kinds) if n.startswith("class "))
    assert len(set(kinds)) == 10 and named in kinds and not any(k.startswith("class 1") for k in kinds)


@pytest.mark.parametrize("dataset, root", [("mnist", MNIST), ("cifar10", CIFAR)])
def test_holdout_evaluates_on_training_images_the_run_never_sees(dataset, root):
    """``evaluate_on=holdout``: the same training subset as the protocol (the one the Table 2 runs used), and an
    evaluation set drawn from the other training images: the normal class's unused ones and the other nine
    classes', stratified like the test subset, never a test image and never an image the run trains on."""
    everything = load_one_class(dataset, root, normal_class=4)  # every normal training image
    picked = np.sort(np.random.default_rng(3).permutation(len(everything.train))[:300])
    test = load_one_class(dataset, root, 4, limit_test=100, limit_train=300, seed=3)
    held = load_one_class(dataset, root, 4, limit_test=100, limit_train=300, seed=3, evaluate_on="holdout")
    assert np.array_equal(test.train, everything.train[picked])  # the subset runs trained on before
    assert np.array_equal(held.train, test.train)
    assert np.bincount(held.test_classes).tolist() == [10] * 10 and held.test_labels.sum() == 90
    assert np.array_equal(held.test_labels, (held.test_classes != 4).astype(np.int64))
    flat = {a.tobytes() for a in held.train}
    normal = held.test[held.test_classes == 4]
    assert not any(a.tobytes() in flat for a in normal)  # normal evaluation images: unused training images
    unused = np.delete(everything.train, picked, axis=0)
    assert all(any(np.array_equal(a, b) for b in unused) for a in normal[:3])
    x_train, _ = load_mnist_like(root, "train") if dataset == "mnist" else load_cifar10(root, "train")
    pool = {a.tobytes() for a in x_train}
    assert all(a.tobytes() in pool for a in held.test[:20])  # from the training split, not the test split


@pytest.mark.parametrize("dataset, root", [("mnist", MNIST), ("cifar10", CIFAR)])
@pytest.mark.parametrize("evaluate_on", ["test", "holdout"])
def test_evaluation_images_name_their_index_in_the_source_split(dataset, root, evaluate_on):
    """``test_index`` (and the dataset item's path built from it) points at the very image in the split it was
    taken from: the test split, or the training split for the held-out set; so a score in test_scores.csv can be
    traced back to its image."""
    data = load_one_class(dataset, root, 4, limit_test=50, limit_train=300, seed=3, evaluate_on=evaluate_on)
    split = "train" if evaluate_on == "holdout" else "test"
    x, y = load_mnist_like(root, split) if dataset == "mnist" else load_cifar10(root, split)
    assert len(data.test_index) == len(data.test) == 50
    assert np.array_equal(x[data.test_index], data.test) and np.array_equal(
        y[data.test_index], data.test_classes
    )
    ds = ArrayDataset(data.test, data.test_labels, 32, name=f"{dataset}-{evaluate_on}", index=data.test_index)
    assert ds[7]["path"] == f"{dataset}-{evaluate_on}:{data.test_index[7]}" and data.test_index[7] != 7
    assert ArrayDataset(data.test, data.test_labels, 32, name="a")[7]["path"] == "a:7"
    with pytest.raises(ValueError, match="50 images but 3 indices"):
        ArrayDataset(data.test, data.test_labels, 32, index=data.test_index[:3])


def test_holdout_needs_a_training_subset():
    with pytest.raises(DataError, match="set data.limit_train below"):
        load_one_class("mnist", MNIST, 1, limit_test=100, evaluate_on="holdout")
    with pytest.raises(DataError, match="must be one of test, holdout .*, got 'val'"):
        load_one_class("mnist", MNIST, 1, evaluate_on="val")
