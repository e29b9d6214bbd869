"""Table 2 with the measurement (or the trained run) chosen per class on held-out training images.

Read from one grid's results, e.g. ``benchmarks/grids/oneclass-measure.yaml``, which measures each trained
one-class cell twice per measurement: on held-out training images (variants ``<m>-holdout``; ``utad-holdout`` is
the run as trained) and on the test split (``<m>``; ``utad``). Per class this picks the measurement with the
highest held-out image AUROC (ties: the run as trained) and reports its test AUROC, next to the run as trained,
with the mean per dataset. The test split takes no part in the choice:

    python benchmarks/holdout_choice.py benchmarks/results/oneclass-measure.json \
        --json benchmarks/results/oneclass-measure-choice.json

Several result files, each ``FILE:variant,variant``, pool their candidates: e.g. Table 2's v4 runs and the runs
with IE-Net's flattened code, so each class takes a trained family and a measurement on held-out images. The
first variant named is the run as trained; a finished cell found in two files is an error:

    python benchmarks/holdout_choice.py benchmarks/results/oneclass-measure.json:utad,layer-3 \
        benchmarks/results/oneclass-flat.json:flat,flat-l3 --json benchmarks/results/table2-v5-choice.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from utad.io import write_json

AS_TRAINED = "utad"


def choose(cells: list[dict], variants: list[str] | None = None) -> list[dict]:
    """One row per dataset with every measurement measured on both sets: the held-out choice and its test AUROC.

    ``variants`` limits the candidates to those measurements, the first being the run as trained (default: every
    measurement of the grid, ``utad`` as trained).
    """
    as_trained = variants[0] if variants else AS_TRAINED
    by_id = {c["id"]: c for c in cells if c.get("status") == "done"}
    rows = []
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        held, test = {}, {}
        for c in cells:
            if c["dataset"] != dataset or c["id"] not in by_id:
                continue
            name, sep, _ = c["variant"].partition("-holdout")
            if variants and name not in variants:
                continue
            if sep and f"{dataset}/{name}" in by_id:
                held[name] = c["image_auroc"]
                test[name] = by_id[f"{dataset}/{name}"]["image_auroc"]
        if as_trained not in held or len(held) < 2:
            continue
        ranked = sorted(held, key=lambda n: (-held[n], n != as_trained))  # ties: the run as trained
        chosen = ranked[0]
        rows.append(
            {
                "dataset": dataset,
                "holdout": held,
                "test": test,
                "chosen": chosen,
                "as_trained_test": test[as_trained],
                "chosen_test": test[chosen],
            }
        )
    return rows


def pooled_cells(specs: list[str]) -> tuple[list[dict], list[str] | None]:
    """The finished cells of every ``FILE[:variant,...]`` spec (with their held-out twins) and the variants named.

    Without any ``:variants`` the one file's every measurement is a candidate (``None``). Two files may name the
    same variant for different datasets (e.g. ``flat`` on MNIST in one grid, on CIFAR-10 in another); a finished
    cell found in two files is an error.
    """
    cells: list[dict] = []
    variants: list[str] = []
    owner: dict[str, str] = {}
    for spec in specs:
        path, _, names = spec.partition(":")
        if len(specs) > 1 and not names:
            raise SystemExit(f"{spec}: with several result files, name each one's variants (FILE:a,b)")
        try:
            file_cells = json.loads(Path(path).read_text())["cells"]
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"{path}: not a benchmark results file ({exc})") from exc
        wanted = names.split(",") if names else []
        keep = {*wanted, *(f"{n}-holdout" for n in wanted)}
        for c in file_cells:
            if c.get("status") != "done" or (wanted and c["variant"] not in keep):
                continue
            if c["id"] in owner:
                raise SystemExit(f"cell {c['id']} is in {owner[c['id']]} and {path}: name it in one only")
            owner[c["id"]] = path
            cells.append(c)
        variants += [n for n in wanted if n not in variants]
    return cells, variants or None


def means(rows: list[dict]) -> dict[str, dict]:
    """Per dataset family (``mnist-3`` -> ``mnist``): classes, mean test AUROC as trained and chosen."""
    out: dict[str, dict] = {}
    for family in dict.fromkeys(re.sub(r"-\d+$", "", r["dataset"]) for r in rows):
        sel = [r for r in rows if re.sub(r"-\d+$", "", r["dataset"]) == family]
        out[family] = {
            "classes": len(sel),
            "as_trained_test": float(np.mean([r["as_trained_test"] for r in sel])),
            "chosen_test": float(np.mean([r["chosen_test"] for r in sel])),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "results",
        nargs="+",
        help="the grid's results JSON (utad benchmark ... --publish), or several as FILE:a,b",
    )
    ap.add_argument("--json", help="write the rows and means here")
    ap.add_argument("--variants", help="measurements to choose from, comma-separated, as trained first")
    args = ap.parse_args()
    if args.variants and len(args.results) > 1:
        raise SystemExit("--variants is for one results file; with several, name each one's as FILE:a,b")
    specs = [f"{args.results[0]}:{args.variants}"] if args.variants else args.results
    cells, variants = pooled_cells(specs)
    rows = choose(cells, variants)
    helds = ["  ".join(f"{k} {v:.3f}" for k, v in r["holdout"].items()) for r in rows]
    width = max(map(len, helds), default=0)
    print(
        f"{'class':16s} {'held-out AUROC per measurement':{width}s} {'chosen':10s} test: as trained -> chosen"
    )
    for r, held in zip(rows, helds):
        print(
            f"{r['dataset']:16s} {held:{width}s} {r['chosen']:10s} {r['as_trained_test']:.3f} -> {r['chosen_test']:.3f}"
        )
    summary = means(rows)
    for family, m in summary.items():
        print(
            f"{family}: {m['classes']} classes, mean test AUROC {m['as_trained_test']:.3f} -> {m['chosen_test']:.3f}"
        )
    if args.json:
        only = f" --variants {args.variants}" if args.variants else ""
        note = f"python benchmarks/holdout_choice.py {' '.join(args.results)}{only} --json {args.json}"
        write_json(
            args.json,
            {"note": note, "rule": "the highest held-out image AUROC", "rows": rows, "means": summary},
        )


if __name__ == "__main__":
    main()
