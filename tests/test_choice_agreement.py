"""benchmarks/choice_agreement.py: pairing synthetic and test cells, the rank agreement, the choice rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from choice_agreement import agreement


def cell(variant: str, image: float, pixel: float, aupro: float) -> dict:
    return {
        "id": f"bottle/{variant}",
        "dataset": "bottle",
        "variant": variant,
        "image_auroc": image,
        "pixel_auroc": pixel,
        "aupro": aupro,
        "iou": 0.1,
        "iou_defect_mean": 0.2,
    }


def test_pairs_each_synthetic_measurement_with_its_test_cell_and_picks_by_the_synthetic_mean():
    cells = [
        cell("run", 0.80, 0.90, 0.70),  # the trained cell: the paper's PM on the test split
        cell("run-syn", 0.85, 0.95, 0.80),
        cell("run-syn-a", 0.90, 0.96, 0.85),  # best synthetic mean: chosen
        cell("run-test-a", 0.70, 0.91, 0.75),
        cell("run-syn-b", 0.60, 0.90, 0.70),
        cell("run-test-b", 0.60, 0.80, 0.60),
        cell("run-syn-c", 0.99, 0.99, 0.99),  # no test cell: left out
    ]
    (row,) = agreement(cells)
    assert row["run"] == "run" and row["measurements"] == ["a", "b", "pm"]
    assert row["image_auroc"]["test"] == {"a": 0.70, "b": 0.60, "pm": 0.80}
    assert row["image_auroc"]["spearman"] == pytest.approx(0.5)  # synthetic a > pm > b, test pm > a > b
    assert row["pixel_auroc"]["spearman"] == pytest.approx(1.0)
    assert row["chosen"] == "a" and row["chosen_test"]["image_auroc"] == 0.70
