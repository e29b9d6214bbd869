"""benchmarks/holdout_choice.py: the per-class choice on held-out images, never on the test split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from holdout_choice import choose, means, pooled_cells


def cell(dataset: str, variant: str, auroc: float, status: str = "done") -> dict:
    return {
        "id": f"{dataset}/{variant}",
        "dataset": dataset,
        "variant": variant,
        "image_auroc": auroc,
        "status": status,
    }


def test_each_class_takes_the_measurement_best_on_held_out_images_and_reports_its_test_auroc():
    cells = [
        # mnist-8: layer 3 wins on held-out images (and would lose on the test split: not looked at)
        cell("mnist-8", "utad", 0.85),
        cell("mnist-8", "utad-holdout", 0.86),
        cell("mnist-8", "layer-3-holdout", 0.93),
        cell("mnist-8", "layer-3", 0.80),
        # mnist-2: a tie on held-out images keeps the run as trained
        cell("mnist-2", "utad", 0.87),
        cell("mnist-2", "utad-holdout", 0.90),
        cell("mnist-2", "layer-3-holdout", 0.90),
        cell("mnist-2", "layer-3", 0.99),
        # fashion-mnist-0: its test cell with layer 3 has not run yet, so layer 3 is not a candidate
        cell("fashion-mnist-0", "utad", 0.82),
        cell("fashion-mnist-0", "utad-holdout", 0.80),
        cell("fashion-mnist-0", "layer-3-holdout", 0.95),
        cell("fashion-mnist-0", "layer-3", 0.97, status="failed"),
        # mnist-5: nothing measured on held-out images: no row
        cell("mnist-5", "utad", 0.90),
    ]
    rows = {r["dataset"]: r for r in choose(cells)}
    assert list(rows) == ["mnist-8", "mnist-2"]
    assert rows["mnist-8"]["chosen"] == "layer-3" and rows["mnist-8"]["chosen_test"] == 0.80
    assert rows["mnist-8"]["holdout"] == {"utad": 0.86, "layer-3": 0.93}
    assert rows["mnist-2"]["chosen"] == "utad" and rows["mnist-2"]["chosen_test"] == 0.87
    summary = means(list(rows.values()))
    assert summary == {
        "mnist": {
            "classes": 2,
            "as_trained_test": pytest.approx(0.86),
            "chosen_test": pytest.approx(0.835),
        }
    }


def test_variants_limit_the_choice_to_one_trained_family_whose_first_member_is_the_run_as_trained():
    cells = [
        cell("mnist-2", "kl1e-2", 0.80),
        cell("mnist-2", "kl1e-2-holdout", 0.99),
        cell("mnist-2", "kl1e-2-l3-holdout", 0.99),
        cell("mnist-2", "kl1e-2-l3", 0.81),
        cell("mnist-2", "flat", 0.94),
        cell("mnist-2", "flat-holdout", 0.93),
        cell("mnist-2", "flat-l3-holdout", 0.96),
        cell("mnist-2", "flat-l3", 0.97),
    ]
    (row,) = choose(cells, ["flat", "flat-l3"])
    assert row["holdout"] == {"flat": 0.93, "flat-l3": 0.96}
    assert row["chosen"] == "flat-l3" and row["chosen_test"] == 0.97 and row["as_trained_test"] == 0.94
    assert choose(cells, ["flat-l3", "flat"])[0]["as_trained_test"] == 0.97


def test_several_result_files_pool_their_named_families_and_refuse_a_cell_found_twice(tmp_path):
    v4 = tmp_path / "v4.json"
    flat = tmp_path / "flat.json"
    v4.write_text(
        json.dumps(
            {
                "cells": [
                    cell("mnist-2", "utad", 0.87),
                    cell("mnist-2", "utad-holdout", 0.86),
                    cell("mnist-2", "layer-3-holdout", 0.93),
                    cell("mnist-2", "layer-3", 0.94),
                    cell("mnist-2", "other-holdout", 0.99),  # not named: no candidate
                    cell("mnist-2", "other", 0.50),
                ]
            }
        )
    )
    flat.write_text(
        json.dumps({"cells": [cell("mnist-2", "flat", 0.97), cell("mnist-2", "flat-holdout", 0.95)]})
    )
    cells, variants = pooled_cells([f"{v4}:utad,layer-3", f"{flat}:flat"])
    assert variants == ["utad", "layer-3", "flat"]
    (row,) = choose(cells, variants)
    assert row["holdout"] == {"utad": 0.86, "layer-3": 0.93, "flat": 0.95}
    assert row["chosen"] == "flat" and row["chosen_test"] == 0.97 and row["as_trained_test"] == 0.87
    with pytest.raises(SystemExit, match="cell mnist-2/utad is in .*v4.json and .*v4.json"):
        pooled_cells([f"{v4}:utad", f"{v4}:utad"])
    # the same variant name for another dataset in another file is a candidate there
    cifar = tmp_path / "cifar.json"
    cifar.write_text(
        json.dumps({"cells": [cell("cifar10-0", "flat", 0.5), cell("cifar10-0", "flat-holdout", 0.6)]})
    )
    cells, variants = pooled_cells([f"{v4}:utad", f"{flat}:flat", f"{cifar}:flat"])
    assert variants == ["utad", "flat"] and {c["dataset"] for c in cells} == {"mnist-2", "cifar10-0"}
    with pytest.raises(SystemExit, match="name each one's variants"):
        pooled_cells([str(v4), f"{flat}:flat"])
    with pytest.raises(SystemExit, match="missing.json: not a benchmark results file"):
        pooled_cells([f"{tmp_path / 'missing.json'}:utad"])
