"""Synthetic defects on validation images (``data.evaluate_on=synthetic``): what is drawn, and where."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utad.config import DataConfig
from utad.data.bundle import build_data
from utad.data.synthetic import KINDS, SyntheticDefects
from utad.errors import DataError


class Flat(torch.utils.data.Dataset):
    """Uniform grey images of different levels, 3 x 64 x 64."""

    def __init__(self, n: int = 4) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        image = torch.full((3, 64, 64), 0.2 + 0.15 * i)
        return {
            "image": image,
            "mask": torch.zeros(1, 64, 64, dtype=torch.bool),
            "label": 0,
            "path": f"a:{i}",
        }


def test_each_image_comes_as_it_is_and_with_each_kind_of_masked_defect():
    base = Flat(4)
    syn = SyntheticDefects(base, seed=3)
    assert len(syn) == 16 and syn.labels.tolist() == [0] * 4 + [1] * 12
    assert [syn.kind(i) for i in range(16)] == [None] * 4 + [k for k in KINDS for _ in range(4)]
    for i in range(4):
        item = syn[i]
        assert torch.equal(item["image"], base[i]["image"]) and not item["mask"].any() and item["label"] == 0
    for i in range(4, 16):
        item, clean = syn[i], base[i % 4]["image"]
        mask = item["mask"][0]
        changed = (item["image"] - clean).abs().amax(0) > 1e-6
        assert item["label"] == 1 and item["path"] == f"a:{i % 4}#synthetic-{syn.kind(i)}"
        assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert 4 <= mask.sum() <= 0.25 * 64 * 64  # a defect, not the whole image
        assert not (changed & ~mask).any()  # nothing changes outside the mask
        assert changed[mask].float().mean() > 0.5  # the mask marks what changed
    # the same seed draws the same defects; another seed other ones
    assert torch.equal(SyntheticDefects(base, seed=3)[5]["image"], syn[5]["image"])
    assert not torch.equal(SyntheticDefects(base, seed=4)[5]["image"], syn[5]["image"])


def test_a_patch_comes_from_another_validation_image():
    base = Flat(3)
    item = SyntheticDefects(base, seed=0)[3]  # a patch on image 0
    levels = set(np.round(item["image"][0][item["mask"][0]].unique().numpy(), 3).tolist())
    assert levels and levels <= {0.35, 0.5}  # pasted from image 1 or 2, not from image 0 (0.2)


def test_mvtec_data_evaluated_on_synthetic_defects(tiny_mvtec, tmp_path):
    cfg = DataConfig(
        source="mvtec", path=str(tiny_mvtec), image_size=32, val_fraction=0.5, evaluate_on="synthetic"
    )
    data = build_data(cfg, seed=0, cache=tmp_path)
    assert data.name == "widget-synthetic" and data.has_masks and data.test_samples is None
    assert len(data.val) == 2 and len(data.test) == 8 and data.test.labels.tolist() == [0, 0, *[1] * 6]
    assert data.test[2]["mask"].shape == (1, 32, 32) and data.test[2]["mask"].any()
    with pytest.raises(DataError, match="needs at least 2 validation images, the split has 1"):
        build_data(
            DataConfig(source="mvtec", path=str(tiny_mvtec), val_fraction=0.25, evaluate_on="synthetic"),
            0,
            tmp_path,
        )
    with pytest.raises(DataError, match="evaluate_on='holdout' is not available for source mvtec"):
        build_data(DataConfig(source="mvtec", path=str(tiny_mvtec), evaluate_on="holdout"), 0, tmp_path)


def test_strength_scales_every_defect_s_change_and_keeps_its_place():
    base = Flat(4)
    full, subtle = SyntheticDefects(base, seed=3), SyntheticDefects(base, seed=3, strength=0.3)
    for i in range(4, 16):  # a patch, a stain and a scratch on each image
        clean = base[i % 4]["image"]
        assert torch.equal(full[i]["mask"], subtle[i]["mask"])  # the same defect, at the same place
        torch.testing.assert_close(subtle[i]["image"] - clean, 0.3 * (full[i]["image"] - clean))
    assert torch.equal(subtle[2]["image"], base[2]["image"])  # normal images untouched
    with pytest.raises(ValueError, match=r"synthetic_strength must be in \(0, 1\], got 0"):
        SyntheticDefects(base, strength=0)


def test_synthetic_strength_reaches_the_data_and_is_checked(tiny_mvtec, tmp_path):
    def cfg(strength: float) -> DataConfig:
        return DataConfig(
            source="mvtec",
            path=str(tiny_mvtec),
            image_size=32,
            val_fraction=0.5,
            evaluate_on="synthetic",
            synthetic_strength=strength,
        )

    assert build_data(cfg(0.25), seed=0, cache=tmp_path).test.strength == 0.25
    with pytest.raises(DataError, match=r"data.synthetic_strength must be in \(0, 1\], got 1.5"):
        build_data(cfg(1.5), seed=0, cache=tmp_path)
