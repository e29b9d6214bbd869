"""Multi-scale patch discriminator for the optional adversarial term on x^ (beyond the paper).

The paper's Expert-Net is "MUNIT-style" but trained with L1 terms only (Sec. 3.2). MUNIT itself (Huang et al.
2018, Sec. 3.2 and its code's ``MsImageDis``) adds a GAN loss: a multi-scale discriminator of stride-2 4x4
convolutions with LeakyReLU(0.2), no normalisation, a 1x1 convolution to one logit per patch, the input
average-pooled by 2 between scales, and least-squares GAN losses (LSGAN, Mao et al. 2017). utad offers the
same as ``expert.lambda_adv`` (0 in every preset): real images are x, fakes are x^. An L1 loss settles on the
blurry median of textures; a discriminator penalises blur that real images never have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MsImageDis(nn.Module):
    """``scales`` patch discriminators, each on the input average-pooled 2^k times (k = 0..scales-1).

    One scale: ``layers`` conv 4x4 / stride 2 / reflect padding 1 blocks with LeakyReLU(0.2), channels ``dim``
    doubling per block, then a 1x1 conv to one logit per patch; weights drawn from N(0, 0.02) as MUNIT's trainer
    does (with torch's default init the logits start large and the first updates wreck x^).
    (B, C, H, W) -> list of (B, 1, h_k, w_k).
    """

    # pragma: no mutate start (constructor)
    def __init__(self, in_channels: int = 3, dim: int = 64, layers: int = 4, scales: int = 3) -> None:
        super().__init__()
        self.nets = nn.ModuleList()
        for _ in range(scales):
            blocks: list[nn.Module] = []
            c_in, c_out = in_channels, dim
            for _ in range(layers):
                blocks += [nn.Conv2d(c_in, c_out, 4, 2, 1, padding_mode="reflect"), nn.LeakyReLU(0.2)]
                c_in, c_out = c_out, c_out * 2
            blocks.append(nn.Conv2d(c_in, 1, 1))
            self.nets.append(nn.Sequential(*blocks))
        for (
            m
        ) in self.modules():  # MUNIT's "gaussian" init: N(0, 0.02) weights, zero biases (logits start near 0)
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(net(x))
        return outs


def lsgan_d_loss(dis: MsImageDis, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: sum over scales of mean((D(real) - 1)^2) + mean(D(fake)^2) (MUNIT's
    ``calc_dis_loss``, LSGAN). ``fake`` should be detached by the caller."""
    loss = real.new_zeros(())
    for r, f in zip(dis(real), dis(fake), strict=True):
        loss = loss + ((r - 1) ** 2).mean() + (f**2).mean()
    return loss


def lsgan_g_loss(dis: MsImageDis, fake: torch.Tensor) -> torch.Tensor:
    """Generator loss: sum over scales of mean((D(fake) - 1)^2) (MUNIT's ``calc_gen_loss``, LSGAN)."""
    loss = fake.new_zeros(())
    for f in dis(fake):
        loss = loss + ((f - 1) ** 2).mean()
    return loss
