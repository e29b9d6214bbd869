"""Differentiable structural similarity (Wang et al. 2004) as Bergmann et al. 2018 use it: a loss and a map.

``SSIM(p, q) = l(p, q) * c(p, q) * s(p, q) = ((2 mu_p mu_q + c1)(2 sigma_pq + c2)) /
((mu_p^2 + mu_q^2 + c1)(sigma_p^2 + sigma_q^2 + c2))`` over the k x k window centred at every pixel, with
``c1 = (0.01 L)^2``, ``c2 = (0.03 L)^2``, L = 1 (images in [0, 1]). The window is Gaussian (sigma 1.5, Wang et
al.) or uniform (``sigma = 0``); borders are reflect-padded so the map has the image's size; colour images give
the mean over channels. Bergmann et al. use k = 11, the loss ``1 - mean SSIM`` and the residual map ``1 - SSIM``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

C1 = 0.01**2
C2 = 0.03**2


def ssim_window(size: int, sigma: float) -> torch.Tensor:
    """(size, size) weights summing to 1: Gaussian of ``sigma``, or uniform when ``sigma`` is 0."""
    if sigma <= 0:
        return torch.full((size, size), 1.0 / size**2)
    t = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_weight(channels: int, size: int, sigma: float) -> torch.Tensor:
    """The window as a depthwise convolution weight (channels, 1, size, size)."""
    return ssim_window(size, sigma)[None, None].repeat(channels, 1, 1, 1)


def ssim_map(
    a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel SSIM of a and b (B, C, H, W) in [0, 1] -> (B, 1, H, W), the mean over channels.

    ``weight``: the (C, 1, k, k) window as a stored tensor (what an exported graph needs); else built here."""
    c = a.shape[1]
    w = weight if weight is not None else ssim_weight(c, window, sigma).to(a)
    pad = w.shape[-1] // 2

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=c)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + C1) * (2 * cov + C2)
    den = (mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2)
    return (num / den).mean(dim=1, keepdim=True)


def ssim_loss(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Bergmann et al.'s training loss: ``1 - mean SSIM(a, b)``."""
    return 1.0 - ssim_map(a, b, window, sigma).mean()
