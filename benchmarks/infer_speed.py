"""Inference speed of the whole UTAD pipeline (IE-Net, Expert-Net, PM with its backbone, normalisation, score)
against the machine's limit; writes JSON.

For each image size (64, 128, 256) and batch (1, 8), with ``cpu-fast`` networks (random weights: speed does
not depend on them) and the EfficientNet-Lite0 backbone:

* ``eager``: ``torch.no_grad`` forward in the default memory format;
* ``optimised``: ``torch.inference_mode`` and channels-last tensors and modules;
* ``onnxruntime``: the exported graph (``utad.export``) in ONNX Runtime;

ms per image (median of repeats after warm-up), FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``),
the achieved GFLOP/s, and the float32 matrix-multiply peak measured in the same run (2048 x 2048), so that the
ratio to the machine's limit is visible. Also training images/s of both stages at 128 and 256 px.

    python benchmarks/infer_speed.py --json benchmarks/results/infer_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from utad.config import load_config
from utad.detector import Detector
from utad.io import write_json
from utad.losses import expert_loss, ie_loss
from utad.model import build_expert, build_ienet, build_pm


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 n x n matrix product (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def detector(size: int) -> Detector:
    cfg = load_config("cpu-fast", [f"data.image_size={size}"])
    pm, info = build_pm(cfg)
    det = Detector(build_ienet(cfg), build_expert(cfg), pm, cfg.detect, {"quantile": 1.0}, size).eval()
    det.config, det.backbone = cfg, info
    return det


def flops_per_image(det: Detector, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        det(x)
    return float(counter.get_total_flops())


def measure(fn, x, repeats: int) -> float:
    fn(x)  # warm-up
    fn(x)
    return statistics.median(_time(lambda: fn(x)) for _ in range(repeats)) / x.shape[0] * 1000


def onnx_runner(det: Detector, size: int, spinning: bool = True):
    import onnxruntime as ort

    from utad.export import write_graph

    path = Path(tempfile.mkdtemp()) / "m.onnx"
    write_graph(det, path)
    opts = ort.SessionOptions()
    # spinning (ONNX Runtime's default, what `utad predict model.onnx` runs with) keeps worker threads busy-waiting
    # between parallel sections: faster on an idle machine, but they steal cores from other work
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda t: session.run(None, {"image": t.numpy()})


def training_rate(size: int, steps: int = 3) -> dict[str, float]:
    cfg = load_config("cpu-fast", [f"data.image_size={size}"])
    ienet, expert = build_ienet(cfg), build_expert(cfg)
    ienet.to(memory_format=torch.channels_last)
    opt1, opt2 = torch.optim.Adam(ienet.parameters()), torch.optim.Adam(expert.parameters())
    b = cfg.train.batch_size
    x = torch.rand(b, 3, size, size)

    def step1():
        loss = ie_loss(ienet, x.contiguous(memory_format=torch.channels_last), 0.01, 10.0, True)[0]
        opt1.zero_grad()
        loss.backward()
        opt1.step()

    def step2():
        loss = expert_loss(expert, x, x, 10.0, 10.0, 1.0)[0]
        opt2.zero_grad()
        loss.backward()
        opt2.step()

    out = {}
    for name, fn in (("ienet_images_per_s", step1), ("expert_images_per_s", step2)):
        fn()
        out[name] = b / statistics.median(_time(fn) for _ in range(steps))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--ort-spinning", choices=["on", "off"], default="on", help="ONNX Runtime thread spinning"
    )
    args = ap.parse_args()
    peak = matmul_peak()
    rows = []
    for size in args.sizes:
        det = detector(size)
        flops = flops_per_image(det, size)
        opt = detector(size).to(memory_format=torch.channels_last)
        opt.load_state_dict(det.state_dict())
        paths = {
            "eager": lambda t, d=det: torch.no_grad()(d)(t),
            "optimised": lambda t, d=opt: torch.inference_mode()(d)(
                t.contiguous(memory_format=torch.channels_last)
            ),
        }
        try:
            paths["onnxruntime"] = onnx_runner(det, size, args.ort_spinning == "on")
        except ImportError:
            pass
        for batch in (1, 8):
            x = torch.rand(batch, 3, size, size)
            for name, fn in paths.items():
                ms = measure(fn, x, args.repeats)
                gflops = flops / (ms / 1000) / 1e9
                rows.append(
                    {
                        "size": size,
                        "batch": batch,
                        "path": name,
                        "ms_per_image": ms,
                        "gflop_per_image": flops / 1e9,
                        "gflop_per_s": gflops,
                        "fraction_of_matmul_peak": gflops / peak,
                    }
                )
                print(rows[-1])
    train = {str(s): training_rate(s) for s in (128, 256)}
    write_json(
        args.json,
        {
            "threads": torch.get_num_threads(),
            "ort_spinning": args.ort_spinning,
            "torch": torch.__version__,
            "matmul_peak_gflop_per_s": peak,
            "inference": rows,
            "training_cpu_fast": train,
            "note": "cpu-fast networks, random weights, EfficientNet-Lite0 PM backbone; one process, no other load "
            "assumed (check the machine was idle)",
        },
    )


if __name__ == "__main__":
    main()
