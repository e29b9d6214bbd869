"""Building blocks shared by IE-Net and Expert-Net: inception, convolution and residual blocks, AdaIN, MLP.

Shapes are (B, C, H, W) unless stated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# IE-Net blocks
# ---------------------------------------------------------------------------------------------------------


class SameMaxPool3(nn.Module):
    """3x3 max-pool, stride 1, padding 1 (the inception block's pooling branch): ``nn.MaxPool2d(3, 1, 1)``.

    Without autograd the same maximum is taken over shifted views (rows, then columns), which gives the identical
    tensor faster on CPU than PyTorch's pooling kernel (2.4x at 64 channels, 11x at 128, batch 32, one thread;
    ``benchmarks/bench_pool.py``): the pooling was a sixth of ``utad test``'s time on a one-class run; the whole
    eager ``cpu-fast`` pipeline gains 0 to 20 % (``--pipeline``). Training and ONNX export use the pooling operator
    itself.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or torch.onnx.is_in_onnx_export():
            return F.max_pool2d(x, 3, stride=1, padding=1)
        p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        rows = torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
        return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


class InceptionBlock(nn.Module):
    """GoogLeNet-style inception block (Szegedy et al.; used by IE-Net, Sec. 4.1).

    Four branches, concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1. Each branch gives
    ``out_channels // 4`` channels; BatchNorm and LeakyReLU follow the concatenation. (B, in, H, W) ->
    (B, out, H, W).
    """

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"inception out_channels must be divisible by 4, got {out_channels}")
        b = out_channels // 4
        red = max(b // 2, 4)  # bottleneck width before the 3x3 and 5x5 convolutions
        self.branch1 = nn.Conv2d(in_channels, b, 1)
        self.branch3 = nn.Sequential(nn.Conv2d(in_channels, red, 1), nn.Conv2d(red, b, 3, padding=1))
        self.branch5 = nn.Sequential(nn.Conv2d(in_channels, red, 1), nn.Conv2d(red, b, 5, padding=2))
        self.branch_pool = nn.Sequential(SameMaxPool3(), nn.Conv2d(in_channels, b, 1))
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(negative_slope)

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)
        return self.act(self.norm(y))


class MLP(nn.Module):
    """Fully connected stack: ``dims = [in, hidden..., out]``, LeakyReLU/ReLU between layers, none at the end."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, dims: list[int], act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(act())
        self.net = nn.Sequential(*layers)

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------------------------------------------------
# Expert-Net blocks (MUNIT-style)
# ---------------------------------------------------------------------------------------------------------


def adain(k: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation, Eq. 7: ``gamma * (k - f(k)) / g(k) + beta``.

    ``k`` (B, C, H, W); ``f``, ``g`` its channel-wise mean and standard deviation over H, W; ``gamma`` and
    ``beta`` (B, C), passed explicitly (not written into layer attributes as MUNIT does). Maps ``gamma`` and
    ``beta`` (B, C, h, w) (a spatial detail code, ``expert.detail_stride``; beyond the paper) modulate each
    position, resized bilinearly to (H, W) where their grid is coarser (SPADE-style); the normalisation
    itself stays per channel.
    """
    mean = k.mean(dim=(2, 3), keepdim=True)
    std = (k.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    if gamma.dim() == 2:
        return gamma[:, :, None, None] * (k - mean) / std + beta[:, :, None, None]
    if gamma.shape[-2:] != k.shape[-2:]:
        gamma = F.interpolate(gamma, size=k.shape[-2:], mode="bilinear", align_corners=False)
        beta = F.interpolate(beta, size=k.shape[-2:], mode="bilinear", align_corners=False)
    return gamma * (k - mean) / std + beta


class LayerNorm2d(nn.Module):
    """MUNIT's layer norm: normalise over (C, H, W) per sample, then a per-channel affine."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # written out rather than F.layer_norm(x, x.shape[1:]) so the ONNX export needs no shape-dependent op
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        y = (x - mean) / (var + self.eps).sqrt()
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "in":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "ln":
        return LayerNorm2d(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class ConvBlock(nn.Module):
    """Reflect-padded convolution, normalisation (``in``/``ln``/``bn``/``none``), activation (``relu``/``none``).

    ``upsample=True`` puts a 2x nearest upsampling in front (MUNIT's decoder blocks).
    """

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        norm: str = "in",
        act: str = "relu",
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d((kernel - 1) // 2 if kernel % 2 else kernel // 2 - 1)  # k4 s2: H -> H/2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride)
        self.norm = _norm(norm, out_channels)
        self.act = nn.ReLU() if act == "relu" else nn.Identity()

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.act(self.norm(self.conv(self.pad(x))))


class ResBlock(nn.Module):
    """Residual block: two 3x3 conv blocks (InstanceNorm, ReLU then none) and an identity shortcut."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, channels: int, norm: str = "in") -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(channels, channels, 3, norm=norm),
            ConvBlock(channels, channels, 3, norm=norm, act="none"),
        )

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AdaINResBlock(nn.Module):
    """Residual block whose two normalisations are AdaIN (Eq. 7) with explicit parameters.

    ``forward(x, params)`` takes ``params`` (B, 4 * C) or, from a spatial detail code, (B, 4 * C, h, w):
    gamma1, beta1, gamma2, beta2.
    """

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.pad1, self.pad2 = nn.ReflectionPad2d(1), nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3)
        self.conv2 = nn.Conv2d(channels, channels, 3)

    # pragma: no mutate end

    @property
    def n_params(self) -> int:
        return 4 * self.channels

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        g1, b1, g2, b2 = params.split(self.channels, dim=1)
        y = F.relu(adain(self.conv1(self.pad1(x)), g1, b1))
        y = adain(self.conv2(self.pad2(y)), g2, b2)
        return x + y
