"""The inception block's 3x3 pooling without autograd: ``nn.MaxPool2d(3, 1, 1)`` against ``SameMaxPool3``.

Both give the identical tensor (checked here); ms per call, best of five, at the feature-map sizes IE-Net sees at
64 and 128 px (batch 32), one thread unless ``--threads``; writes JSON:

    python benchmarks/bench_pool.py --json benchmarks/results/pool-speed.json

``--pipeline``: the whole eager pipeline instead (``benchmarks/infer_speed.py``'s ``cpu-fast`` detector, ms per
image, median of three), with the inception blocks' pooling as ``nn.MaxPool2d`` and as ``SameMaxPool3``,
alternated twice:

    python benchmarks/bench_pool.py --pipeline --threads 2 --json benchmarks/results/pool-speed-pipeline.json
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from infer_speed import detector, measure  # benchmarks/ is on sys.path when this file runs as a script
from torch import nn

from utad.io import write_json
from utad.nets.blocks import SameMaxPool3

SHAPES = [(32, 3, 64, 64), (32, 64, 64, 64), (32, 128, 32, 32), (32, 256, 16, 16), (32, 64, 128, 128)]


def best_ms(fn, x: torch.Tensor, repeats: int = 5) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def pipeline_rows() -> list[dict]:
    """Eager ms per image of the whole detector with either pooling, alternated: A, B, A, B."""
    fast = SameMaxPool3.forward

    def operator(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, stride=1, padding=1)

    rows = []
    for size, batch in ((64, 8), (128, 8), (256, 1), (256, 8)):
        det, x = detector(size), torch.rand(batch, 3, size, size)
        times: dict[str, list[float]] = {"maxpool2d_ms": [], "same_max_pool3_ms": []}
        try:
            for _ in range(2):
                for key, forward in (("maxpool2d_ms", operator), ("same_max_pool3_ms", fast)):
                    SameMaxPool3.forward = forward
                    times[key].append(measure(lambda t, d=det: torch.no_grad()(d)(t), x, 3))
        finally:
            SameMaxPool3.forward = fast
        rows.append({"size": size, "batch": batch, **times})
        print(rows[-1])
    return rows


def operator_rows() -> list[dict]:
    """ms per call of the pooling alone, both ways, at IE-Net's feature-map sizes; and whether they agree."""
    torch.manual_seed(0)
    pool, fast = nn.MaxPool2d(3, stride=1, padding=1), SameMaxPool3()
    rows = []
    with torch.no_grad():
        for shape in SHAPES:
            x = torch.randn(*shape)
            row = {
                "shape": list(shape),
                "maxpool2d_ms": best_ms(pool, x),
                "same_max_pool3_ms": best_ms(fast, x),
                "identical": bool(torch.equal(pool(x), fast(x))),
            }
            row["speedup"] = row["maxpool2d_ms"] / row["same_max_pool3_ms"]
            rows.append(row)
            print(
                f"{shape}: {row['maxpool2d_ms']:.1f} -> {row['same_max_pool3_ms']:.1f} ms, identical {row['identical']}"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the timings here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pipeline", action="store_true", help="time the whole eager detector instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = pipeline_rows() if args.pipeline else operator_rows()
    if args.json:
        note = "python benchmarks/bench_pool.py" + (" --pipeline" if args.pipeline else "")
        note += f" --threads {args.threads}" if args.threads != 1 else ""
        write_json(
            args.json, {"note": note, "torch": torch.__version__, "threads": args.threads, "rows": rows}
        )


if __name__ == "__main__":
    main()
