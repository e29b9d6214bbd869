"""IE-Net, the impression extractor (Sec. 3.1, Fig. 3, Eq. 1-6).

Inference: ``m = D_M(E_M(x))``, an anomaly-free, blurry *impression* of ``x``.

Choices the paper leaves open (all config fields, ``IENetConfig``):

* ``E_M`` is ``blocks`` inception blocks, each followed by 2x2 max-pooling (4 blocks at 256 px, 3 one-class);
  block ``i`` outputs ``min(4 * width * 2**i, max_width)`` channels.
* The code ``z`` is global: the 3-layer MLP maps the globally pooled encoder features to ``mu`` and
  ``log sigma^2`` (``z_dim`` each); ``z = mu + sigma * eps`` while training (reparameterisation, as in the VAE
  the paper follows), ``z = mu`` at inference. A global code is the bottleneck that keeps ``m`` anomaly-free.
* ``D_M``'s input (``decoder_input``): ``spatial`` (default) decodes the encoder's last feature map, squeezed by
  a 1x1 convolution to ``fc_channels`` — the spatial code of Fig. 3 and of the authors' public release, whose
  global code (pooled latent -> mu, sigma) feeds only the MI and KL terms; ``global`` decodes ``z`` itself
  (a linear layer lifts it to ``fc_channels`` x (S / 2**blocks)^2), the strictest bottleneck, which keeps ``m``
  anomaly-free but cannot place the structure of unaligned textures. Then ``blocks`` inception blocks each
  preceded by 2x nearest upsampling, a 1x1 convolution and a sigmoid (Sec. 4.1).
* ``T(x, z)``: a 4-layer MLP with a sigmoid at the end over ``[g(x), z]``, where ``g(x)`` is the globally
  pooled encoder feature of ``x`` (an MLP cannot take the image itself; Deep InfoMax pairs codes with encoder
  features the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from utad.nets.blocks import MLP, InceptionBlock


@dataclass
class IEOutput:
    """What one IE-Net pass gives: the impression and the quantities its loss needs."""

    m: torch.Tensor  # (B, C, H, W) impression in [0, 1]
    z: torch.Tensor  # (B, z_dim) code (sampled while training, mu at inference)
    mu: torch.Tensor  # (B, z_dim)
    logvar: torch.Tensor  # (B, z_dim) log sigma^2
    g: torch.Tensor  # (B, feat) pooled encoder feature of x, T's image input


def channel_schedule(blocks: int, width: int, max_width: int) -> list[int]:
    """Output channels of the encoder's inception blocks: 4 branches x width, doubling, capped."""
    return [min(4 * width * 2**i, max_width) for i in range(blocks)]


class IEEncoder(nn.Module):
    """E_M: inception blocks, each followed by max-pooling; (B, C, S, S) -> (B, c_last, S/2**n, S/2**n)."""

    def __init__(self, in_channels: int, chans: list[int], negative_slope: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [InceptionBlock(prev, c, negative_slope), nn.MaxPool2d(2)]
            prev = c
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class IEDecoder(nn.Module):
    """D_M: code -> squeeze (1x1 conv, spatial) or lift (linear, global) -> inception blocks with 2x nearest
    upsampling -> 1x1 conv -> sigmoid."""

    def __init__(
        self,
        out_channels: int,
        z_dim: int,
        fc_channels: int,
        base: int,
        chans: list[int],
        negative_slope: float,
        spatial: bool = True,
    ) -> None:
        super().__init__()
        self.fc_channels, self.base, self.spatial = fc_channels, base, spatial
        if spatial:
            self.fc = nn.Conv2d(chans[-1], fc_channels, 1)  # spatial code: squeeze the encoder's feature map
        else:
            self.fc = nn.Linear(z_dim, fc_channels * base * base)
        blocks: list[nn.Module] = []
        prev = fc_channels
        for c in reversed(chans):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), InceptionBlock(prev, c, negative_slope)]
            prev = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(prev, out_channels, 1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """code: the feature map (B, c_last, b, b) when spatial, else z (B, z_dim) -> m (B, C, S, S)."""
        h = F.leaky_relu(self.fc(code), 0.2).view(-1, self.fc_channels, self.base, self.base)
        return torch.sigmoid(self.head(self.blocks(h)))


class IENet(nn.Module):
    """IE-Net: encoder E_M, MLP (mu, log sigma^2), discriminator T, decoder D_M (Fig. 3)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int = 3,
        blocks: int = 4,
        width: int = 32,
        max_width: int = 512,
        z_dim: int = 128,
        mlp_hidden: int = 512,
        t_hidden: int = 512,
        fc_channels: int = 64,
        negative_slope: float = 0.2,
        decoder_input: str = "spatial",
    ) -> None:
        super().__init__()
        if decoder_input not in ("spatial", "global"):
            raise ValueError(f"decoder_input must be spatial or global, got {decoder_input!r}")
        self.spatial = decoder_input == "spatial"
        if image_size % 2**blocks:
            raise ValueError(f"image_size {image_size} must be divisible by 2**blocks = {2**blocks}")
        chans = channel_schedule(blocks, width, max_width)
        self.encoder = IEEncoder(in_channels, chans, negative_slope)  # E_M
        self.mlp = MLP([chans[-1], mlp_hidden, mlp_hidden, 2 * z_dim], act=nn.ReLU)  # 3 FC layers
        self.discriminator = MLP(
            [chans[-1] + z_dim, t_hidden, t_hidden, t_hidden, 1], act=nn.ReLU
        )  # T, 4 layers
        self.decoder = IEDecoder(
            in_channels, z_dim, fc_channels, image_size // 2**blocks, chans, negative_slope, self.spatial
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, g, mu, logvar): encoder feature map, its global pool, and the parameters of p(z | x)."""
        h = self.encoder(x)
        g = h.mean(dim=(2, 3))
        mu, logvar = self.mlp(g).chunk(2, dim=1)
        return h, g, mu, logvar.clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> IEOutput:
        """x (B, C, S, S) in [0, 1] -> IEOutput; z is sampled in training mode and equals mu in eval mode."""
        h, g, mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        m = self.decoder(h if self.spatial else z)
        return IEOutput(m=m, z=z, mu=mu, logvar=logvar, g=g)

    def impression(self, x: torch.Tensor) -> torch.Tensor:
        """m = D_M(E_M(x)), deterministic (z = mu); (B, C, S, S) -> (B, C, S, S)."""
        h, _, mu, _ = self.encode(x)
        return self.decoder(h if self.spatial else mu)

    def critic(self, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """T(x, z) before its sigmoid (a logit, for numerically stable losses); (B, F), (B, z_dim) -> (B,)."""
        return self.discriminator(torch.cat([g, z], dim=1)).squeeze(1)
