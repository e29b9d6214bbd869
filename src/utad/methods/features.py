"""Locally aware patch features from a frozen ImageNet backbone, shared by ``feature-knn`` and ``feature-gaussian``.

As in PatchCore (Roth et al. 2022, Sec. 3.1): each chosen layer's map is averaged over a p x p neighbourhood
(stride 1, so every position sees its surroundings), resized to one grid of ``image_size / grid_stride``
positions per side (bilinear; the PatchCore reference upsamples deeper layers to the shallower one's grid), and
the layers are concatenated along channels. The backbone is the one UTAD's PM uses, with the same offline
weights and ImageNet input normalisation; its ``BackboneInfo`` goes into every output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utad.config import DetectConfig, UtadConfig
from utad.detector import MapDetector
from utad.nets.backbones import IMAGENET_MEAN, IMAGENET_STD
from utad.nets.perceptual import BackboneInfo, load_backbone


class PatchFeatures(nn.Module):
    """images (B, C, S, S) in [0, 1] -> patch features (B, D, S / grid_stride, S / grid_stride)."""

    def __init__(self, backbone: nn.Module, layers: list[str], grid_stride: int = 8, neighbourhood: int = 3):
        super().__init__()
        self.backbone, self.layers = backbone, list(layers)
        self.grid_stride, self.neighbourhood = grid_stride, neighbourhood
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        size = images.shape[-1] // self.grid_stride
        p = self.neighbourhood
        maps = []
        for f in self.backbone((images - self.mean) / self.std, self.layers):
            if p > 1:
                f = F.avg_pool2d(F.pad(f, [p // 2, (p - 1) // 2] * 2, mode="replicate"), p, stride=1)
            if f.shape[-1] != size:
                f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
            maps.append(f)
        return torch.cat(maps, dim=1)


class FeatureDetector(MapDetector):
    """A detector over ``PatchFeatures``: subclasses score the grid (``grid_map``); this upsamples the grid map
    bilinearly to the image and smooths it (``smooth_map``, as PatchCore and PaDiM do)."""

    def __init__(
        self,
        features: PatchFeatures,
        detect: DetectConfig,
        norm: dict[str, float] | None = None,
        image_size: int = 256,
        smooth_map: bool = True,
    ) -> None:
        super().__init__(detect, norm, image_size)
        self.features = features
        self.map_smoothed = smooth_map

    def grid_map(self, f: torch.Tensor) -> torch.Tensor:
        """Patch features (B, D, h, w) -> raw anomaly values (B, 1, h, w)."""
        raise NotImplementedError

    def raw_map(self, x: torch.Tensor):
        e = F.interpolate(
            self.grid_map(self.features(x)), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return (self.smooth(e) if self.map_smoothed else e), None, None, None


def build_features(cfg: UtadConfig) -> tuple[PatchFeatures, BackboneInfo]:
    """The feature extractor of ``cfg.feature`` (frozen, eval mode) and what backbone ran."""
    f = cfg.feature
    backbone, info = load_backbone(f.backbone, f.layers, cfg.pm.vgg_weights, cfg.pm.allow_random)
    return PatchFeatures(backbone, info.layers, f.grid_stride, f.neighbourhood).eval(), info


@torch.no_grad()
def collect_features(extractor: PatchFeatures, loader, progress: bool = False) -> torch.Tensor:
    """Patch features of every image of ``loader`` (dicts with ``image``): (N, D, h, w) on the CPU."""
    from tqdm.auto import tqdm

    device = extractor.mean.device
    out = []
    for batch in tqdm(loader, desc="features", unit="batch", disable=not progress, dynamic_ncols=True):
        out.append(extractor(batch["image"].to(device)).cpu())
    return torch.cat(out)
