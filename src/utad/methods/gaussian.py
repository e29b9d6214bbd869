"""``feature-gaussian``: PaDiM-style multivariate Gaussians of normal patch features, one per grid position.

Defard et al., "PaDiM: a patch distribution modeling framework" (ICPR 2021). The concatenated patch features
(``utad.methods.features``) are reduced to a fixed random subset of ``channels`` channels (their random
dimensionality reduction); at every position (i, j) of the grid the training images give a mean mu_ij and a
covariance Sigma_ij + eps * I; a patch's raw anomaly value is its Mahalanobis distance
``sqrt((f - mu_ij)^T Sigma_ij^-1 (f - mu_ij))``. The map is upsampled bilinearly to the image size, smoothed
with a Gaussian (sigma ``detect.smooth_sigma``, 4 px at 256 px, as PaDiM does; ``feature.smooth_map``) and
normalised like every utad method; the image score is its maximum.
"""

from __future__ import annotations

import torch

from utad.config import DetectConfig
from utad.methods.features import FeatureDetector, PatchFeatures


def fit_gaussians(feats: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position mean (P, D) and inverse covariance (P, D, D) of features (N, D, h, w), P = h * w."""
    n, d, h, w = feats.shape
    if n < 2:
        raise ValueError("feature-gaussian needs at least 2 training images for a covariance")
    x = feats.double().permute(2, 3, 0, 1).reshape(h * w, n, d)  # (P, N, D)
    mean = x.mean(1)
    centred = x - mean[:, None]
    cov = centred.transpose(1, 2) @ centred / (n - 1) + eps * torch.eye(d, dtype=torch.float64)
    return mean.float(), torch.linalg.inv(cov).float()


class GaussianDetector(FeatureDetector):
    """Patch features -> Mahalanobis distance to the position's Gaussian -> map (B, 1, S, S)."""

    method = "feature-gaussian"

    def __init__(
        self,
        features: PatchFeatures,
        channels: torch.Tensor,
        mean: torch.Tensor,
        cov_inv: torch.Tensor,
        detect: DetectConfig,
        norm: dict[str, float] | None = None,
        image_size: int = 256,
        smooth_map: bool = True,
    ) -> None:
        super().__init__(features, detect, norm, image_size, smooth_map)
        self.register_buffer("channels", channels.long())
        self.register_buffer("mean", mean.float())
        self.register_buffer("cov_inv", cov_inv.float())

    def grid_map(self, f: torch.Tensor) -> torch.Tensor:
        f = f.index_select(1, self.channels)
        b, d, h, w = f.shape
        diff = f.permute(2, 3, 0, 1).reshape(h * w, b, d) - self.mean[:, None]  # (P, B, D)
        m2 = ((diff @ self.cov_inv) * diff).sum(-1)  # (P, B)
        return m2.clamp_min(0).sqrt().T.reshape(b, 1, h, w)
