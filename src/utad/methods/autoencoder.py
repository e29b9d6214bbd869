"""``ae-l2`` and ``ae-ssim``: Bergmann et al. 2018's convolutional autoencoder as a detector.

The network is ``utad.nets.autoencoder.ConvAutoencoder``. ``ae-l2`` is trained with the per-pixel squared error
and its residual map is ``mean_c (x - x^)^2``; ``ae-ssim`` is trained with ``1 - mean SSIM`` and its residual map
is ``1 - SSIM(x, x^)`` over the k x k window (``utad.ssim``, k = ``ae.ssim_window``). The reconstruction x^ is
shown in the report's x^ column. Maps then go through the shared normalisation, smoothing and max score.
"""

from __future__ import annotations

import torch

from utad.config import AEConfig, DetectConfig
from utad.detector import MapDetector
from utad.nets.autoencoder import ConvAutoencoder
from utad.ssim import ssim_loss, ssim_map, ssim_weight


def ae_loss(method: str, x: torch.Tensor, x_hat: torch.Tensor, cfg: AEConfig) -> torch.Tensor:
    """Training loss: mean squared error (``ae-l2``) or ``1 - mean SSIM`` (``ae-ssim``)."""
    if method == "ae-l2":
        return ((x - x_hat) ** 2).mean()
    return ssim_loss(x, x_hat, cfg.ssim_window, cfg.ssim_sigma)


def residual_map(
    method: str, x: torch.Tensor, x_hat: torch.Tensor, cfg: AEConfig, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, 1, H, W): ``mean_c (x - x^)^2`` (``ae-l2``) or ``1 - SSIM(x, x^)`` (``ae-ssim``)."""
    if method == "ae-l2":
        return ((x - x_hat) ** 2).mean(dim=1, keepdim=True)
    return 1.0 - ssim_map(x, x_hat, cfg.ssim_window, cfg.ssim_sigma, weight)


class AEDetector(MapDetector):
    """x -> x^ = AE(x) -> residual map (B, 1, S, S)."""

    def __init__(
        self,
        net: ConvAutoencoder,
        method: str,
        ae: AEConfig,
        detect: DetectConfig,
        norm: dict[str, float] | None = None,
        image_size: int = 128,
    ) -> None:
        super().__init__(detect, norm, image_size)
        self.net, self.method, self.ae = net, method, ae
        channels = net.decoder[-2].out_channels
        weight = ssim_weight(channels, ae.ssim_window, ae.ssim_sigma)
        self.register_buffer("ssim_weight", weight, persistent=False)

    def raw_map(self, x: torch.Tensor):
        x_hat = self.net(x)
        return residual_map(self.method, x, x_hat, self.ae, self.ssim_weight), None, x_hat, None


def build_autoencoder(image_size: int, channels: int, cfg: AEConfig) -> ConvAutoencoder:
    return ConvAutoencoder(image_size, channels, cfg.width, cfg.latent_dim, cfg.negative_slope)
