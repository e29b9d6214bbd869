"""Defects drawn on IE-Net's training inputs (``ienet.train_defects``): where, how many, and what stays clean."""

from __future__ import annotations

import pytest
import torch

from conftest import TRAIN_TINY
from utad.data.train_defects import defect_masks, draw_train_defects


def _images(b: int = 6, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand((b, 3, size, size), generator=g) * 0.2 + 0.4  # mid-grey noise, nothing near 0 or 1


def test_pixels_change_only_inside_the_masks_and_every_picked_image_gets_one():
    x = _images()
    out, masks = draw_train_defects(x, 1.0, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and masks.shape == (6, 1, 64, 64) and masks.dtype == torch.bool
    changed = (out != x).any(dim=1, keepdim=True)
    assert not (changed & ~masks).any()  # nothing outside a mask moves
    area = masks.float().mean(dim=(1, 2, 3))
    assert (area > 0).all() and (area < 0.1).all()  # small defects, but every image has one
    assert changed.sum() > 0.5 * masks.sum()  # and inside the masks the pixels do change
    assert torch.equal(x, _images())  # the input batch is not modified in place
    assert out.min() >= 0 and out.max() <= 1


def test_probability_zero_returns_the_batch_itself_and_the_rate_follows_p():
    x = _images(b=200, size=32)
    same, masks = draw_train_defects(x, 0.0)
    assert same is x and not masks.any()
    _, masks = draw_train_defects(x, 0.3, torch.Generator().manual_seed(1))
    picked = masks.flatten(1).any(dim=1).float().mean().item()
    assert 0.2 < picked < 0.4


def test_the_same_generator_seed_draws_the_same_defects():
    x = _images()
    a = draw_train_defects(x, 0.5, torch.Generator().manual_seed(7))
    b = draw_train_defects(x, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_masks_are_blobs_or_lines_of_bounded_size():
    masks = defect_masks(40, 128, 128, torch.Generator().manual_seed(0))
    area = masks.float().mean(dim=(1, 2, 3))
    assert (area > 0).all() and (area <= 0.05).all()
    assert len(torch.unique(area)) > 20  # shapes differ from one draw to the next


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_a_probability_outside_zero_one_is_refused(p):
    from utad.config import load_config
    from utad.errors import ConfigError

    with pytest.raises(ConfigError, match="ienet.train_defects"):
        load_config("cpu-fast", [f"ienet.train_defects={p}"])


def test_training_feeds_ienet_the_drawn_inputs_and_only_when_asked(tmp_path, monkeypatch):
    """A tiny demo run: with ``ienet.train_defects=1`` every IE-Net step draws defects at p = 1 and the loss
    gets them as ``x_in`` beside the clean batch; at 0 (the paper) nothing is drawn."""
    import utad.train as train_mod
    from utad.cli import main

    calls: list[tuple[float, bool]] = []
    real_draw, real_loss = train_mod.draw_train_defects, train_mod.ie_loss

    def draw(x, p, generator=None):
        calls.append((p, False))
        return real_draw(x, p, generator)

    def loss(model, x, *args):
        x_in = args[4] if len(args) > 4 else None
        calls.append((-1.0, x_in is not None and not torch.equal(x_in, x)))
        return real_loss(model, x, *args)

    monkeypatch.setattr(train_mod, "draw_train_defects", draw)
    monkeypatch.setattr(train_mod, "ie_loss", loss)
    argv = [*TRAIN_TINY, "--epochs", "1"]  # the last --epochs counts
    assert main([*argv, "--out", str(tmp_path / "on"), "--set", "ienet.train_defects=1"]) == 0
    draws = [p for p, _ in calls if p >= 0]
    differs = [d for p, d in calls if p < 0]
    assert draws and set(draws) == {1.0} and len(draws) == len(differs) and all(differs)
    calls.clear()
    assert main([*argv, "--out", str(tmp_path / "off")]) == 0
    assert calls and all(p < 0 and not d for p, d in calls)  # loss called, never with x_in
