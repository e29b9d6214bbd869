#!/usr/bin/env bash
# A maintainer's background sweep: run the named cells of a grid one after another with `utad benchmark`,
# publishing to benchmarks/results and committing the published tables after each finished cell, so a sweep
# longer than a working session survives interruption (rerun the same line: finished cells are skipped,
# interrupted ones resume from their checkpoint).
#
#   nohup benchmarks/sweep.sh GRID OUT CELL [CELL ...] >> runs/bench/sweep.log 2>&1 &
#   e.g. benchmarks/sweep.sh benchmarks/grids/table2-oneclass.yaml runs/bench/oneclass mnist-2/utad mnist-3/utad
#
# Two sweeps may run side by side (one intra-op thread each: UTAD_THREADS, default 1); their commits are
# serialised with a lock. `touch OUT/PAUSE` makes a sweep wait before its next cell; remove it to go on.
set -uo pipefail
cd "$(dirname "$0")/.."
grid=$1 out=$2
shift 2
export OMP_NUM_THREADS=${UTAD_THREADS:-1}
utad=${UTAD:-.venv/bin/utad}
name=$(sed -n 's/^name: *//p' "$grid")
mkdir -p "$out"
for cell in "$@"; do
  while [ -e "$out/PAUSE" ]; do sleep 60; done
  echo "$(date -Is) start $cell"
  if "$utad" benchmark "$grid" --out "$out" --publish benchmarks/results --only "$cell"; then
    files=("benchmarks/results/$name.json" "benchmarks/results/$name.md")
    msg="Results: $name cell $cell (utad benchmark $grid --out $out --publish benchmarks/results)"
    # add first: a grid's first publication creates the files
    flock /tmp/utad-sweep-git.lock sh -c 'git add -- "$@" && git commit -q -m "$0" -- "$@"' "$msg" "${files[@]}" \
      || echo "$(date -Is) commit failed or nothing new for $cell"
  else
    echo "$(date -Is) FAILED $cell"
  fi
done
echo "$(date -Is) sweep done: $*"
