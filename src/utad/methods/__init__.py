"""Other detectors on the same contract as UTAD (``utad.detector.MapDetector``): the paper's autoencoder
baselines and today's pretrained-feature methods. Each fits on the same normal training images, calibrates its
map on the same held-out normals, and is tested, predicted and benchmarked by the same commands and metrics.

* ``ae-l2``, ``ae-ssim`` (``utad.methods.autoencoder``): Bergmann et al. 2018's convolutional autoencoder.
* ``feature-knn`` (``utad.methods.knn``): PatchCore-style memory bank with greedy coreset, nearest neighbour.
* ``feature-gaussian`` (``utad.methods.gaussian``): PaDiM-style per-position Gaussians, Mahalanobis distance.
"""

from __future__ import annotations

from utad.config import UtadConfig
from utad.errors import UtadError

METHODS = ("utad", "ae-l2", "ae-ssim", "feature-knn", "feature-gaussian")
# the preset ``utad train --method NAME`` uses when --preset is not given
DEFAULT_PRESET = {
    "utad": "cpu-fast",
    "ae-l2": "ae-l2",
    "ae-ssim": "ae-ssim",
    "feature-knn": "feature-knn",
    "feature-gaussian": "feature-gaussian",
}


def load_baseline(run, ckpt: dict, cfg: UtadConfig, device: str = "cpu"):
    """The trained detector of a non-UTAD run from its checkpoint ``ckpt`` (already read safely)."""
    from utad.nets.perceptual import BackboneInfo

    state = ckpt["model"]
    size = cfg.data.image_size
    if cfg.method in ("ae-l2", "ae-ssim"):
        from utad.methods.autoencoder import AEDetector, build_autoencoder

        net = build_autoencoder(size, cfg.data.channels, cfg.ae)
        net.load_state_dict(state)
        det = AEDetector(net, cfg.method, cfg.ae, cfg.detect, ckpt["norm"], size)
        info = BackboneInfo("none", "-", False, [])
    elif cfg.method in ("feature-knn", "feature-gaussian"):
        from utad.methods.features import build_features

        features, info = build_features(cfg)
        if info.name != ckpt["backbone"]["name"] or info.pretrained != ckpt["backbone"]["pretrained"]:
            raise UtadError(
                f"{run}: fitted with backbone {ckpt['backbone']['name']} ({ckpt['backbone']['weights']}) but "
                f"{info.name} ({info.weights}) is what loads here"
            )
        if cfg.method == "feature-knn":
            from utad.methods.knn import KNNDetector

            det = KNNDetector(
                features, state["bank"], cfg.feature.k, cfg.detect, ckpt["norm"], size, cfg.feature.smooth_map
            )
        else:
            from utad.methods.gaussian import GaussianDetector

            det = GaussianDetector(
                features,
                state["channels"],
                state["mean"],
                state["cov_inv"],
                cfg.detect,
                ckpt["norm"],
                size,
                cfg.feature.smooth_map,
            )
    else:
        raise UtadError(f"{run}: unknown method {cfg.method!r} ({', '.join(METHODS)})")
    det = det.to(device).eval()
    det.config, det.backbone = cfg, info
    return det


def count_parameters(det) -> int:
    """Learned numbers of a detector: network weights, or the memory bank / Gaussians (frozen backbone
    excluded, as it is not fitted)."""
    if det.method in ("feature-knn", "feature-gaussian"):
        return sum(b.numel() for n, b in det.named_buffers() if n in ("bank", "mean", "cov_inv"))
    nets = [getattr(det, n, None) for n in ("ienet", "expert", "net")]
    return sum(p.numel() for net in nets if net is not None for p in net.parameters())
