"""benchmarks/map_postprocess.py: what each post-processing of e does to a map."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from map_postprocess import variants


def test_per_position_normalisation_removes_what_every_normal_map_has_at_the_same_place():
    rng = np.random.default_rng(0)
    edge = np.zeros((16, 16))
    edge[4, :] = 5.0  # bright on every normal map: an imprint's edge
    normal = edge + rng.normal(0, 0.1, (20, 16, 16))
    e = np.stack([edge.copy(), edge.copy()])
    e[1, 10:13, 10:13] += 3.0  # a defect away from the edge
    v = variants(e, normal)
    assert np.array_equal(v["none"], e)
    assert np.abs(v["sub-mean"][0]).max() < 0.2  # the edge is gone
    assert v["sub-mean"][1, 11, 11] > 2.8  # the defect stays
    assert v["z"][1, 11, 11] > 5 * np.abs(v["z"][0]).max()


def test_grey_opening_removes_hot_spots_smaller_than_its_square_and_keeps_larger_ones():
    e = np.zeros((1, 20, 20))
    e[0, 3, 3] = 4.0  # a 1-px speckle
    e[0, 10:17, 10:17] = 2.0  # a 7x7 defect
    v = variants(e, np.zeros((2, 20, 20)))
    for r in (1, 2, 3):
        assert v[f"open{r}"][0, 3, 3] == 0.0
        assert v[f"open{r}"][0, 13, 13] == 2.0
    assert v["open1"][0, 10, 10] == 2.0  # a 3x3 square fits in the corner of the defect


def test_the_probes_opening_ignores_pixels_outside_the_image_as_the_detectors_does():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    e = rng.random((2, 12, 12))
    e[0, :2, :2] = 5.0  # a 2-px corner spot survives a 3-px square: pixels outside the image take no part
    v = variants(e, np.zeros((2, 12, 12)))
    for r in (1, 2, 3):
        size = (2 * r + 1, 2 * r + 1)
        eroded = [ndimage.grey_erosion(m, size=size, mode="constant", cval=np.inf) for m in e]
        expected = [ndimage.grey_dilation(m, size=size, mode="constant", cval=-np.inf) for m in eroded]
        np.testing.assert_allclose(v[f"open{r}"], np.stack(expected), rtol=0, atol=1e-12)
    assert np.all(v["open1"][0, :2, :2] == 5.0)
