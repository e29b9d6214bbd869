"""Expert-Net, high-fidelity reconstruction from the impression (Sec. 3.2, Fig. 4), MUNIT-style.

``x^ = D_X^A(E_X^A(m), E_S(x))`` restores the details of ``x`` on its impression ``m``; ``m^ = D_X^B(E_X^B(x))``
is the *naive impression*, mapped from ``x`` directly (not guaranteed anomaly-free).

Choices (``ExpertNetConfig``), following MUNIT's defaults:

* ``E_X^A``, ``E_X^B``: a 7x7 conv block then ``downsample`` 4x4 stride-2 conv blocks (the paper's 4 conv blocks
  at ``downsample=3``), InstanceNorm, ReLU, reflect padding; then ``res_blocks`` residual blocks.
* ``D_X^A``: ``res_blocks`` residual blocks with AdaIN (Eq. 7) whose gamma and beta come from an MLP of the
  detail vector ``s``; then ``downsample`` blocks of 2x nearest upsampling + 5x5 conv + LayerNorm + ReLU, and a
  7x7 conv (the 4 conv blocks with upsampling). ``D_X^B`` is the same with InstanceNorm residual blocks: ``m^``
  has no detail vector to adapt to.
* ``E_S``: three conv layers (7x7, 4x4 stride 2, 4x4 stride 2 to ``detail_dim`` channels) and adaptive average
  pooling: ``s`` (B, detail_dim).
* Networks take and return images in [0, 1]; internally [-1, 1] with a tanh output, as MUNIT.
* The MLP's last bias starts at gamma = 1, beta = 0, so AdaIN starts as plain instance normalisation.
* ``residual=True`` (a choice beyond MUNIT, off in the paper presets): D_X^A predicts the details to add to m
  rather than the whole image, ``x^ = sigmoid(logit(m) + D_X^A(E_X^A(m), s))``, its last convolution starting at
  zero so that x^ = m before training. x still reaches D_X^A only through s, so defects cannot leak in; what
  changes is that the expert no longer has to re-learn the structure m already has and spends its capacity on
  the details (the fidelity issue: without it a CPU-budget expert returned x^ blurrier than m).
* ``skips=True`` (beyond the paper, off in the paper presets): U-Net-style additive skips from E_X^A's feature
  maps of m at each resolution into D_X^A's upsampling blocks at the same resolution. They carry m's fine
  structure past the bottleneck, so the decoder need not squeeze it through the residual blocks; they come from
  m only, so x still reaches D_X^A only through s and defects cannot leak into x^.
* Without E_S (ablation, ``use_detail=False``): ``s ~ N(0, 1)`` while training; at inference ``s = 0`` (the mean
  of N(0, 1)) so the detector stays deterministic.
* ``detail_stride`` (beyond the paper, 0 = the paper's one detail vector per image): E_S average-pools its last
  map over cells of ``detail_stride`` x ``detail_stride`` pixels instead of the whole image, so s becomes a map
  (B, detail_dim, H / stride, W / stride); the MLP maps each cell's vector to that cell's AdaIN gamma and beta,
  which ``adain`` resizes to the content code's grid. The paper's global s cannot say *where* a detail goes
  (pill's embossed "FF", its random red speckles); a spatial s can. The price is the paper's guarantee: x still
  reaches D_X^A only through s, but a spatial s can carry a defect's colour into x^ at the defect's place, the
  more so the finer the cells. Cells are defined in pixels, not as a count, so that a detail code learned on
  crops (``train.expert_crop``) means the same on whole images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from utad.nets.blocks import MLP, AdaINResBlock, ConvBlock, ResBlock


@dataclass
class ExpertOutput:
    x_hat: torch.Tensor  # (B, C, H, W) high-fidelity reconstruction in [0, 1]
    m_hat: torch.Tensor | None  # (B, C, H, W) naive impression in [0, 1], None without the m^ branch
    s: torch.Tensor  # (B, detail_dim) detail vector that drove AdaIN; (B, detail_dim, h, w) when spatial


class ContentEncoder(nn.Module):
    """E_X: conv blocks down to 1 / 2**downsample resolution, then residual blocks."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, in_channels: int, dim: int, downsample: int, res_blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(in_channels, dim, 7)]
        for _ in range(downsample):
            layers.append(ConvBlock(dim, dim * 2, 4, stride=2))
            dim *= 2
        layers += [ResBlock(dim) for _ in range(res_blocks)]
        self.net = nn.Sequential(*layers)
        self.out_channels = dim

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps after the stem and each down-sampling block, finest first, then the code."""
        feats = []
        n_conv = len(self.net) - sum(isinstance(layer, ResBlock) for layer in self.net)
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i < n_conv - 1:
                feats.append(x)
        return [*feats, x]


class Decoder(nn.Module):
    """D_X: residual blocks (AdaIN when ``adaptive``), upsampling conv blocks, 7x7 conv, tanh."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, dim: int, out_channels: int, upsample: int, res_blocks: int, adaptive: bool) -> None:
        super().__init__()
        self.adaptive = adaptive
        if adaptive:
            self.res = nn.ModuleList(AdaINResBlock(dim) for _ in range(res_blocks))
        else:
            self.res = nn.ModuleList(ResBlock(dim) for _ in range(res_blocks))
        ups: list[nn.Module] = []
        for _ in range(upsample):
            ups.append(ConvBlock(dim, dim // 2, 5, norm="ln", upsample=True))
            dim //= 2
        ups.append(ConvBlock(dim, out_channels, 7, norm="none", act="none"))
        self.up = nn.Sequential(*ups)

    # pragma: no mutate end

    @property
    def n_adain_params(self) -> int:
        return sum(b.n_params for b in self.res) if self.adaptive else 0

    def forward(
        self,
        h: torch.Tensor,
        adain_params: torch.Tensor | None = None,
        skips: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Content code h (B, dim, b, b) -> output before the final activation (B, C, H, W).

        ``skips``: encoder feature maps, coarsest first, added after each upsampling block (U-Net-style)."""
        offset = 0
        for block in self.res:
            if self.adaptive:
                n = block.n_params
                h = block(h, adain_params[:, offset : offset + n])
                offset += n
            else:
                h = block(h)
        if skips is None:
            return self.up(h)
        for i, layer in enumerate(self.up):
            h = layer(h)
            if i < len(skips):
                h = h + skips[i]
        return h


class DetailExtractor(nn.Module):
    """E_S: three conv layers and average pooling; (B, C, H, W) -> s (B, detail_dim).

    With ``stride`` > 0 the pooling is over cells of ``stride`` pixels: s (B, detail_dim, H / stride, W / stride).
    """

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(self, in_channels: int, dim: int, detail_dim: int, layers: int = 3, stride: int = 0) -> None:
        super().__init__()
        convs: list[nn.Module] = [ConvBlock(in_channels, dim, 7, norm="none")]
        for i in range(layers - 2):
            convs.append(ConvBlock(dim * 2**i, dim * 2 ** (i + 1), 4, stride=2, norm="none"))
        convs.append(ConvBlock(dim * 2 ** (layers - 2), detail_dim, 4, stride=2, norm="none", act="none"))
        conv_stride = 2 ** (layers - 1)
        if stride and stride % conv_stride:
            raise ValueError(f"detail stride {stride} must be a multiple of E_S's own stride {conv_stride}")
        self.spatial = stride > 0
        pool = nn.AvgPool2d(stride // conv_stride) if self.spatial else nn.AdaptiveAvgPool2d(1)
        self.net = nn.Sequential(*convs, pool)

    # pragma: no mutate end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.net(x)
        return s if self.spatial else s.flatten(1)


class ExpertNet(nn.Module):
    """Expert-Net: E_X^A, D_X^A (with AdaIN from E_S via an MLP), and optionally E_X^B, D_X^B for m^."""

    # pragma: no mutate start (constructors: every test builds them; mutation covers the forward paths)
    def __init__(
        self,
        in_channels: int = 3,
        dim: int = 64,
        downsample: int = 3,
        res_blocks: int = 2,
        detail_dim: int = 8,
        detail_layers: int = 3,
        mlp_dim: int = 256,
        use_detail: bool = True,
        use_naive: bool = True,
        residual: bool = False,
        skips: bool = False,
        detail_stride: int = 0,
    ) -> None:
        super().__init__()
        self.use_detail, self.use_naive, self.detail_dim = use_detail, use_naive, detail_dim
        self.residual, self.skips, self.detail_stride = residual, skips, detail_stride
        self.enc_a = ContentEncoder(in_channels, dim, downsample, res_blocks)  # E_X^A
        self.dec_a = Decoder(
            self.enc_a.out_channels, in_channels, downsample, res_blocks, adaptive=True
        )  # D_X^A
        self.detail = (
            DetailExtractor(in_channels, dim, detail_dim, detail_layers, detail_stride)
            if use_detail
            else None
        )  # E_S
        n = self.dec_a.n_adain_params
        self.mlp = MLP([detail_dim, mlp_dim, mlp_dim, n])
        with (
            torch.no_grad()
        ):  # start as instance norm: gamma = 1, beta = 0 (params are g1, b1, g2, b2 per block)
            last = self.mlp.net[-1]
            last.weight.mul_(0.1)
            last.bias.zero_()
            if n:
                last.bias.view(-1, 2, self.enc_a.out_channels)[:, 0] = 1.0
        if residual:  # x^ = m before training: the expert learns only the details to add
            last_conv = self.dec_a.up[-1].conv
            nn.init.zeros_(last_conv.weight)
            nn.init.zeros_(last_conv.bias)
        if use_naive:
            self.enc_b = ContentEncoder(in_channels, dim, downsample, res_blocks)  # E_X^B
            self.dec_b = Decoder(self.enc_b.out_channels, in_channels, downsample, res_blocks, adaptive=False)

    # pragma: no mutate end

    def detail_vector(self, x: torch.Tensor) -> torch.Tensor:
        """s = E_S(x); without E_S: N(0, 1) samples while training, zeros at inference."""
        if self.detail is not None:
            return self.detail(x * 2 - 1)
        shape: tuple[int, ...] = (x.shape[0], self.detail_dim)
        if self.detail_stride:
            shape += (x.shape[2] // self.detail_stride, x.shape[3] // self.detail_stride)
        return torch.randn(shape, device=x.device) if self.training else x.new_zeros(shape)

    def adain_params(self, s: torch.Tensor) -> torch.Tensor:
        """The MLP of s: AdaIN's parameters (B, n), or (B, n, h, w) from a spatial s (the MLP per cell)."""
        if s.dim() == 2:
            return self.mlp(s)
        return self.mlp(s.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def reconstruct(self, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x^ = D_X^A(E_X^A(m), s), in [0, 1] (with ``residual``: sigmoid(logit(m) + D_X^A(...)))."""
        if self.skips:
            *feats, code = self.enc_a.features(m * 2 - 1)
            y = self.dec_a(code, self.adain_params(s), skips=feats[::-1])
        else:
            y = self.dec_a(self.enc_a(m * 2 - 1), self.adain_params(s))
        if self.residual:
            return torch.sigmoid(torch.logit(m, eps=1e-4) + y)
        return (torch.tanh(y) + 1) / 2

    def naive_impression(self, x: torch.Tensor) -> torch.Tensor:
        """m^ = D_X^B(E_X^B(x)), in [0, 1]."""
        return (torch.tanh(self.dec_b(self.enc_b(x * 2 - 1))) + 1) / 2

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> ExpertOutput:
        """x, m (B, C, H, W) in [0, 1] -> ExpertOutput(x^, m^, s)."""
        s = self.detail_vector(x)
        x_hat = self.reconstruct(m, s)
        m_hat = self.naive_impression(x) if self.use_naive else None
        return ExpertOutput(x_hat=x_hat, m_hat=m_hat, s=s)
