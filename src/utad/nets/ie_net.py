"""IE-Net, the impression extractor (Sec. 3.1, Fig. 3, Eq. 1-6).

Inference: ``m = D_M(E_M(x))``, an anomaly-free, blurry *impression* of ``x``.

Choices the paper leaves open (all config fields, ``IENetConfig``):

* ``E_M`` is ``blocks`` inception blocks, each followed by 2x2 max-pooling (4 blocks at 256 px, 3 one-class);
  block ``i`` outputs ``min(4 * width * 2**i, max_width)`` channels: the feature map ``h``, (B, c, b, b) with
  b = S / 2**blocks.
* The code ``z`` (``decoder_input``): ``spatial`` (default) is a code of ``z_dim`` channels at every one of the
  b x b positions, as drawn in Fig. 3; ``global`` is one ``z_dim`` vector per image (b' = 1), made from ``h``
  as ``global_pool`` says: ``mean`` averages ``h`` over the positions (the authors' release pools its latent;
  the code then says which features are present, hardly where), ``flatten`` feeds all b x b positions of ``h``
  to the MLP, a standard VAE's dense bottleneck that keeps the layout (beyond the paper; docs/oneclass.md).
  Either way ``z`` has shape (B, z_dim, b', b') and is what D_M decodes, so the MI and KL terms shape the very
  code the impression is made from. (A decoder fed ``h`` directly, with ``z`` used only by T, was tried: L_info
  then stays at chance, 2 log 2, and the KL term collapses ``z`` to the prior.)
* The MLP estimating ``mu`` and ``log sigma^2`` (3 FC layers) and the discriminator T (4 FC layers, sigmoid)
  are applied at every position (1x1 convolutions are exactly per-position fully connected layers). T scores
  the pair [h at a position, z at that position] (Deep InfoMax's local pairing); its loss averages positions.
* ``z = mu + sigma * eps`` while training (reparameterisation, as in the VAE the paper follows), ``z = mu`` at
  inference.
* ``D_M``: a 1x1 convolution (spatial) or a linear layer (global) to a ``fc_channels`` x b x b map, then
  ``blocks`` inception blocks each preceded by 2x nearest upsampling, a 1x1 convolution and a sigmoid (Sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from utad.nets.blocks import InceptionBlock


@dataclass
class IEOutput:
    """What one IE-Net pass gives: the impression and the quantities its loss needs."""

    m: torch.Tensor  # (B, C, H, W) impression in [0, 1]
    z: torch.Tensor  # (B, z_dim, b', b') code (sampled while training, mu at inference)
    mu: torch.Tensor  # (B, z_dim, b', b')
    logvar: torch.Tensor  # (B, z_dim, b', b') log sigma^2
    g: torch.Tensor  # (B, c, b', b') E_M's feature T pairs with z (pooled or flattened when global)


def channel_schedule(blocks: int, width: int, max_width: int) -> list[int]:
    """Output channels of the encoder's inception blocks: 4 branches x width, doubling, capped."""
    return [min(4 * width * 2**i, max_width) for i in range(blocks)]


class PointwiseMLP(nn.Module):
    """Fully connected layers applied at every spatial position (as 1x1 convolutions); ReLU between layers."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Conv2d(dims[i], dims[i + 1], 1))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class IEEncoder(nn.Module):
    """E_M: inception blocks, each followed by max-pooling; (B, C, S, S) -> (B, c_last, S/2**n, S/2**n)."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, in_channels: int, chans: list[int], negative_slope: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for c in chans:
            layers += [InceptionBlock(prev, c, negative_slope), nn.MaxPool2d(2)]
            prev = c
        self.net = nn.Sequential(*layers)

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class IEDecoder(nn.Module):
    """D_M: z -> 1x1 conv (spatial) or linear (global) -> inception blocks with 2x nearest upsampling ->
    1x1 conv -> sigmoid."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
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
            self.fc: nn.Module = nn.Conv2d(z_dim, fc_channels, 1)
        else:
            self.fc = nn.Linear(z_dim, fc_channels * base * base)
        blocks: list[nn.Module] = []
        prev = fc_channels
        for c in reversed(chans):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), InceptionBlock(prev, c, negative_slope)]
            prev = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(prev, out_channels, 1)

    # pragma: no mutate end

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, z_dim, b, b) when spatial, (B, z_dim, 1, 1) when global -> m (B, C, S, S)."""
        h = (
            self.fc(z)
            if self.spatial
            else self.fc(z.flatten(1)).view(-1, self.fc_channels, self.base, self.base)
        )
        return torch.sigmoid(self.head(self.blocks(F.leaky_relu(h, 0.2))))


class IENet(nn.Module):
    """IE-Net: encoder E_M, MLP (mu, log sigma^2), discriminator T, decoder D_M (Fig. 3)."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
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
        global_pool: str = "mean",
    ) -> None:
        super().__init__()
        if decoder_input not in ("spatial", "global"):
            raise ValueError(f"decoder_input must be spatial or global, got {decoder_input!r}")
        if global_pool not in ("mean", "flatten"):
            raise ValueError(f"global_pool must be mean or flatten, got {global_pool!r}")
        if image_size % 2**blocks:
            raise ValueError(f"image_size {image_size} must be divisible by 2**blocks = {2**blocks}")
        self.spatial = decoder_input == "spatial"
        self.flatten = not self.spatial and global_pool == "flatten"
        chans = channel_schedule(blocks, width, max_width)
        base = image_size // 2**blocks
        g_dim = chans[-1] * base * base if self.flatten else chans[-1]  # channels of g (MLP and T read it)
        self.encoder = IEEncoder(in_channels, chans, negative_slope)  # E_M
        self.mlp = PointwiseMLP([g_dim, mlp_hidden, mlp_hidden, 2 * z_dim])  # 3 FC layers -> mu, log s^2
        self.discriminator = PointwiseMLP([g_dim + z_dim, t_hidden, t_hidden, t_hidden, 1])  # T, 4 layers
        self.decoder = IEDecoder(in_channels, z_dim, fc_channels, base, chans, negative_slope, self.spatial)

    # pragma: no mutate end

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(g, mu, logvar): the feature T pairs with z (pooled or flattened when global), p(z | x)'s parameters."""
        h = self.encoder(x)
        if self.spatial:
            g = h
        elif self.flatten:
            g = h.flatten(1)[:, :, None, None]
        else:
            g = h.mean(dim=(2, 3), keepdim=True)
        mu, logvar = self.mlp(g).chunk(2, dim=1)
        return g, mu, logvar.clamp(-10.0, 10.0)

    def forward(self, x: torch.Tensor) -> IEOutput:
        """x (B, C, S, S) in [0, 1] -> IEOutput; z is sampled in training mode and equals mu in eval mode."""
        g, mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return IEOutput(m=self.decoder(z), z=z, mu=mu, logvar=logvar, g=g)

    def impression(self, x: torch.Tensor) -> torch.Tensor:
        """m = D_M(E_M(x)), deterministic (z = mu); (B, C, S, S) -> (B, C, S, S)."""
        _, mu, _ = self.encode(x)
        return self.decoder(mu)

    def critic(self, g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """T(x, z) before its sigmoid, one logit per position: (B, c, b', b'), (B, z_dim, b', b') -> (B, b'*b')."""
        return self.discriminator(torch.cat([g, z], dim=1)).flatten(1)
