"""``utad benchmark GRID``: a resumable grid of (dataset, variant) cells, one run folder per cell, one table.

A grid file (YAML, examples in ``benchmarks/grids/``)::

    name: methods-bottle                 # names the published results files
    title: All methods on MVTec AD bottle
    table: compare                       # compare | mvtec | oneclass (utad.tables)
    set: [seed=0]                        # overrides for every cell
    datasets:                            # rows
      - name: bottle
        set: [data.source=mvtec, data.path=../shared/data/mvtec_ad/bottle]
    variants:                            # columns / methods
      - name: feature-knn
        preset: feature-knn
        set: [...]
        paper: {iou: 0.22}               # optional published numbers shown side by side
      - name: utad-pixel                 # a test-time variant: another variant's trained networks,
        reuse: utad                      # evaluated with other pm.* / detect.* settings (Table 3)
        test_set: [pm.distance=pixel, "pm.terms=[x_xhat]"]

Every cell (dataset x variant) trains and tests in its own subprocesses (``utad train``, ``utad test``), so a
crash stays in its cell and each cell's peak memory is measured (``os.wait4``). Relative paths in ``set`` are
taken from the directory the command runs in (the repository root for the shipped grids).

Resuming: a cell whose ``cell.json`` says ``done`` with the same settings is never run again; an interrupted
cell continues from its checkpoint (``utad train --resume``) or, without one, restarts in its own folder. A
finished cell whose settings changed (the config it trained with against what the grid resolves to now, or its
test-time settings) is refused (pick another ``--out``), never silently replaced. After
every cell ``<grid name>.json`` and ``<grid name>.md`` are rewritten atomically in ``--out`` (and ``--publish``);
cells published there before but not run in this ``--out`` (a fresh clone) keep their published record until
they are run again, unless their settings changed since.

Grids may share an ``--out`` folder: a cell with the same dataset, variant and settings is then trained once
and reused by every grid that names it (the shipped MVTec grids share ``runs/bench/mvtec``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from utad.checkpoint import load_checkpoint
from utad.config import dump_yaml, from_dict, load_config, to_dict
from utad.errors import ConfigError, UtadError
from utad.io import write_json, write_text

log = logging.getLogger("utad")
KEYS = ("image_auroc", "pixel_auroc", "aupro", "iou", "iou_defect_mean", "f1_max")


@dataclass
class Cell:
    dataset: str
    variant: str
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)
    reuse: str | None = None  # variant whose trained run this cell evaluates with ``test_set``
    test_set: list[str] = field(default_factory=list)
    paper: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.variant}"

    def spec(self) -> dict[str, Any]:
        """What decides the cell's result (a finished cell with another spec is not reused)."""
        return {k: v for k, v in asdict(self).items() if k != "paper"}


@dataclass
class Grid:
    name: str
    title: str
    table: str
    cells: list[Cell]
    notes: str = ""
    path: str = ""


def _list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of 'key=value' strings")
    return list(value)


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and check a grid file; every cell's config is resolved here, so a typo fails before any training."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: grid file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with datasets and variants")
    unknown = set(raw) - {"name", "title", "table", "set", "datasets", "variants", "notes"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    from utad.tables import TABLES

    table = raw.get("table", "compare")
    if table not in TABLES:
        raise ConfigError(f"{path}: table must be one of {', '.join(TABLES)}, got {table!r}")
    common = _list(raw.get("set"), f"{path}: set")
    datasets, variants = raw.get("datasets") or [], raw.get("variants") or []
    if not datasets or not variants:
        raise ConfigError(f"{path}: needs at least one entry under datasets and under variants")
    names = [v.get("name") for v in variants]
    cells = []
    for d in datasets:
        for v in variants:
            where = f"{path}: {d.get('name')}/{v.get('name')}"
            if not d.get("name") or not v.get("name"):
                raise ConfigError(f"{where}: every dataset and variant needs a name")
            if v.get("reuse") and v["reuse"] not in names:
                raise ConfigError(f"{where}: reuse {v['reuse']!r} is not a variant of this grid")
            base = next((b for b in variants if b["name"] == v.get("reuse")), v)
            cell = Cell(
                dataset=str(d["name"]),
                variant=str(v["name"]),
                preset=base.get("preset"),
                overrides=common + _list(d.get("set"), where) + _list(base.get("set"), where),
                reuse=v.get("reuse"),
                test_set=_list(v.get("test_set"), where),
                paper=dict(v.get("paper") or {}) | dict((d.get("paper") or {}).get(v["name"], {})),
            )
            resolve(cell)  # fail early on a bad key or value
            cells.append(cell)
    name = str(raw.get("name") or path.stem)
    return Grid(name, str(raw.get("title") or name), table, cells, str(raw.get("notes") or ""), str(path))


def resolve(cell: Cell):
    return load_config(cell.preset, cell.overrides)


def _trained_config(cell: Cell, out: Path) -> dict[str, Any] | None:
    """The config the cell's run (or, for a test-time cell, the run it reuses) was trained with; None if none."""
    config = out / cell.dataset / (cell.reuse or cell.variant) / "run" / "config.yaml"
    return yaml.safe_load(config.read_text(encoding="utf-8")) if config.is_file() else None


def changed_settings(cell: Cell, out: Path) -> list[str]:
    """The config keys whose value in the cell's trained run (``run/config.yaml``, fields added to utad since
    filled with their defaults) differs from what the grid resolves to now: a preset edited after the cell
    finished changes no ``spec``, only this. A test-time cell is checked against the run it reuses."""
    trained = _trained_config(cell, out)
    return [] if trained is None else config_changes(trained, cell, str(out / cell.id))


def settings_changed(spec: Any, cell: Cell, trained: dict[str, Any] | None) -> list[str]:
    """What differs between a finished cell (its recorded ``spec`` and, when known, the config it was trained
    with) and what ``cell`` asks for now; [] when nothing. With the trained config, what counts is the config
    the grid resolves to, however it is spelled: a grid may spell out a value its preset gave, to keep its
    finished cells when the preset changes. Without it, the recorded preset and overrides must be the grid's."""
    now = cell.spec()
    if not isinstance(spec, dict):
        return ["spec"]
    diff = [k for k in ("dataset", "variant", "reuse", "test_set") if spec.get(k) != now[k]]
    if trained is not None:
        return diff + config_changes(trained, cell, cell.id)
    return diff + [k for k in ("preset", "overrides") if spec.get(k) != now[k]]


def config_changes(trained: dict[str, Any], cell: Cell, where: str) -> list[str]:
    """The config keys whose value in ``trained`` (a cell's training config; fields added to utad since are
    filled with their defaults) differs from what ``cell`` resolves to now."""
    old = to_dict(from_dict(trained, where))
    new = to_dict(resolve(cell))

    def walk(a: dict, b: dict, prefix: str = "") -> list[str]:
        keys = []
        for k in sorted(set(a) | set(b)):
            if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
                keys += walk(a[k], b[k], f"{prefix}{k}.")
            elif a.get(k) != b.get(k):
                keys.append(f"{prefix}{k}")
        return keys

    return walk(old, new)


def _run(
    argv: list[str], log_file: Path, isolate: bool = True
) -> tuple[int, float, float | None, float | None]:
    """Run ``utad <argv>`` with its output appended to ``log_file``: (exit status, seconds, peak MB, CPU seconds).

    ``isolate``: in a subprocess, whose peak resident memory and CPU time (user + system) are measured
    (``os.wait4``); else in this process (no interpreter start, no per-cell memory or CPU figure: None)."""
    start = time.perf_counter()
    with open(log_file, "a", encoding="utf-8") as f:
        f.write(f"$ utad {' '.join(argv)}\n")
        f.flush()
        if not isolate:
            import contextlib

            from utad.cli import main

            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                code = main(argv)
            return code, time.perf_counter() - start, None, None
        proc = subprocess.Popen([sys.executable, "-m", "utad.cli", *argv], stdout=f, stderr=subprocess.STDOUT)
        # stopped with Ctrl-C or SIGTERM (kill, a job scheduler): the cell's process goes with the runner, not
        # on training unseen (a restarted runner would otherwise meet it in the same run folder)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds, cpu = time.perf_counter() - start, usage.ru_utime + usage.ru_stime
    return proc.returncode, seconds, usage.ru_maxrss / 1024, cpu  # ru_maxrss: kilobytes on Linux


def _reason(log_file: Path) -> str:
    """The last ``utad: error:`` line a failed command wrote to the cell's log, as ``: <message>`` ('' if none)."""
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]
    except OSError:
        return ""
    errors = [line.split("utad: error:", 1)[1].strip() for line in lines if "utad: error:" in line]
    return f": {errors[-1]}" if errors else ""


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _default_threads() -> int:
    """The intra-op threads a training started from here gets when its config leaves them to torch."""
    import torch

    return torch.get_num_threads()


def run_cell(cell: Cell, out: Path, isolate: bool = True) -> dict[str, Any]:
    """Train (or resume) and test one cell in ``out/<dataset>/<variant>``; returns its record."""
    cdir = out / cell.dataset / cell.variant
    cdir.mkdir(parents=True, exist_ok=True)
    logf = cdir / "log.txt"
    record: dict[str, Any] = {"id": cell.id, "dataset": cell.dataset, "variant": cell.variant}
    record["spec"] = cell.spec()
    peak, train_s, train_cpu = 0.0, 0.0, None
    if cell.reuse:
        run = out / cell.dataset / cell.reuse / "run"
        if not (run / "metrics.json").is_file():
            raise UtadError(
                f"{cell.id}: reuses {cell.reuse}, which has not finished (list it first in the grid)"
            )
        cmd = ["test", str(run), "--out", str(cdir), "--quiet"]
        for item in cell.test_set:
            cmd += ["--set", item]
        metrics_path = cdir / "metrics.json"
    else:
        run = cdir / "run"
        cfg = resolve(cell)
        write_text(cdir / "cell-config.yaml", dump_yaml(cfg))
        state = None
        if (run / "checkpoint.pt").is_file():
            ckpt = load_checkpoint(run)
            if to_dict(from_dict(ckpt["config"])) != to_dict(cfg):
                raise UtadError(
                    f"{run}: the run there was trained with other settings than cell {cell.id} asks for; use "
                    "another --out (runs are never replaced)"
                )
            state = ckpt["stage"]
        if state != "done":
            if state is None and run.exists():
                shutil.rmtree(run)  # the runner's own folder, interrupted before its first checkpoint
            args = ["--resume"] if state is not None else ["--preset", str(cdir / "cell-config.yaml")]
            code, train_s, mb, train_cpu = _run(["train", *args, "--out", str(run), "--quiet"], logf, isolate)
            peak = max(peak, mb or 0.0)
            if code != 0:
                raise UtadError(f"{cell.id}: training failed (exit {code}){_reason(logf)}; see {logf}")
        cmd = ["test", str(run), "--quiet"]
        metrics_path = run / "metrics.json"
    code, test_s, mb, _ = _run(cmd, logf, isolate)
    peak = max(peak, mb or 0.0)
    if code != 0:
        raise UtadError(f"{cell.id}: testing failed (exit {code}){_reason(logf)}; see {logf}")
    m = json.loads(metrics_path.read_text())
    cfg = m["config"]
    record.update({k: m.get(k) for k in KEYS})
    record.update(
        {
            "method": m.get("method", cfg.get("method", "utad")),
            "preset": cell.preset,
            "test_set": cell.test_set,
            "image_size": cfg["data"]["image_size"],
            "epochs": m.get("epochs"),
            "train_minutes": (m.get("train_seconds") or 0.0) / 60,
            "wall_minutes_this_run": (train_s + test_s) / 60,
            "inference_ms_per_image": m.get("inference_ms_per_image"),
            "parameters": m.get("parameters"),
            "peak_mb": round(peak, 1) if peak else None,
            # cores the training kept busy on average in this run (CPU time / wall time) and the threads it
            # had: well below them means the cell shared the cores, so its minutes overstate the cost
            "train_cores_used": round(train_cpu / train_s, 2) if train_cpu and train_s > 1 else None,
            "train_threads": cfg["train"].get("threads") or _default_threads(),
            "backbone": m["backbone"]["name"],
            "backbone_pretrained": m["backbone"]["pretrained"],
            "fidelity_gain": (m.get("fidelity") or {}).get("gain"),
            "code_knn_auroc": _code_knn_auroc(m),
            "image_score": image_score_rule(cfg),
            "n_test": m.get("n_test"),
            "paper": cell.paper,
            "run": str(run.relative_to(out)),  # inside --out
            # what the networks were trained with: lets a later runner without this run folder (a fresh
            # clone) keep the published record only while the grid still resolves to these settings
            "trained_config": to_dict(resolve(cell)),
            "status": "done",
        }
    )
    write_json(cdir / "cell.json", record)
    return record


def _code_knn_auroc(metrics: dict[str, Any]) -> float | None:
    """The IE-Net code kNN AUROC of a test's metrics (None for methods without IE-Net)."""
    return (metrics.get("code_analysis") or {}).get("code_knn_auroc")


def image_score_rule(config: dict[str, Any]) -> str:
    """How a run's config turns the anomaly map into the image score, in words for the tables."""
    detect = config.get("detect") or {}
    rule = detect.get("score", "max")
    if rule == "topk":
        return f"mean of the top {100 * detect.get('top_k', 0.01):g} % of the smoothed map"
    return {"mean": "mean of the smoothed map"}.get(rule, "maximum of the smoothed map")


def _backfill(out: Path, cell: Cell, rec: dict[str, Any]) -> None:
    """Add what cells record since they were introduced (``code_knn_auroc``, ``image_score``) to a cell that
    finished before, from the metrics.json its test wrote (its own folder for a cell that reuses another's
    networks, else its run)."""
    missing = [k for k in ("code_knn_auroc", "image_score") if k not in rec]
    for metrics in (
        out / cell.dataset / cell.variant / "metrics.json",
        out / rec.get("run", "-") / "metrics.json",
    ):
        if missing and metrics.is_file():
            m = json.loads(metrics.read_text())
            rec.setdefault("code_knn_auroc", _code_knn_auroc(m))
            rec.setdefault("image_score", image_score_rule(m.get("config") or {}))
            return


def _finished_cells(
    grid: Grid, out: Path, wanted, known: frozenset[str] = frozenset()
) -> tuple[dict[str, dict], list[Cell]]:
    """The records of the grid's finished cells in ``out`` and the cells ``wanted`` selects that are still to run.
    A finished cell whose settings changed since is an error when selected, else left out of the tables. Cells
    whose id is in ``known`` (records already read) are not read or checked again."""
    records: dict[str, dict] = {}
    todo = []
    for c in grid.cells:
        if c.id in known:
            continue
        selected = wanted(c)
        done = out / c.dataset / c.variant / "cell.json"
        if done.is_file():
            rec = json.loads(done.read_text())
            if rec.get("status") == "done":
                changed = settings_changed(rec.get("spec"), c, _trained_config(c, out))
                if changed and not selected:
                    continue  # stale and not asked for: left out of the tables, never replaced
                if changed:
                    raise UtadError(
                        f"{done}: this cell finished with other settings ({', '.join(changed)}) than {grid.path} "
                        "now gives; use another --out (finished cells are never replaced)"
                    )
                rec["paper"] = c.paper  # the published numbers may be added after the run
                _backfill(out, c, rec)
                records[c.id] = rec
                continue
        if selected:
            todo.append(c)
    return records, todo


def _published_cells(grid: Grid, publish: Path | None, echo) -> dict[str, dict]:
    """The records of ``publish/<grid name>.json`` that still hold for the grid: same cell settings and, where
    the record says what it trained with, no preset edited since. They stand in the tables for cells this
    ``--out`` has not run (a fresh clone, a lost run folder) until it runs them, so such a run never shrinks
    the published tables; they never count as finished (reproducing a published table runs every cell)."""
    path = None if publish is None else publish / f"{grid.name}.json"
    if path is None or not path.is_file():
        return {}
    try:
        published = {r["id"]: r for r in json.loads(path.read_text())["cells"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise UtadError(f"{path}: not a results file of utad benchmark ({exc})") from None
    kept, stale = {}, []
    for c in grid.cells:
        rec = published.get(c.id)
        if rec is None or rec.get("status") != "done":
            continue
        if settings_changed(rec.get("spec"), c, rec.get("trained_config")):
            stale.append(c.id)
            continue
        kept[c.id] = {**rec, "paper": c.paper}
    if stale:
        echo(
            f"{path}: {len(stale)} published cell(s) have other settings now and leave the tables: {', '.join(stale)}"
        )
    return kept


def run_grid(
    grid_path: str | os.PathLike,
    out: str | os.PathLike,
    publish: str | os.PathLike | None = None,
    only: str | None = None,
    echo=print,
    isolate: bool = True,
) -> dict[str, Any]:
    """Run every cell of the grid not finished yet (with ``only``: the cell whose id it is, else those whose
    id contains it, so ``mnist-1/utad`` never picks ``fashion-mnist-1/utad``); returns the
    results (also ``out/<grid name>.json``). The results list every finished cell of the grid, also those
    ``only`` leaves out, and the still valid published ones this ``out`` has not run (``_published_cells``), so
    a partial run never shrinks the published tables."""
    from utad.tables import render

    grid = load_grid(grid_path)
    out = Path(out)
    exact = only in {c.id for c in grid.cells}

    def wanted(cell: Cell) -> bool:
        return only is None or (cell.id == only if exact else only in cell.id)

    cells = [c for c in grid.cells if wanted(c)]
    records, todo = _finished_cells(grid, out, wanted)
    published = _published_cells(grid, None if publish is None else Path(publish), echo)
    echo(f"{grid.name}: {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run -> {out}")
    start, times = time.perf_counter(), []

    def publish_results() -> dict[str, Any]:
        # cells another runner of this grid finished meanwhile (grid shards run in parallel) stay in the tables
        records.update(_finished_cells(grid, out, lambda c: False, frozenset(records))[0])
        results = {
            "grid": grid.name,
            "title": grid.title,
            "table": grid.table,
            "grid_file": grid.path,
            "notes": grid.notes,
            "cells": [
                records.get(c.id, published.get(c.id)) for c in grid.cells if c.id in records | published
            ],
        }
        for folder in [out] + ([Path(publish)] if publish is not None else []):
            write_json(folder / f"{grid.name}.json", results)
            write_text(folder / f"{grid.name}.md", render(results))
        return results

    for i, c in enumerate(todo, 1):
        t0 = time.perf_counter()
        records[c.id] = run_cell(c, out, isolate)
        times.append(time.perf_counter() - t0)
        left = (len(todo) - i) * sum(times) / len(times)
        r = records[c.id]
        echo(
            f"[{i}/{len(todo)}] {c.id}: image AUROC {_f(r['image_auroc'])}, pixel AUROC {_f(r['pixel_auroc'])}, "
            f"IoU {_f(r['iou'])} in {times[-1] / 60:.1f} min; elapsed {(time.perf_counter() - start) / 60:.1f} "
            f"min, about {left / 60:.0f} min left"
        )
        publish_results()
    return publish_results()


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
