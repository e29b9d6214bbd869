"""The composed detector: IE-Net -> Expert-Net -> Perceptual Measurement -> normalised map, mask and score.

``MapDetector`` is the contract every method shares (UTAD here, the baselines in ``utad.methods``): a raw
anomaly map per image, then the same normalisation, smoothing, score and mask. One inference contract (``Prediction``) serves the CLI, the report, the benchmark and export. The anomaly map
is normalised with statistics of held-out normal images stored in the checkpoint (never per-image min-max),
so that alpha = 0.5 (Eq. 9) means the same on every image:

* ``quantile``: ``e_n = norm_value * e / q``, ``q`` the ``quantile`` of validation normal pixels' ``e``: with
  the defaults, alpha = 0.5 segments what is above the 99.9th percentile of normal pixels.
* ``minmax``: ``e_n = (e - min) / (max - min)`` over validation normal pixels.

Optionally (``detect.open_px`` r > 0, beyond the paper and off in every preset) the raw map is first opened
(grey erosion, then dilation, with a (2r+1)-px square at the model's resolution): hot spots smaller than the
square vanish and larger ones keep their shape, so small random normal texture (pill's red speckles) no longer
sets the image score; the calibration sees the opened maps. Also optional (``detect.map_sigma``, beyond the
paper, off in every preset): the map itself is smoothed with a Gaussian after the opening, as PatchCore and PaDiM
smooth theirs, so pixel metrics and the mask at alpha see a map without pixel-scale noise; the calibration sees
the smoothed maps too.

The image score is the maximum of the normalised map after Gaussian smoothing (``detect.score``: or its mean, or
the mean of its top-k share, for whole-image anomalies); ``smooth_sigma`` is given in
pixels of a 256 px image (the MVTec reference's 4 px) and scaled with the model's resolution, so the smoothing
covers the same part of the image at every size.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utad.config import DetectConfig, UtadConfig, from_dict
from utad.errors import UtadError
from utad.nets.expert_net import ExpertNet
from utad.nets.ie_net import IENet
from utad.nets.perceptual import BackboneInfo, PerceptualMeasurement


def resolve_device(name: str) -> str:
    """``auto``: ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cpu``; ``cuda`` or ``cuda:N`` (refused
    with a clear error when no such device is visible, instead of failing deep inside the first forward pass)."""
    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name in ("cpu", "meta"):  # meta: shapes only (tests)
        return name
    if re.fullmatch(r"cuda(:\d+)?", name):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= n:
            raise UtadError(f"device {name}: torch sees {n} CUDA device(s) (use --device cpu or auto)")
        return name
    raise UtadError(f"device {name!r}: use auto, cpu, cuda or cuda:N")


@dataclass
class Prediction:
    """What the detector says about one image (arrays at the model's resolution, images (H, W, C) in [0, 1])."""

    path: str
    score: float  # image-level anomaly score (max of the smoothed normalised map)
    is_anomaly: bool  # score > alpha
    anomaly_map: np.ndarray  # (H, W) float, normalised e
    mask: np.ndarray  # (H, W) bool, anomaly_map > alpha (Eq. 9)
    image: np.ndarray  # x
    impression: np.ndarray | None  # m (None for methods without an impression)
    reconstruction: np.ndarray | None  # x^ (None without Expert-Net; an autoencoder's output for ae-*)
    naive_impression: np.ndarray | None  # m^ (None without the m^ branch)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian kernel of radius 4 sigma."""
    radius = max(1, math.ceil(4 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def grey_opening(e: torch.Tensor, r: int) -> torch.Tensor:
    """Grey opening (erosion, then dilation) of (B, 1, H, W) maps with a (2r+1)-px square (r <= 0: e as is).
    Pixels outside the image take no part: max pooling pads with -inf, so a hot spot in a corner survives
    when the square fits inside it. Removes hot spots smaller than the square and keeps larger ones."""
    if r <= 0:
        return e
    eroded = -F.max_pool2d(-e, 2 * r + 1, stride=1, padding=r)
    return F.max_pool2d(eroded, 2 * r + 1, stride=1, padding=r)


class MapDetector(nn.Module):
    """What every method shares: the anomaly map's normalisation (calibrated on held-out normals), smoothing,
    image score, mask at alpha and ``Prediction``s. A method implements ``raw_map(x) -> (e, m, x^, m^)``
    (intermediates None when it has none) and sets ``config`` and ``backbone``.

    ``forward(x)`` (B, C, S, S) in [0, 1] -> (score (B,), map (B, 1, S, S), m, x^, m^).
    """

    method = "utad"
    map_smoothed = False  # True: raw_map already smooths the map (PatchCore, PaDiM); the score is its max

    def __init__(
        self, detect: DetectConfig, norm: dict[str, float] | None = None, image_size: int = 256
    ) -> None:
        super().__init__()
        self.detect = detect
        self.norm = dict(norm or {})
        sigma = detect.smooth_sigma * image_size / 256.0
        k = gaussian_kernel(sigma) if sigma > 0 else torch.ones(1)
        self.register_buffer("kernel", k, persistent=False)
        map_sigma = detect.map_sigma * image_size / 256.0
        k = gaussian_kernel(map_sigma) if map_sigma > 0 else torch.ones(1)
        self.register_buffer("map_kernel", k, persistent=False)
        self.config: UtadConfig | None = None
        self.backbone: BackboneInfo | None = None
        self.pm: PerceptualMeasurement | None = None  # UTAD's measurement (fidelity); None for other methods

    def raw_map(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        raise NotImplementedError

    def open_map(self, e: torch.Tensor) -> torch.Tensor:
        """:func:`grey_opening` of (B, 1, H, W) maps with r = ``detect.open_px`` (0: e as is)."""
        return grey_opening(e, int(self.detect.open_px))

    def postprocess(self, e: torch.Tensor) -> torch.Tensor:
        """The raw map as the detector uses it: opened (``open_px``), then smoothed (``map_sigma``)."""
        return self.smooth(self.open_map(e), self.map_kernel)

    def normalise(self, e: torch.Tensor) -> torch.Tensor:
        if not self.norm:
            raise UtadError(
                "detector has no normalisation statistics (calibrate it on validation images first)"
            )
        if self.detect.normalisation == "quantile":
            return e * (self.detect.norm_value / max(self.norm["quantile"], 1e-12))
        if self.detect.normalisation == "minmax":
            return (e - self.norm["min"]) / max(self.norm["max"] - self.norm["min"], 1e-12)
        raise UtadError(f"unknown normalisation {self.detect.normalisation!r} (quantile, minmax)")

    def smooth(self, e: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Separable Gaussian smoothing of (B, 1, H, W) maps with reflect padding (the score's kernel unless
        ``kernel`` is given); a kernel wider than the map pads by repeating the border (reflect cannot)."""
        k = self.kernel if kernel is None else kernel
        if k.numel() == 1:
            return e
        r = k.numel() // 2
        mode = "reflect" if r < min(e.shape[-2:]) else "replicate"
        e = F.conv2d(F.pad(e, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(e, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))

    def image_score(self, smoothed: torch.Tensor) -> torch.Tensor:
        """(B,) from smoothed maps (B, 1, H, W): ``detect.score`` max, mean, or topk (mean of the ``top_k``
        share of highest pixels; for whole-image anomalies, e.g. the one-class protocol)."""
        flat = smoothed.flatten(1)
        if self.detect.score == "mean":
            return flat.mean(1)
        if self.detect.score == "topk":
            # int(): while ONNX export traces, the size is a tensor; k is a constant of the graph (fixed size)
            k = max(1, round(self.detect.top_k * int(flat.shape[1])))
            return flat.topk(k, dim=1).values.mean(1)
        return flat.amax(1)

    def forward(self, x: torch.Tensor):
        e, m, x_hat, m_hat = self.raw_map(x)
        e = self.normalise(self.postprocess(e))
        score = self.image_score(e if self.map_smoothed else self.smooth(e))
        return score, e, m, x_hat, m_hat

    @torch.no_grad()
    def normal_values(self, loader) -> np.ndarray:
        """Every pixel of the raw, post-processed maps of ``loader``'s images (float64), what ``calibrate``
        takes its statistics from."""
        maps = []
        for batch in loader:
            e, *_ = self.raw_map(batch["image"].to(self.kernel.device))
            maps.append(self.postprocess(e).flatten().cpu())
        return torch.cat(maps).numpy().astype(np.float64)

    def calibrate(self, loader) -> dict[str, float]:
        """Set the normalisation statistics from the raw maps of held-out normal images."""
        values = self.normal_values(loader)
        self.norm = {
            "quantile": float(np.quantile(values, self.detect.quantile)),
            "min": float(values.min()),
            "max": float(values.max()),
            "n_pixels": int(values.size),
        }
        return self.norm

    @torch.inference_mode()
    def predict_tensor(self, x: torch.Tensor, paths: list[str] | None = None) -> list[Prediction]:
        """Predictions for a batch x (B, C, S, S) in [0, 1] (already at the model's size)."""
        self.eval()
        score, e, m, x_hat, m_hat = self(x.to(self.kernel.device))
        alpha = self.detect.alpha

        def img(t: torch.Tensor | None, i: int) -> np.ndarray | None:
            return None if t is None else t[i].permute(1, 2, 0).cpu().numpy()

        out = []
        for i in range(x.shape[0]):
            amap = e[i, 0].cpu().numpy()
            out.append(
                Prediction(
                    path=paths[i] if paths else f"image:{i}",
                    score=float(score[i]),
                    is_anomaly=bool(score[i] > alpha),
                    anomaly_map=amap,
                    mask=amap > alpha,
                    image=img(x, i),
                    impression=img(m, i),
                    reconstruction=img(x_hat, i),
                    naive_impression=img(m_hat, i),
                )
            )
        return out

    def predict(self, images: list[str | os.PathLike], batch_size: int = 8) -> list[Prediction]:
        """Predictions for image files (any size and mode; resized to the model's size)."""
        from utad.data.images import load_image

        cfg = self.config
        if cfg is None:
            raise UtadError("detector has no config: load it with Detector.load(run)")
        preds: list[Prediction] = []
        for i in range(0, len(images), batch_size):
            chunk = [str(p) for p in images[i : i + batch_size]]
            arrays = [load_image(p, cfg.data.image_size, cfg.data.channels) for p in chunk]
            x = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())
            preds += self.predict_tensor(x, chunk)
        return preds


class Detector(MapDetector):
    """UTAD: IE-Net -> Expert-Net -> Perceptual Measurement (Eq. 8) -> normalised map, mask and score."""

    def __init__(
        self,
        ienet: IENet,
        expert: ExpertNet | None,
        pm: PerceptualMeasurement,
        detect: DetectConfig,
        norm: dict[str, float] | None = None,
        image_size: int = 256,
    ) -> None:
        super().__init__(detect, norm, image_size)
        self.ienet, self.expert, self.pm = ienet, expert, pm

    def intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(m, x^, m^) for x; x^ and m^ are None when the model has no Expert-Net / no m^ branch."""
        m = self.ienet.impression(x)
        if self.expert is None:
            return m, None, None
        out = self.expert(x, m)
        return m, out.x_hat, out.m_hat

    def raw_map(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Un-normalised e (B, 1, S, S) and the intermediates (m, x^, m^)."""
        m, x_hat, m_hat = self.intermediates(x)
        return self.pm(x, m, x_hat, m_hat), m, x_hat, m_hat

    @classmethod
    def load(cls, run: str | os.PathLike, device: str = "auto") -> MapDetector:
        """Load a trained detector (any ``method``) from a run folder (its ``checkpoint.pt``) or a checkpoint,
        on ``device`` (``resolve_device``: ``auto`` is the GPU when torch sees one)."""
        from utad.checkpoint import load_checkpoint

        device = resolve_device(device)
        ckpt = load_checkpoint(run)
        if ckpt.get("stage") != "done" or not ckpt.get("norm"):
            raise UtadError(f"{run}: training has not finished (stage {ckpt.get('stage')}); resume it first")
        cfg = from_dict(ckpt["config"])
        if cfg.method != "utad":
            from utad.methods import load_baseline

            return load_baseline(run, ckpt, cfg, device)
        return cls.from_checkpoint(run, ckpt, cfg, device)

    @classmethod
    def from_checkpoint(cls, run, ckpt: dict, cfg: UtadConfig, device: str = "cpu") -> Detector:
        from utad.model import build_expert, build_ienet, build_pm

        ienet = build_ienet(cfg)
        ienet.load_state_dict(ckpt["ienet"])
        expert = build_expert(cfg)
        if expert is not None:
            expert.load_state_dict(ckpt["expert"])
        trained_with = ckpt["backbone"]["name"]
        if cfg.pm.backbone == "auto" and trained_with != "none":
            cfg.pm.backbone = trained_with  # the normalisation statistics belong to the backbone that ran
        pm, info = build_pm(cfg)
        if info.name != trained_with:
            raise UtadError(
                f"{run}: trained with backbone {ckpt['backbone']['name']} but {info.name} is what loads here; "
                "pass the same weights (--vgg-weights) or set pm.backbone"
            )
        det = cls(ienet, expert, pm, cfg.detect, ckpt["norm"], cfg.data.image_size).to(device).eval()
        det.config, det.backbone = cfg, info
        return det
