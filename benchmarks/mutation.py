"""Mutation score of the method's core: runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) and
writes the score, the counts per file and every surviving mutant with its diff to JSON.

mutmut copies ``src`` into ``mutants/``, changes one operator, constant, argument or return value at a time in
the files listed under ``only_mutate`` (losses, perceptual measurement, detector, metrics, the networks) and
runs the unit tests under ``pytest_add_cli_args_test_selection`` that cover the mutated function. A mutant is
*killed* when a test fails (or times out), *survived* when every test passes. Score = killed / (killed +
survived + no tests). Interrupted runs resume (mutmut keeps its results in ``mutants/``).

    make mutation            # = python benchmarks/mutation.py --run --json benchmarks/results/mutation.json
    python benchmarks/mutation.py --json benchmarks/results/mutation.json   # only collect the last results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from utad.io import write_json


def status(code: int | None) -> str:
    """mutmut's reading of a mutant's exit code: killed, survived, timeout, no tests, not checked, ..."""
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code[code]


def collect(root: Path = Path("mutants")) -> dict[str, dict[str, str]]:
    """{source file: {mutant name: status}} from mutmut's ``*.meta`` files."""
    out: dict[str, dict[str, str]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        source = str(meta.relative_to(root))[: -len(".meta")]
        out[source] = {k: status(v) for k, v in data.get("exit_code_by_key", {}).items()}
    return out


def diff(name: str, mutmut: str) -> str:
    """The changed lines of one mutant (``mutmut show``), without the file headers."""
    text = subprocess.run([mutmut, "show", name], capture_output=True, text=True).stdout
    keep = [ln for ln in text.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return "\n".join(keep)


def summarise(by_file: dict[str, dict[str, str]], seconds: float | None, mutmut: str) -> dict:
    per_file = {}
    survivors = []
    totals: Counter = Counter()
    for source, results in by_file.items():
        counts = Counter(results.values())
        totals.update(counts)
        per_file[source] = dict(counts)
        for name, st in sorted(results.items()):
            if st in ("survived", "no tests", "suspicious"):
                survivors.append({"mutant": name, "file": source, "status": st, "diff": diff(name, mutmut)})
    killed = totals["killed"] + totals["timeout"]
    tested = killed + totals["survived"] + totals["no tests"] + totals["suspicious"]
    return {
        "tool": "mutmut " + _version(),
        "score": killed / tested if tested else None,
        "killed": killed,
        "survived": totals["survived"],
        "no_tests": totals["no tests"],
        "suspicious": totals["suspicious"],
        "not_checked": totals["not checked"],
        "skipped": totals["skipped"],
        "run_seconds": seconds,
        "per_file": per_file,
        "survivors": survivors,
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mutmut")
    except Exception:  # pragma: no cover
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="run mutmut first (resumes an interrupted run)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/mutation.json"))
    ap.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    ap.add_argument("names", nargs="*", help="with --run: only these mutants (globs), e.g. 'utad.losses*'")
    args = ap.parse_args(argv)
    seconds = None
    if args.run:
        t0 = time.perf_counter()
        subprocess.run([args.mutmut, "run", *args.names], check=False)
        seconds = round(time.perf_counter() - t0, 1)
    by_file = collect()
    if not by_file:
        print("no mutmut results under mutants/: run with --run first", file=sys.stderr)
        return 2
    result = summarise(by_file, seconds, args.mutmut)
    write_json(args.json, result)
    score = result["score"]
    print(
        f"mutation score {score:.1%}: {result['killed']} killed, {result['survived']} survived, "
        f"{result['no_tests']} without tests, {result['not_checked']} not checked -> {args.json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
