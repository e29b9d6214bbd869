"""Does the synthetic-defect ranking agree with the test split's? Read from ``mvtec-choice`` results.

The grid ``benchmarks/grids/mvtec-choice.yaml`` measures the same trained networks with several measurements
twice: on synthetic defects drawn on the validation images (variants ``<run>-syn[-<m>]``, the set to choose on)
and on the test split (``<run>`` and ``<run>-test-<m>``, for reference). For each (dataset, trained run) this
prints both rankings of the measurements per metric and their Spearman correlation, and which measurement the
validation choice rule picks (the best mean of image AUROC, pixel AUROC and AUPRO on the synthetic set) with
its test numbers:

    python benchmarks/choice_agreement.py benchmarks/results/mvtec-choice.json \
        --json benchmarks/results/mvtec-choice-agreement.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import spearmanr

from utad.choose import RULE, RULE_KEYS, rule_score

METRICS = RULE_KEYS  # the metrics `utad choose` ranks by


def _pairs(cells: list[dict]) -> dict[tuple[str, str], dict[str, tuple[dict, dict]]]:
    """(dataset, run) -> measurement -> (synthetic cell, test cell), where both were measured."""
    by_id = {c["id"]: c for c in cells}
    out: dict[tuple[str, str], dict[str, tuple[dict, dict]]] = {}
    for c in cells:
        base, sep, measurement = c["variant"].partition("-syn")
        if not sep:
            continue
        measurement = measurement.lstrip("-") or "pm"
        test_id = f"{c['dataset']}/{base}" + ("" if measurement == "pm" else f"-test-{measurement}")
        if test_id in by_id:
            out.setdefault((c["dataset"], base), {})[measurement] = (c, by_id[test_id])
    return out


def agreement(cells: list[dict]) -> list[dict]:
    rows = []
    for (dataset, run), pairs in sorted(_pairs(cells).items()):
        names = sorted(pairs)
        row: dict = {"dataset": dataset, "run": run, "measurements": names}
        for key in METRICS:
            syn = [pairs[n][0][key] for n in names]
            test = [pairs[n][1][key] for n in names]
            constant = len(set(syn)) < 2 or len(set(test)) < 2  # e.g. every test AUROC 1.0: undefined
            rho = None if len(names) < 3 or constant else float(spearmanr(syn, test).statistic)
            row[key] = {"synthetic": dict(zip(names, syn)), "test": dict(zip(names, test)), "spearman": rho}
        score = {n: rule_score(pairs[n][0]) for n in names}
        chosen = max(score, key=score.get)
        row["chosen"] = chosen
        row["chosen_test"] = {k: pairs[chosen][1][k] for k in (*METRICS, "iou", "iou_defect_mean")}
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="mvtec-choice.json (utad benchmark's results)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    rows = agreement(json.loads(args.results.read_text())["cells"])
    for r in rows:
        rhos = ", ".join(
            f"{k} {'undefined (one value)' if r[k]['spearman'] is None else format(r[k]['spearman'], '.2f')}"
            for k in METRICS
        )
        t = r["chosen_test"]
        print(
            f"{r['dataset']}/{r['run']}: {len(r['measurements'])} measurements, Spearman syn vs test: {rhos}; "
            f"chosen on synthetic: {r['chosen']} -> test image {t['image_auroc']:.3f}, pixel "
            f"{t['pixel_auroc']:.3f}, AUPRO {t['aupro']:.3f}, IoU {t['iou']:.3f} / {t['iou_defect_mean']:.3f}"
        )
    if args.json:
        payload = {
            "source": str(args.results),
            "rule": RULE,
        }
        args.json.write_text(json.dumps({**payload, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
