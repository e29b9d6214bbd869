"""``feature-knn``: a PatchCore-style memory bank of normal patch features and nearest-neighbour distance.

Roth et al., "Towards total recall in industrial anomaly detection" (CVPR 2022). Fit: the locally aware patch
features (``utad.methods.features``) of every training image form the candidate set; greedy coreset selection
(their Algorithm 1) keeps ``coreset_ratio`` of them: starting from one random patch, repeatedly add the patch
farthest from everything selected so far, with distances measured after a random linear projection to
``coreset_projection`` dimensions (Johnson-Lindenstrauss, as in the paper). Test: a patch's raw anomaly value is
the (mean over ``k``) Euclidean distance to its nearest patches in the bank; the map is upsampled bilinearly to
the image size and smoothed with a Gaussian (sigma ``detect.smooth_sigma``, 4 px at 256 px, as PatchCore does;
``feature.smooth_map``), then normalised like every utad method; the image score is the map's maximum
(PatchCore's own score re-weighting is not used, so that all methods share one scoring rule).
"""

from __future__ import annotations

import math

import torch

from utad.config import DetectConfig
from utad.methods.features import FeatureDetector, PatchFeatures


@torch.no_grad()
def greedy_coreset(points: torch.Tensor, n: int, projection: int | None = 128, seed: int = 0) -> torch.Tensor:
    """Indices (n,) of a greedy farthest-point coreset of ``points`` (N, D), PatchCore Algorithm 1.

    The first index is drawn at random (``seed``); index j + 1 is the point whose distance to its nearest
    selected point is largest. With ``projection`` < D the distances are those of a random Gaussian projection.
    One matrix-vector product per selected point: O(N * n * projection), memory O(N * projection).
    """
    num = points.shape[0]
    n = min(n, num)
    g = torch.Generator().manual_seed(seed)
    x = points.float()
    if projection and projection < x.shape[1]:
        x = x @ (torch.randn(x.shape[1], projection, generator=g) / math.sqrt(projection))
    xt = x.T.contiguous()  # (D', N): a vector-matrix product over it is ~2.5x faster than x @ v on CPU
    sq = (x * x).sum(1)
    chosen = torch.empty(n, dtype=torch.long)
    nearest = torch.full((num,), float("inf"))
    i = int(torch.randint(num, (1,), generator=g))
    for j in range(n):
        chosen[j] = i
        d = (x[i] @ xt).mul_(-2.0).add_(sq).add_(sq[i])  # |x - x_i|^2 for every point
        torch.minimum(nearest, d, out=nearest)
        nearest[i] = -1.0  # selected: never again (rounding can leave it slightly above 0)
        i = int(nearest.argmax())
    return chosen


def nearest_distance(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int | None = None
) -> torch.Tensor:
    """Mean Euclidean distance of each query (Q, D) to its k nearest rows of ``bank`` (M, D) -> (Q,).

    Queries go in chunks so that the (chunk, M) distance matrix stays near 256 MB (``chunk=0``: one piece)."""
    bank_sq = (bank * bank).sum(1)
    if chunk is None:
        chunk = max(1, 2**26 // max(1, len(bank)))
    out = []
    for q in queries.split(chunk) if chunk else [queries]:
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * q @ bank.T + bank_sq
        d2 = d2.topk(k, dim=1, largest=False).values if k > 1 else d2.amin(dim=1, keepdim=True)
        out.append(d2.clamp_min(0).sqrt().mean(1))
    return torch.cat(out)


class KNNDetector(FeatureDetector):
    """Patch features -> distance to the memory bank -> map (B, 1, S, S)."""

    method = "feature-knn"

    def __init__(
        self,
        features: PatchFeatures,
        bank: torch.Tensor,
        k: int,
        detect: DetectConfig,
        norm: dict[str, float] | None = None,
        image_size: int = 256,
        smooth_map: bool = True,
    ) -> None:
        super().__init__(features, detect, norm, image_size, smooth_map)
        self.k = k
        self.chunk: int | None = None  # query chunking (None: automatic; 0: one piece, for ONNX export)
        self.register_buffer("bank", bank.float())

    def grid_map(self, f: torch.Tensor) -> torch.Tensor:
        b, d, h, w = f.shape
        q = f.permute(0, 2, 3, 1).reshape(-1, d)
        return nearest_distance(q, self.bank, self.k, self.chunk).view(b, 1, h, w)
