"""``report.html``: one self-contained page per tested run (images embedded as data URIs; opens from file://
with no network): the run's config and backbone, the metrics, training curves, ROC and PRO curves, the score
histograms of normal and anomalous test images with the threshold, per-defect-type metrics, a gallery of the
worst false positives and false negatives with their panels, the intermediate results and the t-SNE.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from utad.detector import Prediction
from utad.io import write_text
from utad.metrics import image_auroc, iou, pro_curve


def _fig_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def per_defect_type(
    preds: list[Prediction], kinds: list[str], masks: list[np.ndarray | None] | None, alpha: float
) -> list[dict[str, Any]]:
    """Per defect type: count, mean score, share flagged (score > alpha), image AUROC against the good images
    and the mean per-image IoU at alpha (when masks exist)."""
    scores = np.array([p.score for p in preds])
    good = np.array([k == "good" for k in kinds])
    rows = []
    for kind in dict.fromkeys(kinds):
        sel = np.array([k == kind for k in kinds])
        row: dict[str, Any] = {
            "type": kind,
            "n": int(sel.sum()),
            "mean_score": float(scores[sel].mean()),
            "flagged": float((scores[sel] > alpha).mean()),
        }
        if kind != "good" and good.any():
            pair = sel | good
            row["image_auroc_vs_good"] = image_auroc(scores[pair], sel[pair].astype(int))
        if masks is not None and kind != "good":
            idx = [i for i in np.flatnonzero(sel) if masks[i] is not None and masks[i].any()]
            if idx:
                maps = np.stack([preds[i].anomaly_map for i in idx])
                row["iou_defect_mean"] = iou(maps, np.stack([masks[i] for i in idx]), alpha, pooling="defect")
        rows.append(row)
    return rows


def _curves(scores, labels, maps, masks) -> str:
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(
        1, 3 if maps is not None else 1, figsize=(12 if maps is not None else 4, 3.4), squeeze=False
    )
    fpr, tpr, _ = roc_curve(labels, scores)
    axes[0, 0].plot(fpr, tpr)
    axes[0, 0].plot([0, 1], [0, 1], "k:", lw=0.5)
    axes[0, 0].set_title(f"image ROC (AUROC {image_auroc(scores, labels):.3f})", fontsize=9)
    axes[0, 0].set_xlabel("false positive rate")
    axes[0, 0].set_ylabel("true positive rate")
    if maps is not None:
        flat, gt = maps.ravel(), masks.ravel()
        keep = np.random.default_rng(0).permutation(flat.size)[:200_000]  # enough points for the curve
        pf, pt, _ = roc_curve(gt[keep], flat[keep])
        axes[0, 1].plot(pf, pt)
        axes[0, 1].plot([0, 1], [0, 1], "k:", lw=0.5)
        axes[0, 1].set_title("pixel ROC (model resolution)", fontsize=9)
        axes[0, 1].set_xlabel("false positive rate")
        fpr_p, pro = pro_curve(maps, masks)
        lim = fpr_p <= 0.3
        axes[0, 2].plot(fpr_p[lim], pro[lim])
        axes[0, 2].set_title("PRO curve up to FPR 0.3", fontsize=9)
        axes[0, 2].set_xlabel("false positive rate")
        axes[0, 2].set_ylabel("per-region overlap")
    fig.tight_layout()
    return _fig_uri(fig)


def _histogram(scores, labels, alpha) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.linspace(min(scores.min(), 0), max(scores.max(), alpha * 1.2), 40)
    ax.hist(
        scores[labels == 0], bins=bins, alpha=0.6, label=f"normal ({(labels == 0).sum()})", color="tab:green"
    )
    ax.hist(
        scores[labels == 1], bins=bins, alpha=0.6, label=f"anomalous ({(labels == 1).sum()})", color="tab:red"
    )
    ax.axvline(alpha, color="k", ls="--", label=f"alpha = {alpha}")
    ax.set_xlabel("image score")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _fig_uri(fig)


def _gallery(preds, idx, gts, title) -> str | None:
    """The report's panel (``utad.report.save_panel``) for the chosen images, as a data URI."""
    import tempfile

    from utad.report import save_panel

    if not idx:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "panel.png"
        save_panel([preds[i] for i in idx], path, [gts[i] for i in idx] if gts else None, title)
        return _file_uri(path)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def write_html_report(
    out: str | os.PathLike,
    metrics: dict[str, Any],
    preds: list[Prediction],
    labels: np.ndarray,
    kinds: list[str],
    gts: list[np.ndarray | None] | None,
    config_yaml: str,
    n_gallery: int = 4,
) -> Path:
    """Write ``<out>/report.html`` from a finished ``utad test`` (pictures it wrote are embedded too)."""
    out = Path(out)
    alpha = metrics["alpha"]
    scores = np.array([p.score for p in preds])
    masks = None
    if gts is not None and all(g is not None for g in gts):
        masks = np.stack(gts)
    maps = np.stack([p.anomaly_map for p in preds]) if masks is not None else None
    normal, anomalous = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    worst_fp = [int(i) for i in normal[np.argsort(-scores[normal])][:n_gallery]]
    worst_fn = [int(i) for i in anomalous[np.argsort(scores[anomalous])][:n_gallery]]
    keys = ["image_auroc", "pixel_auroc", "aupro", "iou", "iou_defect_mean", "f1_max"]
    rows = [[k, _fmt(metrics.get(k))] for k in keys]
    fid = metrics.get("fidelity") or {}
    if fid.get("gain") is not None:
        rows.append(["fidelity gain phi(x,m)/phi(x,x^)", _fmt(fid["gain"])])
    if fid.get("detail_swap") is not None:
        swap = (
            f"{fid['detail_swap']:.4f} (|x^ - m| {fid['l1_xhat_m']:.4f}; near 0: x^ ignores the detail code)"
        )
        rows.append(["x^ moved by another image's detail code", swap])
    defect = metrics.get("defect_fidelity") or {}
    if defect.get("gain") is not None:
        rows.append(["the same on defect pixels (near 1: x^ keeps defects out)", _fmt(defect["gain"])])
    if (metrics.get("code_analysis") or {}).get("code_knn_auroc") is not None:
        rows.append(["IE-Net nearest-training-code AUROC", _fmt(metrics["code_analysis"]["code_knn_auroc"])])
    types = metrics.get("per_defect_type") or []
    type_rows = [
        [
            t["type"],
            t["n"],
            _fmt(t["mean_score"]),
            f"{100 * t['flagged']:.0f}%",
            _fmt(t.get("image_auroc_vs_good")),
            _fmt(t.get("iou_defect_mean")),
        ]
        for t in types
    ]
    b = metrics["backbone"]
    sections = [
        f"<h1>utad report: {html.escape(metrics.get('dataset', ''))} ({html.escape(metrics.get('method', 'utad'))})</h1>",
        f"<p>Backbone <b>{html.escape(b['name'])}</b> ({html.escape(b['weights'])}); alpha {alpha}; "
        f"{metrics['n_test']} test images, {metrics['n_anomalous']} anomalous; pixel metrics at "
        f"{html.escape(str(metrics.get('eval_resolution', 'n/a')))}.</p>",
    ]
    if metrics.get("warning"):
        sections.append(f"<p class='warn'>WARNING: {html.escape(metrics['warning'])}</p>")
    sections.append("<h2>Metrics</h2>" + _table(rows, ["metric", "value"]))
    if type_rows:
        sections.append(
            "<h2>Per defect type</h2>"
            + _table(
                type_rows,
                [
                    "type",
                    "images",
                    "mean score",
                    "flagged (score > alpha)",
                    "image AUROC vs good",
                    "IoU defect-mean",
                ],
            )
        )
    sections.append(
        f"<h2>Curves</h2><img alt='ROC and PRO curves' src='{_curves(scores, labels, maps, masks)}'>"
    )
    sections.append(f"<h2>Scores</h2><img alt='score histogram' src='{_histogram(scores, labels, alpha)}'>")
    for name, title in (
        ("learning_curve.png", "Training"),
        ("report.png", "Intermediate results"),
        ("fidelity.png", "Fidelity"),
        ("tsne.png", "IE-Net codes (t-SNE)"),
    ):
        uri = _file_uri(out / name)
        if uri:
            sections.append(f"<h2>{title}</h2><img alt='{name}' src='{uri}'>")
    for idx, title in (
        (worst_fp, "Worst false positives (normal images, highest scores)"),
        (worst_fn, "Worst false negatives (anomalous images, lowest scores)"),
    ):
        uri = _gallery(preds, idx, gts, title)
        if uri:
            sections.append(f"<h2>{title}</h2><img alt='{title}' src='{uri}'>")
    sections.append(f"<h2>Config</h2><pre>{html.escape(config_yaml)}</pre>")
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>utad report</title><style>"
        "body{font-family:sans-serif;max-width:1300px;margin:1em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "img{max-width:100%}.warn{color:#b00;font-weight:bold}pre{background:#f5f5f5;padding:.5em}"
        "</style></head><body>" + "\n".join(sections) + "</body></html>"
    )
    return write_text(out / "report.html", page)
