import numpy as np
import pytest

from conftest import BOTTLE, save
from utad.data import SampleDataset, list_folder, list_mvtec, split_validation
from utad.errors import DataError


def test_list_mvtec_bottle_counts():
    listing = list_mvtec(BOTTLE)
    assert len(listing.train) == 209
    by_type = {}
    for s in listing.test:
        by_type[s.defect_type] = by_type.get(s.defect_type, 0) + 1
    assert by_type == {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    assert sum(s.mask is not None for s in listing.test) == 63
    assert all(s.label == (s.defect_type != "good") for s in listing.test)


def test_root_plus_category(tiny_mvtec):
    listing = list_mvtec(tiny_mvtec.parent, category="widget")
    assert listing.name == "widget" and len(listing.train) == 4


def test_missing_mask_is_an_error_unless_no_masks(tiny_mvtec):
    (tiny_mvtec / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DataError, match=r"test/crack/001.png: defect image has no mask"):
        list_mvtec(tiny_mvtec)
    listing = list_mvtec(tiny_mvtec, masks=False)
    assert all(s.mask is None for s in listing.test) and not listing.has_masks


def test_orphan_mask_is_an_error(tiny_mvtec):
    save(tiny_mvtec / "ground_truth" / "crack" / "009_mask.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match="009_mask.png: mask has no matching test image"):
        list_mvtec(tiny_mvtec)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        list_mvtec(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an MVTec AD category folder"):
        list_mvtec(tmp_path / "empty")
    (tmp_path / "c" / "train" / "good").mkdir(parents=True)
    (tmp_path / "c" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"train/good: no image files"):
        list_mvtec(tmp_path / "c")


def test_dataset_reads_and_checks_mask_size(tiny_mvtec):
    listing = list_mvtec(tiny_mvtec)
    ds = SampleDataset(listing.test, size=16)
    item = ds[len(ds) - 1]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert item["label"] == 0 or item["mask"].any()
    save(tiny_mvtec / "ground_truth" / "crack" / "000_mask.png", np.zeros((20, 20), np.uint8))
    crack0 = next(i for i, s in enumerate(listing.test) if s.defect_type == "crack")
    with pytest.raises(DataError, match=r"000_mask.png: mask size 20x20 differs from its image"):
        ds[crack0]


def test_folder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        save(tmp_path / "ok" / f"{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        save(tmp_path / "ng" / f"b{i}.jpg", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        save(tmp_path / "masks" / f"b{i}_mask.png", np.full((16, 16), 255, np.uint8))
    listing = list_folder(tmp_path / "ok", [tmp_path / "ng"], tmp_path / "masks")
    assert len(listing.train) == 3 and len(listing.test) == 3 and all(s.mask for s in listing.test)
    (tmp_path / "masks" / "b2_mask.png").unlink()
    with pytest.raises(DataError, match="b2.jpg: bad image has no mask"):
        list_folder(tmp_path / "ok", [tmp_path / "ng"], tmp_path / "masks")


def test_split_validation_is_deterministic_and_disjoint():
    listing = list_mvtec(BOTTLE)
    tr1, va1 = split_validation(listing.train, 0.1, seed=3)
    _tr2, va2 = split_validation(listing.train, 0.1, seed=3)
    assert va1 == va2 and len(va1) == 21 and len(tr1) == 188
    assert not set(tr1) & set(va1)
    _, va3 = split_validation(listing.train, 0.1, seed=4)
    assert va3 != va1
