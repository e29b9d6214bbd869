"""The convolutional autoencoder of Bergmann et al. 2018, the paper's AE-L2 / AE-SSIM baselines (Table 1) and,
at widths 64, 128 and 256, its AE-64 / AE-128 / AE-256 capacity study (Table 4).

Bergmann et al., "Improving unsupervised defect segmentation by applying structural similarity to
autoencoders" (VISAPP 2019), Table 1: a 128 x 128 input, nine convolutions in the encoder with
``[w, w, w, 2w, 2w, 4w, 2w, w, d]`` filters, kernels ``[4, 4, 3, 4, 3, 4, 3, 3, 8]``, strides 2 for the 4 x 4
kernels and 1 otherwise, the last one without padding so that the 8 x 8 map becomes a ``d``-dimensional code
(w = 32, d = 100); the decoder mirrors it with transposed convolutions; LeakyReLU (slope 0.2) after every layer
but the code and the output. Choices not in that table, documented here: padding 1 for 4 x 4 / stride 2 and
3 x 3 layers (exact halving), a sigmoid output (images are in [0, 1]), and at other input sizes S the code
layer's kernel is S / 16 (the 8 x 8 of 128 px).
"""

from __future__ import annotations

from torch import nn


class ConvAutoencoder(nn.Module):
    """x (B, C, S, S) in [0, 1] -> reconstruction (B, C, S, S) in [0, 1] through a ``latent_dim`` code."""

    def __init__(
        self,
        image_size: int = 128,
        in_channels: int = 3,
        width: int = 32,
        latent_dim: int = 100,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        w, k = width, image_size // 16

        def act() -> nn.Module:
            return nn.LeakyReLU(negative_slope)

        def conv(cin: int, cout: int, kernel: int) -> list[nn.Module]:
            stride = 2 if kernel == 4 else 1
            return [nn.Conv2d(cin, cout, kernel, stride, padding=1), act()]

        def up(cin: int, cout: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, 2, padding=1), act()]

        self.encoder = nn.Sequential(
            *conv(in_channels, w, 4),
            *conv(w, w, 4),
            *conv(w, w, 3),
            *conv(w, 2 * w, 4),
            *conv(2 * w, 2 * w, 3),
            *conv(2 * w, 4 * w, 4),
            *conv(4 * w, 2 * w, 3),
            *conv(2 * w, w, 3),
            nn.Conv2d(w, latent_dim, k),  # S/16 x S/16 -> 1 x 1: the code
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, w, k),  # 1 x 1 -> S/16 x S/16
            act(),
            *conv(w, 2 * w, 3),
            *conv(2 * w, 4 * w, 3),
            *up(4 * w, 2 * w),
            *conv(2 * w, 2 * w, 3),
            *up(2 * w, w),
            *conv(w, w, 3),
            *up(w, w),
            nn.ConvTranspose2d(w, in_channels, 4, 2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))
