"""The helpers behind benchmarks/fidelity_ceiling.py (the README quotes its numbers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fidelity_ceiling import gaussian_blur, texture_mask


def test_blur_keeps_constants_and_spreads_a_dot_with_the_given_sigma():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat, atol=1e-6)
    dot = torch.zeros(1, 1, 21, 21)
    dot[0, 0, 10, 10] = 1.0
    out = gaussian_blur(dot, 1.0)[0, 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-5)  # mass kept (the dot is far from the border)
    rows = torch.arange(21.0) - 10
    var = float((out.sum(1) * rows**2).sum())
    assert var == pytest.approx(1.0, rel=0.02)  # the kernel's variance is sigma^2 (truncated at 4 sigma)
    assert torch.allclose(out, out.T, atol=1e-7)  # the same along both axes


def test_texture_mask_finds_red_pixels_and_dilates_them():
    x = torch.full((1, 3, 9, 9), 0.8)  # off-white, like a pill
    x[0, :, 4, 4] = torch.tensor([0.8, 0.5, 0.5])  # redness 0.3
    x[0, :, 0, 8] = torch.tensor([0.5, 0.8, 0.8])  # cyan: negative redness
    mask = texture_mask(x, 0.1, dilate=0)[0, 0]
    assert mask.sum() == 1 and mask[4, 4]
    grown = texture_mask(x, 0.1, dilate=1)[0, 0]
    assert grown.sum() == 9 and grown[3:6, 3:6].all()
    assert not texture_mask(x, 0.35, dilate=1).any()  # above the dot's redness: nothing
