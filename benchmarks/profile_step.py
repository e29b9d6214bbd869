"""Time one training step of IE-Net and of Expert-Net per image, for several sizes and settings; writes JSON.

python benchmarks/profile_step.py --json benchmarks/results/profile_step.json
python benchmarks/profile_step.py --json F --case paper-oneclass:64:64 --case oneclass-fast:64:16:cl
(``--case PRESET:SIZE:BATCH[:cl]``, ``cl`` for channels-last; without it, the MVTec cases below)
"""

from __future__ import annotations

import argparse
import time

import torch

from utad.config import load_config
from utad.io import write_json
from utad.losses import expert_loss, ie_loss
from utad.model import build_expert, build_ienet


def time_step(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def profile(preset: str, size: int, channels_last: bool, batch: int, overrides: list[str]) -> dict:
    cfg = load_config(preset, [f"data.image_size={size}", *overrides])
    ie, ex = build_ienet(cfg), build_expert(cfg)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ie, ex = ie.to(memory_format=fmt), ex.to(memory_format=fmt)
    opt_ie, opt_ex = torch.optim.SGD(ie.parameters(), lr=1e-3), torch.optim.Adam(ex.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=fmt)
    m = torch.rand_like(x)

    def ie_step():
        loss, _, _ = ie_loss(ie, x, 0.1, 10.0)
        opt_ie.zero_grad()
        loss.backward()
        opt_ie.step()

    def ex_step():
        loss, _, _ = expert_loss(ex, x, m, 10.0, 10.0, 1.0)
        opt_ex.zero_grad()
        loss.backward()
        opt_ex.step()

    return {
        "preset": preset,
        "image_size": size,
        "channels_last": channels_last,
        "batch": batch,
        "overrides": overrides,
        "ienet_params_m": sum(p.numel() for p in ie.parameters()) / 1e6,
        "expert_params_m": sum(p.numel() for p in ex.parameters()) / 1e6,
        "ienet_s_per_image": time_step(ie_step) / batch,
        "expert_s_per_image": time_step(ex_step) / batch,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--case", action="append", default=[], help="PRESET:SIZE:BATCH[:cl], repeatable")
    args = ap.parse_args()
    cases = [
        ("paper-mvtec", 256, False, 4),
        ("cpu-fast", 64, False, 8),
        ("cpu-fast", 128, False, 8),
        ("cpu-fast", 128, True, 8),
        ("cpu-fast", 256, False, 8),
    ]
    if args.case:
        parts = [c.split(":") for c in args.case]
        cases = [(p[0], int(p[1]), p[3:] == ["cl"], int(p[2])) for p in parts]
    rows = []
    for preset, size, cl, batch in cases:
        row = profile(preset, size, cl, batch, [])
        print(row)
        rows.append(row)
    write_json(args.json, {"rows": rows})


if __name__ == "__main__":
    main()
