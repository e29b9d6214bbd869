"""Markdown tables from benchmark results (``utad.benchmark``), with the paper's numbers side by side.

Pure functions of the results dict, so a fixed input gives a fixed text (tested). Three layouts:

* ``compare``: one row per cell, every metric plus the costs (training minutes, inference ms/image, learned
  parameters, peak memory), and the published numbers the grid names for the variant with the difference.
* ``mvtec`` (Table 1): one row per category, per variant the paper-comparable IoU (mean over defect images)
  next to the set-pooled IoU, image / pixel AUROC, AUPRO, F1-max, and the paper's IoU for that category and
  method with the difference; a mean row against the paper's means.
* ``oneclass`` (Table 2): image AUROC per normal class and per variant, a mean per dataset against the paper.

Every table ends with the budget of each variant (preset, resolution, epochs, minutes, backbone).
Differences are ours minus the paper's.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from utad.paper import PAPER_NAME, TABLE1_IOU, TABLE1_MEAN, TABLE2_UTAD

TABLES = ("compare", "mvtec", "oneclass")
# a paper key -> the result it is compared with (IoU: the paper-comparable per-defect-image mean)
PAPER_KEYS = {
    "iou": "iou_defect_mean",
    "image_auroc": "image_auroc",
    "pixel_auroc": "pixel_auroc",
    "params_m": "params_m",
}


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _d(ours: float | None, paper: float | None) -> str:
    return "" if ours is None or paper is None else f" ({ours - paper:+.3f})"


def _value(cell: dict[str, Any], key: str) -> float | None:
    if key == "params_m":
        return None if cell.get("parameters") is None else cell["parameters"] / 1e6
    return cell.get(key)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals and len(vals) == len(values) else None


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _variants(cells: list[dict]) -> list[str]:
    return list(dict.fromkeys(c["variant"] for c in cells))


def budget(cells: list[dict]) -> str:
    """One line per variant: method, preset, image size, epochs, mean training minutes, backbone."""
    rows = []
    for v in _variants(cells):
        group = [c for c in cells if c["variant"] == v]
        c = group[0]
        epochs = _epochs(group)
        weights = "pretrained" if c.get("backbone_pretrained") else "random weights"
        backbone = "none" if c.get("backbone") == "none" else f"{c.get('backbone')} ({weights})"
        extra = f", test with {' '.join(c['test_set'])}" if c.get("test_set") else ""
        rows.append(
            [
                v,
                c.get("method", "-"),
                str(c.get("preset") or "-") + extra,
                str(c.get("image_size")),
                epochs,
                _f(_mean([x.get("train_minutes") for x in group]), 1),
                _cores(group),
                backbone,
            ]
        )
    header = ["variant", "method", "preset", "px", "epochs", "train min (mean)", "cores busy", "backbone"]
    return _table(header, rows)


def _epochs(group: list[dict]) -> str:
    """The epochs of a variant's cells; where a grid sets them per dataset, each schedule with its cell count."""
    each = [
        ", ".join(f"{k} {n}" for k, n in (c.get("epochs") or {}).items()) or "one pass (no epochs)"
        for c in group
    ]
    kinds = list(dict.fromkeys(each))
    if len(kinds) == 1:
        return kinds[0]
    return "; ".join(f"{k} ({each.count(k)} cell{'s' if each.count(k) > 1 else ''})" for k in kinds)


def _cores(group: list[dict]) -> str:
    """Mean cores the trainings kept busy, of the threads they had ("1.9 of 2"), over the cells where it was
    measured; "-" where none was (in-process runs, cells finished before it was recorded). Far below the
    threads: the cells shared the machine, and their minutes overstate the cost on idle cores."""
    measured = [x for x in group if x.get("train_cores_used") is not None]
    if not measured:
        return "-"
    used = float(np.mean([x["train_cores_used"] for x in measured]))
    threads = "/".join(str(t) for t in sorted({x.get("train_threads") for x in measured}))
    return f"{used:.1f} of {threads}"


def compare_table(results: dict[str, Any]) -> str:
    cells = results["cells"]
    header = ["dataset", "variant", "image AUROC", "pixel AUROC", "AUPRO", "IoU set", "IoU defect-mean"]
    header += ["F1-max", "train min", "ms/image", "params (M)", "peak MB", "paper (ours - paper)"]
    rows = []
    for c in cells:
        paper = "; ".join(
            f"{k} {_f(v)}{_d(_value(c, PAPER_KEYS.get(k, k)), v)}" for k, v in (c.get("paper") or {}).items()
        )
        rows.append(
            [
                c["dataset"],
                c["variant"],
                _f(c.get("image_auroc")),
                _f(c.get("pixel_auroc")),
                _f(c.get("aupro")),
                _f(c.get("iou")),
                _f(c.get("iou_defect_mean")),
                _f(c.get("f1_max")),
                _f(c.get("train_minutes"), 1),
                _f(c.get("inference_ms_per_image"), 1),
                _f(_value(c, "params_m"), 2),
                _f(c.get("peak_mb"), 0),
                paper or "-",
            ]
        )
    return _table(header, rows)


def _paper_iou(cell: dict[str, Any]) -> float | None:
    if "iou" in (cell.get("paper") or {}):
        return cell["paper"]["iou"]
    return TABLE1_IOU.get(PAPER_NAME.get(cell.get("method", ""), ""), {}).get(cell["dataset"])


def mvtec_table(results: dict[str, Any]) -> str:
    cells = results["cells"]
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    parts = []
    for v in _variants(cells):
        group = {c["dataset"]: c for c in cells if c["variant"] == v}
        header = ["category", "IoU defect-mean", "IoU set", "image AUROC", "pixel AUROC", "AUPRO", "F1-max"]
        header.append("paper IoU (ours - paper)")
        rows = []
        for d in datasets:
            c = group.get(d)
            if c is None:
                rows.append([d] + ["not run"] * (len(header) - 1))
                continue
            p = _paper_iou(c)
            rows.append(
                [d]
                + [
                    _f(c.get(k))
                    for k in ("iou_defect_mean", "iou", "image_auroc", "pixel_auroc", "aupro", "f1_max")
                ]
                + [f"{_f(p)}{_d(c.get('iou_defect_mean'), p)}" if p is not None else "-"]
            )
        done = [group[d] for d in datasets if d in group]
        means = {k: _mean([c.get(k) for c in done]) for k in ("iou_defect_mean", "iou", "image_auroc")}
        means |= {k: _mean([c.get(k) for c in done]) for k in ("pixel_auroc", "aupro", "f1_max")}
        paper_name = PAPER_NAME.get(done[0].get("method", ""), "") if done else ""
        paper_ious = [_paper_iou(c) for c in done]
        p_mean = _mean(paper_ious) if done else None
        row = [f"**mean of {len(done)}**"] + [
            _f(means[k]) for k in ("iou_defect_mean", "iou", "image_auroc", "pixel_auroc", "aupro", "f1_max")
        ]
        row.append(f"{_f(p_mean)}{_d(means['iou_defect_mean'], p_mean)}" if p_mean is not None else "-")
        rows.append(row)
        note = ""
        if paper_name in TABLE1_MEAN:
            iou15, auroc15 = TABLE1_MEAN[paper_name]
            note = (
                f"\n\nPaper, {paper_name} over all 15 categories: mean IoU {iou15:.2f}, mean image AUROC "
                f"{auroc15:.2f} (ours over {len(done)}: image AUROC {_f(means['image_auroc'])}"
                f"{_d(means['image_auroc'], auroc15)})."
            )
        parts.append(f"### {v}\n\n{_table(header, rows)}{note}")
    return "\n\n".join(parts)


def _family(dataset: str) -> str:
    return re.sub(r"[-_]?\d+$", "", dataset)


# the ablation switches (config.py): a cell that turns one off is not the paper's full model
ABLATION_SWITCHES = ("ienet.use_info=", "expert.enabled=", "expert.use_detail=", "expert.use_naive=")


def _full_model(cell: dict[str, Any]) -> bool:
    """UTAD as the paper's tables report it: no test-time variant, no ablation switch turned off."""
    overrides = (cell.get("spec") or {}).get("overrides", [])
    ablated = any(o.startswith(ABLATION_SWITCHES) and o.endswith("=false") for o in overrides)
    return not cell.get("test_set") and not ablated


def oneclass_table(results: dict[str, Any]) -> str:
    """Image AUROC per normal class and variant, the mean per dataset against the paper. Where the full model's
    cells hold ``code_knn_auroc`` (``utad.explain.code_analysis``), a column scores the same runs by each test
    image's distance to the nearest training image's IE-Net code (the paper's Fig. 8 analysis of the learned
    features, not its anomaly score)."""
    cells = results["cells"]
    variants = _variants(cells)
    by = {(c["dataset"], c["variant"]): c for c in cells}
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    columns = [(v, "image_auroc") for v in variants]
    columns += [
        (v, "code_knn_auroc")
        for v in variants
        if any(c["variant"] == v and _full_model(c) and c.get("code_knn_auroc") is not None for c in cells)
    ]
    rows = [[d] + [_f((by.get((d, v)) or {}).get(key)) for v, key in columns] for d in datasets]
    for fam in dict.fromkeys(_family(d) for d in datasets):
        members = [d for d in datasets if _family(d) == fam]
        row = [f"**{fam} mean of {len(members)}**"]
        for v, key in columns:
            vals = [(by.get((d, v)) or {}).get(key) for d in members]
            m = _mean(vals)
            method = (by.get((members[0], v)) or {}).get("method")
            paper = (by.get((members[0], v)) or {}).get("paper", {}).get(f"{fam}_auroc")
            if paper is None and method == "utad" and _full_model(by.get((members[0], v)) or {}):
                paper = TABLE2_UTAD.get(fam)
            row.append(_f(m) + (f" (paper {paper:.3f}{_d(m, paper)})" if paper is not None else ""))
        rows.append(row)
    header = [v if key == "image_auroc" else f"{v}: IE-Net code kNN" for v, key in columns]
    return _table(["normal class", *header], rows)


def _score_rules(results: dict[str, Any]) -> str:
    """The image-score rule of the table's cells (``image_score``), one phrase, or one per variant where they
    differ."""
    rules = {c["variant"]: c.get("image_score") or "an unrecorded rule" for c in results["cells"]}
    if len(set(rules.values())) <= 1:
        return "the " + next(iter(rules.values()), "maximum of the smoothed map") + " e"
    return "; ".join(f"{v}: the {r}" for v, r in rules.items())


def render(results: dict[str, Any]) -> str:
    """The results as Markdown: title, grid, the table in the grid's layout, the budget."""
    kind = results.get("table", "compare")
    body = {"compare": compare_table, "mvtec": mvtec_table, "oneclass": oneclass_table}[kind](results)
    head = f"## {results['title']}\n\nGrid `{results.get('grid_file', '')}`, {len(results['cells'])} cells finished."
    if results.get("notes"):
        head += f" {results['notes'].strip()}"
    note = (
        "IoU at alpha = 0.5 on the normalised map: *IoU set* pools intersection and union over every test pixel; "
        "*IoU defect-mean* is the mean of per-image IoUs over the defect images (the reading compared with the "
        "paper). Differences in brackets are ours minus the paper's."
    )
    if kind == "oneclass":
        note = (
            f"Image AUROC per normal class (the other nine classes anomalous), scored by {_score_rules(results)}. "
            "*IE-Net code kNN*: the same trained runs, each test image scored by the distance of its "
            "IE-Net code to the nearest training image's code (the paper's Fig. 8 analysis of the learned features; "
            "not the paper's anomaly score, shown to separate what IE-Net learned from what the map-based score "
            "makes of it). Differences in brackets are ours minus the paper's."
        )
    return f"{head}\n\n{body}\n\n{note}\n\nBudget:\n\n{budget(results['cells'])}\n"
