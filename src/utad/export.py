"""Export: the whole inference pipeline as one ONNX graph, and a detector that runs it with ONNX Runtime.

The graph is ``MapDetector.forward``; for UTAD: IE-Net, Expert-Net, the Perceptual Measurement with its backbone (ImageNet
input normalisation included), the map normalisation with the calibration stored in the run, the Gaussian
smoothing and the image score. Input ``image`` (B, C, S, S) float in [0, 1] at the model's size (decoding and
resizing stay in Python, shared with the PyTorch path: ``utad.data.images.load_image``). Outputs ``score`` (B,),
``anomaly_map`` (B, 1, S, S) normalised, ``impression`` m, and ``reconstruction`` x^ / ``naive_impression`` m^
when the model has them. The batch size is dynamic. The run's resolved config, the calibration, alpha, the image
size and the backbone go into the model's metadata, so ``utad predict model.onnx`` needs nothing else.
The baselines (``utad.methods``) export the same way: their raw map (autoencoder, or backbone features with the
memory bank / the Gaussians as constants) and the same normalisation and score.

ONNX and ONNX Runtime are an optional extra: ``pip install utad[export]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from utad import __version__
from utad.config import UtadConfig, from_dict, to_dict
from utad.detector import Detector, MapDetector, Prediction
from utad.errors import UtadError
from utad.io import atomic_write
from utad.nets.perceptual import BackboneInfo

OPSET = 17


def _need(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise UtadError(
            f"{module} is not installed: pip install 'utad[export]' (onnx, onnxruntime)"
        ) from None


class _Graph(torch.nn.Module):
    """Detector.forward with a fixed tuple of outputs (None outputs left out)."""

    def __init__(self, det: MapDetector) -> None:
        super().__init__()
        self.det = det

    def forward(self, image: torch.Tensor):
        score, e, m, x_hat, m_hat = self.det(image)
        return tuple(t for t in (score, e, m, x_hat, m_hat) if t is not None)


def output_names(det: MapDetector, x: torch.Tensor) -> list[str]:
    """The graph's outputs: score and map, then whichever of m, x^, m^ the method produces."""
    with torch.no_grad():
        outs = det(x)
    names = ["score", "anomaly_map", "impression", "reconstruction", "naive_impression"]
    return [n for n, t in zip(names, outs, strict=True) if t is not None]


def write_graph(det: MapDetector, path: str | os.PathLike) -> list[str]:
    """Trace ``det`` into an ONNX file at ``path`` (dynamic batch, opset ``OPSET``); returns the output names."""
    cfg = det.config
    x = torch.rand(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    if hasattr(det, "chunk"):
        det.chunk = 0  # feature-knn: all queries in one matrix product, whatever the batch size
    names = output_names(det, x)
    with torch.no_grad():
        torch.onnx.export(
            _Graph(det),
            (x,),
            str(path),
            input_names=["image"],
            output_names=names,
            dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
            opset_version=OPSET,
            dynamo=False,
        )
    return names


def export_onnx(run: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Export the trained detector of ``run`` to ``out`` (.onnx), written atomically; returns the path."""
    onnx = _need("onnx")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UtadError(f"{out}: exists; pass --overwrite to replace it")
    det = Detector.load(run).eval()
    cfg = det.config
    tmp = out.with_name(f".{out.name}.export.tmp")
    try:
        write_graph(det, tmp)
        model = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "utad_version": __version__,
        "config": json.dumps(to_dict(cfg)),
        "norm": json.dumps(det.norm),
        "backbone": json.dumps(det.backbone.to_dict()),
        "image_size": str(cfg.data.image_size),
        "channels": str(cfg.data.channels),
        "alpha": str(cfg.detect.alpha),
        "run": str(run),
    }
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write(out, lambda f: f.write(model.SerializeToString()))


class OnnxDetector:
    """Runs an exported graph with ONNX Runtime behind the same ``predict_tensor`` contract as ``Detector``."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = _need("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UtadError(f"{path}: file not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UtadError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "config" not in meta:
            raise UtadError(f"{path}: no utad metadata (was it written by utad export?)")
        self.path = path
        self.config: UtadConfig = from_dict(json.loads(meta["config"]), f"{path} metadata")
        self.detect = self.config.detect
        self.norm = json.loads(meta["norm"])
        self.backbone = BackboneInfo(**json.loads(meta["backbone"]))
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """x (B, C, S, S) float32 in [0, 1] -> the graph's outputs by name."""
        values = self.session.run(None, {"image": np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.outputs, values, strict=True))

    def predict_tensor(self, x: torch.Tensor, paths: list[str] | None = None) -> list[Prediction]:
        out = self.run(x.numpy())
        alpha = self.detect.alpha

        def img(name: str, i: int) -> np.ndarray | None:
            return out[name][i].transpose(1, 2, 0) if name in out else None

        preds = []
        for i in range(x.shape[0]):
            amap = out["anomaly_map"][i, 0]
            preds.append(
                Prediction(
                    path=paths[i] if paths else f"image:{i}",
                    score=float(out["score"][i]),
                    is_anomaly=bool(out["score"][i] > alpha),
                    anomaly_map=amap,
                    mask=amap > alpha,
                    image=x[i].permute(1, 2, 0).numpy(),
                    impression=img("impression", i),
                    reconstruction=img("reconstruction", i),
                    naive_impression=img("naive_impression", i),
                )
            )
        return preds


def load_any(model: str | os.PathLike, device: str = "auto") -> Detector | OnnxDetector:
    """A run folder or checkpoint (PyTorch, on ``device``) or an exported ``.onnx`` file (ONNX Runtime on the
    CPU)."""
    if str(model).lower().endswith(".onnx"):
        return OnnxDetector(model)
    return Detector.load(model, device)
