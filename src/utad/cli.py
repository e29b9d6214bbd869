"""The ``utad`` command line: each subcommand parses its arguments, builds a config and calls one library function.

User errors (``UtadError``) print one line, ``utad: error: <file>: <problem>``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from utad import __version__
from utad.config import preset_names
from utad.errors import UtadError


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from utad.data.inspect import format_report, inspect_mvtec

    report = inspect_mvtec(args.path, args.category)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 1 if report["problems"] else 0


# every `utad train` option that `_config_from_args` turns into config (besides --set): what --resume ignores
_CONFIG_OPTIONS = (
    "data", "source", "category", "normal_class", "image_size", "no_masks", "skip_bad",
    "method", "preset", "seed", "epochs", "backbone", "vgg_weights", "random_backbone",
)  # fmt: skip


def _config_from_args(args: argparse.Namespace):
    from utad.config import load_config
    from utad.methods import DEFAULT_PRESET

    overrides = list(args.set or [])
    method = getattr(args, "method", None)
    if method:
        overrides.insert(0, f"method={method}")
    preset = args.preset or DEFAULT_PRESET.get(method or "utad", "cpu-fast")
    if getattr(args, "data", None):
        overrides.append(f"data.path={args.data}")
    for key in ("source", "category", "normal_class", "image_size"):
        value = getattr(args, key, None)
        if value is not None:
            overrides.append(f"data.{key}={value}")
    if getattr(args, "no_masks", False):
        overrides.append("data.masks=false")
    if getattr(args, "skip_bad", False):
        overrides.append("data.skip_bad=true")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "backbone", None):
        overrides.append(f"pm.backbone={args.backbone}")
    if getattr(args, "vgg_weights", None):
        overrides.append(f"pm.vgg_weights={args.vgg_weights}")
    if getattr(args, "random_backbone", False):
        overrides.append("pm.allow_random=true")
    if getattr(args, "epochs", None) is not None:
        overrides += [f"train.ie_epochs={args.epochs}", f"train.expert_epochs={args.epochs}"]
        overrides.append(f"ae.epochs={args.epochs}")  # the autoencoder baselines' epochs
    return load_config(preset, overrides)


def _train_and_report(args: argparse.Namespace, cfg=None) -> int:
    """Train ``args.out`` from ``cfg``, or continue it from its checkpoint (its saved config) when ``cfg`` is None."""
    from utad.train import is_rank_zero, train

    if cfg is None:
        path = train(None, args.out, resume=True, progress=not args.quiet)
    else:
        path = train(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    if is_rank_zero():
        print(f"trained: {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if not args.resume:
        return _train_and_report(args, _config_from_args(args))
    # the checkpoint's config is the run's; `utad branch` changes stage 2 on a finished IE-Net
    ignored = [f"--set {s}" for s in args.set or []] + [
        f"--{name.replace('_', '-')}"
        for name in _CONFIG_OPTIONS
        if getattr(args, name, None) not in (None, False)
    ]
    if ignored:
        print(
            f"utad: warning: --resume continues {args.out} with its saved config; ignored: "
            f"{', '.join(ignored)} (for other stage-2 settings: utad branch)",
            file=sys.stderr,
        )
    return _train_and_report(args)


def _cmd_branch(args: argparse.Namespace) -> int:
    from utad.branch import branch_stage2

    branch_stage2(args.run, args.out, list(args.set or []), keep_expert=args.keep_expert)
    if args.no_train:
        print(f"branched: {args.out} (train it with utad train --resume --out {args.out})")
        return 0
    return _train_and_report(args)


def _print_metrics(metrics: dict) -> None:
    keys = ("image_auroc", "pixel_auroc", "aupro", "iou", "f1_max")
    print("  ".join(f"{k} {metrics[k]:.4f}" for k in keys if metrics.get(k) is not None))
    f = metrics.get("fidelity") or {}
    if f.get("gain") is not None:
        print(
            f"fidelity on {f['n_images']} normal test images: phi(x, m) {f['phi_x_m']:.4f}, "
            f"phi(x, x^) {f['phi_x_xhat']:.4f}, gain {f['gain']:.2f}; "
            f"SSIM(x, x^) {f['ssim_x_xhat']:.3f} vs SSIM(x, m) {f['ssim_x_m']:.3f}"
        )
    b = metrics["backbone"]
    print(f"backbone: {b['name']} ({b['weights']})")
    if metrics.get("warning"):
        print(f"WARNING: {metrics['warning']}")


def _cmd_test(args: argparse.Namespace) -> int:
    from utad.runs import test_run

    metrics = test_run(
        args.run, args.out, args.set, progress=not args.quiet, report=not args.no_report, device=args.device
    )
    _print_metrics(metrics)
    print(f"wrote {(args.out or args.run)}/metrics.json" + ("" if args.no_report else " and report.html"))
    return 0


def _cmd_choose(args: argparse.Namespace) -> int:
    from utad.choose import choose_measurement, parse_candidates

    choice = choose_measurement(
        args.run,
        args.out,
        parse_candidates(args.candidate),
        progress=not args.quiet,
        device=args.device,
        strength=args.synthetic_strength,
        score_candidates={} if args.keep_score else None,
    )
    print(f"measurements on {choice['evaluated_on']}:")
    run_width = max(map(len, choice["runs"])) + 2  # "RUN: " padded so the columns line up
    for r in choice["candidates"]:
        mark = "*" if (r["run"], r["name"]) == (choice["chosen_run"], choice["chosen"]) else " "
        where = f"{r['run'] + ':':<{run_width}}" if len(choice["runs"]) > 1 else ""
        shown = (
            ("image AUROC", "image_auroc"),
            ("pixel AUROC", "pixel_auroc"),
            ("AUPRO", "aupro"),
            ("IoU", "iou"),
        )
        values = "  ".join(f"{label} {r[k]:.3f}" for label, k in shown if r.get(k) is not None)
        print(f"{mark} {where}{r['name']:<14} {values}  {' '.join(r['overrides']) or '(the run as trained)'}")
    if choice["score_candidates"]:
        print(f"image scores with {choice['chosen']}:")
        for r in choice["score_candidates"]:
            mark = "*" if r["name"] == choice["chosen_score"] else " "
            print(f"{mark} {r['name']:<14} image AUROC {r['image_auroc']:.3f}  {' '.join(r['overrides'])}")
    picked = choice["chosen"] if len(choice["runs"]) == 1 else f"{choice['chosen']} of {choice['chosen_run']}"
    if choice["chosen_score"]:
        picked += f" with {choice['chosen_score']}"
    print(f"chose {picked} ({choice['rule']}); wrote {args.out} (test it: utad test {args.out})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from utad.runs import test_run

    test_run(args.run, args.out, progress=not args.quiet, report=True)
    print(f"wrote {(args.out or args.run)}/report.html (self-contained; open it in a browser)")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from utad.runs import predict_images

    summary = predict_images(
        args.run,
        args.inputs,
        args.out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        explain=args.explain,
        workers=args.workers,
        device=args.device,
    )
    rows, skipped = summary["rows"], summary["skipped"]
    n_bad = sum(r["anomalous"] for r in rows)
    print(f"{len(rows)} images, {n_bad} anomalous; wrote {args.out}/scores.csv, maps/, masks/, overlays/")
    if skipped:
        print(f"skipped {len(skipped)} input(s) (listed in {args.out}/predict.json):")
        for s in skipped:
            print(f"  {s['path']}: {s['reason']}")
    return 1 if skipped and args.strict else 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from utad.runs import explain_images

    infos = explain_images(
        args.run, args.images, args.out, k=args.k, overwrite=args.overwrite, device=args.device
    )
    for info in infos:
        verdict = "ANOMALOUS" if info["anomalous"] else "normal"
        terms = ", ".join(f"{k} {100 * v:.0f}%" for k, v in info["term_share"].items())
        near = ", ".join(f"{Path(n['path']).name} ({n['distance']:.2f})" for n in info["nearest_normal"])
        print(f"{info['path']}: score {info['score']:.3f} {verdict}" + (f"; terms {terms}" if terms else ""))
        if near:
            print(f"  nearest normal: {near}")
    print(f"wrote {args.out}/<name>.png and .json per image")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from utad.export import export_onnx

    if args.format != "onnx":
        raise UtadError(f"unknown export format {args.format!r} (onnx)")
    path = export_onnx(args.run, args.out, overwrite=args.overwrite)
    print(f"exported {args.run} -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from utad.benchmark import run_grid

    out = args.out or str(Path("runs") / "bench" / Path(args.grid).stem)
    results = run_grid(args.grid, out, args.publish, args.only, isolate=not args.in_process)
    print(f"{len(results['cells'])} cells finished; wrote {out}/{results['grid']}.json and .md")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from utad.runs import demo

    metrics = demo(args.out, args.set, overwrite=args.overwrite, progress=not args.quiet)
    _print_metrics(metrics)
    print(f"wrote {args.out}/metrics.json, report.png, learning_curve.png in {metrics['wall_seconds']:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="utad",
        description="Unsupervised Two-stage Anomaly Detection: train on good images, find and outline defects.",
    )
    parser.add_argument("--version", action="version", version=f"utad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="inspect and check datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    insp = data_sub.add_parser(
        "inspect", help="count images and masks of an MVTec-layout folder and list every problem found"
    )
    insp.add_argument("path", help="MVTec AD category folder (train/good, test/<type>, ground_truth/<type>)")
    insp.add_argument("--category", help="category name when PATH is the dataset root")
    insp.add_argument("--json", action="store_true", help="print the report as JSON")
    insp.set_defaults(func=_cmd_data_inspect)

    tr = sub.add_parser("train", help="train IE-Net then Expert-Net on normal images into a run folder")
    tr.add_argument(
        "--data", help="data folder (MVTec category or root, folder of good images, IDX/CIFAR folder)"
    )
    tr.add_argument(
        "--source", help="demo | mvtec | folder | mnist | fashion-mnist | cifar10 (preset's default)"
    )
    tr.add_argument("--category", help="MVTec category when --data is the dataset root")
    tr.add_argument("--normal-class", type=int, help="one-class benchmarks: the normal class (0..9)")
    tr.add_argument("--image-size", type=int, help="resize images to this side")
    tr.add_argument(
        "--no-masks", action="store_true", help="the data has no masks (image-level metrics only)"
    )
    tr.add_argument(
        "--method",
        choices=("utad", "ae-l2", "ae-ssim", "feature-knn", "feature-gaussian"),
        help="detector: utad (default), the paper's autoencoder baselines ae-l2 / ae-ssim, or the "
        "pretrained-feature methods feature-knn (PatchCore-style) / feature-gaussian (PaDiM-style)",
    )
    tr.add_argument(
        "--preset",
        help=" | ".join(preset_names())
        + " | a YAML file (default: cpu-fast, or the preset named after --method)",
    )
    tr.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="config override, e.g. train.ie_epochs=50"
    )
    tr.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave unreadable images out (listed in the run's skipped.json) instead of stopping",
    )
    tr.add_argument("--epochs", type=int, help="epochs of both stages (shortcut for two --set overrides)")
    tr.add_argument("--seed", type=int, help="random seed (CPU runs repeat exactly)")
    tr.add_argument("--backbone", help="PM backbone: vgg19 | efficientnet-lite0 | auto")
    tr.add_argument("--vgg-weights", help="path to torchvision's vgg19-dcbb9e9d.pth")
    tr.add_argument("--random-backbone", action="store_true", help="allow random PM weights (outputs say so)")
    tr.add_argument(
        "--out", required=True, help="run folder (must be new or empty, unless --resume/--overwrite)"
    )
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_cmd_train)

    br = sub.add_parser(
        "branch",
        help="train a new Expert-Net (stage 2) on a finished run's IE-Net, with other stage-2 settings",
    )
    br.add_argument("run", help="run folder whose trained IE-Net is kept")
    br.add_argument("--out", required=True, help="new run folder (must be new or empty)")
    br.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="stage-2 override (expert.*, train.expert_*, train.lr_schedule, train.val_fidelity, pm.*, "
        "detect.*; and where it runs: train.threads, train.devices, train.precision, ...), "
        "e.g. expert.lambda_ssim=30",
    )
    br.add_argument(
        "--keep-expert",
        action="store_true",
        help="continue the source's Expert-Net for more epochs (--set train.expert_epochs=N, N more than it ran; "
        "constant schedule only) instead of training a fresh one",
    )
    br.add_argument("--no-train", action="store_true", help="only write the branch; train it with --resume")
    br.add_argument("--quiet", action="store_true", help="no progress bars")
    br.set_defaults(func=_cmd_branch)

    te = sub.add_parser("test", help="evaluate a run on its test split: metrics.json, report.png")
    te.add_argument("run", help="run folder written by utad train")
    te.add_argument("--out", help="where to write metrics.json and pictures (default: the run folder)")
    te.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="evaluate another measurement with the same networks, e.g. pm.terms=[x_xhat] or pm.distance=pixel "
        "(pm.* and detect.*, recalibrated on validation images; or data.evaluate_on=holdout: a one-class run "
        "on training images it did not use, or data.evaluate_on=synthetic: drawn defects on the validation "
        "images, to choose settings without the test split, data.synthetic_strength=S their opacity scale; "
        "needs --out)",
    )
    te.add_argument("--quiet", action="store_true", help="no progress bars")
    te.add_argument("--no-report", action="store_true", help="skip report.html")
    te.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    te.set_defaults(func=_cmd_test)

    ch = sub.add_parser(
        "choose",
        help="pick a run's measurement (PM layers and terms, detect.* score settings) on synthetic defects of "
        "its validation images (one-class runs: on held-out training images), "
        "into a new run folder (not the paper's protocol; the test split is not used)",
    )
    ch.add_argument(
        "run",
        nargs="+",
        help="run folder(s) written by utad train (method utad); several: trained on the same data with the "
        "same seed (e.g. IE-Net's two codes), the best run and measurement together",
    )
    ch.add_argument("--out", required=True, help="new run folder: the same networks, the chosen measurement")
    ch.add_argument(
        "--candidate",
        action="append",
        metavar="NAME:KEY=VALUE[;KEY=VALUE]",
        help="a measurement to compare with the run's own, e.g. 'deep:pm.layers=[conv3_4]' (repeatable; "
        "default: layers 2-3, layer 3, term x-m, term x-x^)",
    )
    ch.add_argument(
        "--synthetic-strength",
        type=float,
        default=1.0,
        metavar="S",
        help="opacity scale of the drawn defects, in (0, 1] (data.synthetic_strength; default 1; lower: "
        "subtler defects, for categories whose real defects are faint)",
    )
    ch.add_argument(
        "--keep-score",
        action="store_true",
        help="keep the run's image score (skip the second step, which tries the smoothed maximum at sigma 8 and "
        "16 and the mean of the top 1 %% with the chosen measurement)",
    )
    ch.add_argument("--quiet", action="store_true", help="no progress bars")
    ch.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ch.set_defaults(func=_cmd_choose)

    rp = sub.add_parser("report", help="evaluate a run and write report.html, one self-contained page")
    rp.add_argument("run", help="run folder written by utad train")
    rp.add_argument("--out", help="where to write it (default: the run folder)")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.set_defaults(func=_cmd_report)

    pr = sub.add_parser("predict", help="anomaly maps, masks, overlays and scores for new images")
    pr.add_argument(
        "run", help="run folder written by utad train, or a model exported with utad export (.onnx)"
    )
    pr.add_argument("inputs", nargs="+", help="image files or folders")
    pr.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    pr.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    pr.add_argument("--strict", action="store_true", help="exit 1 when any input was skipped as unreadable")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument(
        "--workers",
        type=int,
        default=1,
        help="image-decoding processes beside the model (0: none; default 1)",
    )
    pr.add_argument(
        "--explain",
        action="store_true",
        help="also write explain/<name>.png and .json per image (utad explain)",
    )
    pr.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    pr.set_defaults(func=_cmd_predict)

    xp = sub.add_parser(
        "explain",
        help="why: x, m, x^, m^, e with alpha, outline, the three PM terms and the nearest normal training images",
    )
    xp.add_argument("run", help="run folder written by utad train")
    xp.add_argument("images", nargs="+", help="image files or folders")
    xp.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    xp.add_argument(
        "--k", type=int, default=3, help="nearest anomaly-free training images to show (Fig. 8: 3)"
    )
    xp.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    xp.add_argument(
        "--device",
        default="auto",
        help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N",
    )
    xp.set_defaults(func=_cmd_explain)

    ex = sub.add_parser("export", help="export a trained run as one ONNX graph (needs utad[export])")
    ex.add_argument("run", help="run folder written by utad train")
    ex.add_argument("--format", default="onnx", help="onnx")
    ex.add_argument("--out", required=True, help="model file to write, e.g. model.onnx")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing file")
    ex.set_defaults(func=_cmd_export)

    be = sub.add_parser(
        "benchmark",
        help="run a grid of (dataset, variant) cells, resumable, and write the paper-style tables",
    )
    be.add_argument("grid", help="grid file (YAML), e.g. benchmarks/grids/methods-bottle.yaml")
    be.add_argument("--out", help="folder for the cells' runs and results (default: runs/bench/<grid name>)")
    be.add_argument("--publish", help="also write <name>.json and <name>.md here, e.g. benchmarks/results")
    be.add_argument(
        "--only",
        help="run only the cell with this dataset/variant id, or else the cells whose id contains this text",
    )
    be.add_argument(
        "--in-process",
        action="store_true",
        help="run the cells in this process (faster start; no per-cell peak memory, a crash stops the grid)",
    )
    be.set_defaults(func=_cmd_benchmark)

    de = sub.add_parser("demo", help="train and test on the built-in demo data (cpu-fast preset)")
    de.add_argument("--out", default="runs/demo", help="run folder")
    de.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    de.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out, replacing its files")
    de.add_argument("--quiet", action="store_true", help="no progress bars")
    de.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0 if args.command is None else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UtadError as exc:
        print(f"utad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("utad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
