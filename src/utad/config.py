"""Typed configuration: dataclasses with a comment on every field, YAML presets, dotted overrides.

A preset under ``configs/`` maps one-to-one onto ``UtadConfig`` (unknown keys are errors). Overrides are
``section.field=value`` strings with YAML-typed values, e.g. ``train.ie_epochs=5`` or ``pm.layers=[conv2_2]``.
Choices the paper leaves open are fields here; their docstrings in the networks say why the default was taken.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from utad.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent / "configs"  # shipped in the package; ./configs links here


def preset_names() -> list[str]:
    """The shipped presets' names, sorted (what ``--preset`` accepts besides a YAML file)."""
    return sorted(q.stem for q in PRESETS_DIR.glob("*.yaml")) if PRESETS_DIR.is_dir() else []


@dataclass
class DataConfig:
    source: str = "demo"  # demo | mvtec | folder | mnist | fashion-mnist | cifar10
    path: str | None = None  # data folder (MVTec category or root, folder of good images, IDX/CIFAR folder)
    category: str | None = None  # MVTec category when ``path`` is the dataset root
    normal_class: int = 0  # one-class benchmarks: the class treated as normal (0..9)
    bad: list[str] = field(default_factory=list)  # folder source: folders of bad test images
    test_good: str | None = None  # folder source: optional folder of good test images
    mask_dir: str | None = None  # folder source: optional folder of masks (<stem>.png or <stem>_mask.png)
    masks: bool = True  # False: the data has no masks, only image-level metrics are computed
    image_size: int = 256  # images are resized to image_size x image_size (paper: 256 MVTec, 64 one-class)
    channels: int = 3  # 3 = RGB, 1 = grey input to the networks (PM always sees 3 channels)
    val_fraction: float = 0.1  # share of normal training images held out for normalisation and thresholds
    limit_test: int | None = None  # one-class: keep a stratified subset of this many test images (None = all)
    limit_train: int | None = None  # one-class: keep a fixed random subset of this many normal train images
    evaluate_on: str = "test"  # test split | holdout: unused train images (one-class) | synthetic: defects
    # drawn on the validation images (demo, mvtec, folder); holdout and synthetic are for choosing settings
    synthetic_strength: float = 1.0  # evaluate_on=synthetic: opacity scale of the drawn defects, (0, 1]
    demo_seed: int = 0  # built-in demo: generator seed
    demo_size: int = 128  # built-in demo: crop side in pixels
    num_workers: int = 0  # DataLoader worker processes
    skip_bad: bool = False  # unreadable files: stop before training with the list (False), or leave out


@dataclass
class IENetConfig:
    blocks: int = 4  # inception blocks in E_M and D_M (paper: 4 for MVTec, 3 one-class)
    width: int = 32  # channels of each of the four inception branches in the first block (doubles per block)
    max_width: int = 512  # cap on a block's output channels
    z_dim: int = 128  # channels of the code z (per position when spatial, one vector when global)
    mlp_hidden: int = 512  # hidden width of the 3-layer MLP estimating mu and log sigma^2
    t_hidden: int = 512  # hidden width of the 4-layer discriminator MLP T(x, z)
    use_info: bool = True  # L_info (Eq. 4) on; False is the "without L_info" ablation
    decoder_input: str = "spatial"  # spatial: a code z at every position (Fig. 3) | global: one vector z
    global_pool: str = "mean"  # one code from h: mean over positions | flatten (all; beyond the paper)
    fc_channels: int = 64  # channels of D_M's input code (1x1-squeezed map, or z lifted by a linear layer)
    lambda_kl: float = 0.01  # lambda, KL(p(z) || N(0, I)) weight (Eq. 3; not in the paper; 0.1 collapsed z, L_info at chance)
    lambda_rec: float = 10.0  # lambda1, weight of |D_M(E_M(x)) - x|_1 (Eq. 6; not given in the paper)
    lambda_ssim: float = 0.0  # weight of 1 - SSIM(m, x) (beyond the paper; Bergmann et al. 2018); 0 = paper
    negative_slope: float = 0.2  # LeakyReLU slope in inception blocks
    train_defects: float = 0.0  # probability of a drawn defect on a training input, m still compared with the
    # clean image (beyond the paper, DRAEM-style; data/train_defects.py); 0 = paper


@dataclass
class ExpertNetConfig:
    enabled: bool = True  # False is the "without Expert-Net" ablation: e = sum_l phi_l(x, m)
    dim: int = 32  # channels after the first conv block (MUNIT: 64; 32 keeps UTAD near Table 4's 16.77 M)
    downsample: int = 3  # stride-2 conv blocks in E_X (the 4 conv blocks = 1 stem + this many)
    res_blocks: int = 2  # residual blocks in encoders and decoders (paper: 2 MVTec, 1 one-class)
    detail_dim: int = 8  # size of the detail vector s = E_S(x)
    detail_layers: int = 3  # conv layers in E_S before adaptive average pooling
    detail_stride: int = 0  # 0: one s per image (paper); N: one s per N x N pixels (beyond the paper)
    mlp_dim: int = 256  # hidden width of the MLP producing AdaIN's gamma and beta from s
    use_detail: bool = True  # E_S on; False is "without E_S": AdaIN fed from s ~ N(0, 1)
    use_naive: bool = True  # m^ branch on; False drops m^ and the phi(m, m^) term ("without m^ guidance")
    residual: bool = False  # x^ = sigmoid(logit(m) + D_X^A(..)): details added to m (beyond the paper)
    skips: bool = False  # U-Net skips from E_X^A's maps of m into D_X^A's upsampling (beyond the paper)
    lambda_x: float = 10.0  # weight of |x^ - x|_1
    lambda_m: float = 10.0  # weight of |m^ - m|_1
    lambda_s: float = 1.0  # weight of |E_S(x^) - s|_1 (0, beyond the paper: E_S does not collapse; README)
    lambda_s_prior: float = 0.0  # weight of mean(s^2): keeps E_S's codes at N(0, 1)'s scale; 0 = paper
    lambda_s_random: float = 0.0  # weight of MUNIT's |E_S(D_X^A(E_X^A(m), r)) - r|, r ~ N(0, 1); 0 = paper
    detail_judge: bool = False  # True: no gradient into E_S through E_S(x^) in |E_S(x^) - s| (losses.py)
    lambda_ssim: float = 0.0  # weight of 1 - SSIM(x^, x) (beyond the paper; Bergmann et al. 2018); 0 = paper
    lambda_perceptual: float = 0.0  # weight of phi(x, x^) (the PM distance) as a training loss; 0 = paper
    lambda_adv: float = 0.0  # weight of MUNIT's LSGAN term on x^ (nets/discriminator.py); 0 = paper
    disc_dim: int = 64  # channels of the discriminator's first conv (MUNIT: 64)
    disc_layers: int = 4  # stride-2 conv blocks per discriminator scale (MUNIT: 4)
    disc_scales: int = 3  # discriminator scales, input halved between them (MUNIT: 3)
    disc_lr: float | None = None  # discriminator learning rate (None: train.expert_lr; MUNIT: 1e-4 for both)


@dataclass
class PMConfig:
    backbone: str = "auto"  # vgg19 | efficientnet-lite0 | auto (vgg19 when its weights exist, else effnet)
    vgg_weights: str | None = None  # path to torchvision's vgg19-dcbb9e9d.pth (else torch hub cache)
    allow_random: bool = False  # use random backbone weights when none are found (every output says so)
    layers: list[str] = field(default_factory=lambda: ["conv1_2", "conv2_2", "conv3_4"])  # Sec. 4.1
    layer_weights: list[float] | None = None  # lambda_l per layer (paper: all 1)
    terms: list[str] = field(default_factory=lambda: ["x_xhat", "m_mhat", "x_m"])  # Eq. 8 terms
    distance: str = "perceptual"  # perceptual (Eq. 8) | pixel (L1 in RGB, Table 3's |x - x^| rows)
    input_size: int | None = None  # resize images to this side before the backbone (None: as they are, paper)


@dataclass
class TrainConfig:
    ie_epochs: int = 200  # IE-Net epochs (paper: 200)
    expert_epochs: int = 100  # Expert-Net epochs (not given in the paper)
    batch_size: int = 4  # paper: 4
    ie_optimizer: str = "sgd"  # paper: SGD
    ie_lr: float = 1e-3  # paper: 1e-3
    ie_momentum: float = 0.9  # paper: 0.9
    expert_lr: float = 1e-3  # paper: Adam 1e-3
    expert_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # MUNIT's Adam betas
    augment_flip: bool = False  # random horizontal flips of training images (off: parts have orientation)
    accelerator: str = "auto"  # Lightning Fabric accelerator: cpu | cuda | auto
    devices: int | str = 1  # devices (processes) per node for Fabric; batch_size is per device
    num_nodes: int = 1  # machines; with torchrun / a cluster launcher Fabric reads the rank from the env
    strategy: str = "auto"  # Fabric strategy: auto (ddp when devices * num_nodes > 1), ddp, ...
    precision: str = "32-true"  # Fabric precision, e.g. bf16-mixed on GPUs
    threads: int | None = None  # torch CPU threads (None: torch's default)
    channels_last: bool = False  # channels-last memory format (faster convolutions on some CPUs)
    max_minutes: float | None = None  # stop a stage early after this many minutes (checkpoint kept)
    lr_schedule: str = "constant"  # constant (paper) | cosine: lr decays to 0 over each stage's epochs
    expert_crop: int | None = None  # stage 2 on random crops of this side from the (x, m) pairs (None: whole)
    val_fidelity: bool = True  # after every epoch, phi(x, m) and phi(x, x^) on the validation images


@dataclass
class DetectConfig:
    alpha: float = 0.5  # segmentation threshold on the normalised map (Eq. 9)
    normalisation: str = "quantile"  # quantile: normal-pixel quantile -> norm_value | minmax over validation
    quantile: float = 0.999  # quantile of held-out normal pixels mapped to norm_value
    norm_value: float = 0.5  # the normalised value of that quantile (alpha = 0.5: segment above it)
    smooth_sigma: float = 4.0  # Gaussian sigma before the image score (max), in px of a 256 px image; 0 = off
    score: str = "max"  # image score from the smoothed map: max (MVTec reference) | mean | topk
    top_k: float = 0.01  # score=topk: the share of highest pixels averaged (0.01: the top 1 %)
    open_px: int = 0  # beyond the paper: grey opening of e with a (2r+1)-px square, r in model px; 0 = off
    map_sigma: float = 0.0  # beyond the paper: Gaussian sigma on e itself (after open_px), px of 256; 0 = off


@dataclass
class AEConfig:
    """The convolutional autoencoder of Bergmann et al. 2018 (methods ``ae-l2`` and ``ae-ssim``)."""

    width: int = (
        32  # channels of the first conv (Bergmann: 32); Table 4's AE-64/128/256 are widths 64/128/256
    )
    latent_dim: int = 100  # size of the bottleneck code (Bergmann: 100 for MVTec objects)
    epochs: int = 200  # Bergmann: 200
    batch_size: int = 16  # Bergmann: 128 over 10 000 augmented patches; 16 here over ~200 whole images
    lr: float = 2e-4  # Adam learning rate (Bergmann: 2e-4)
    weight_decay: float = 1e-5  # Adam weight decay (Bergmann: 1e-5)
    ssim_window: int = 11  # SSIM window side k, for the ae-ssim loss and map (Bergmann: 11)
    ssim_sigma: float = 1.5  # Gaussian SSIM window (Wang et al. 2004); 0 = uniform k x k window
    negative_slope: float = 0.2  # LeakyReLU slope (Bergmann: 0.2)


@dataclass
class FeatureConfig:
    """Pretrained-feature statistics: ``feature-knn`` (PatchCore-style) and ``feature-gaussian`` (PaDiM-style)."""

    backbone: str = "efficientnet-lite0"  # vgg19 | efficientnet-lite0 (offline ImageNet weights)
    layers: list[str] = field(default_factory=lambda: ["block4", "block10"])  # layers read (mid-level)
    grid_stride: int = 8  # every layer's map is resized to image_size / grid_stride positions per side
    neighbourhood: int = 3  # locally aware patch features: p x p average over each layer's map (PatchCore: 3)
    k: int = 1  # feature-knn: neighbours averaged for a patch's distance (PatchCore: 1)
    coreset_ratio: float = 0.1  # feature-knn: memory bank = this share of training patches (PatchCore: 0.1)
    coreset_max: int | None = None  # feature-knn: cap on the bank size (None: no cap)
    coreset_projection: int = 128  # feature-knn: random projection dims for the selection (PatchCore: 128)
    coreset: str = "greedy"  # feature-knn: greedy (farthest point, PatchCore Alg. 1) | random | none
    channels: int = 100  # feature-gaussian: random subset of feature channels (PaDiM: 100 for ResNet18)
    eps: float = 0.01  # feature-gaussian: covariance regularisation eps * I (PaDiM: 0.01)
    smooth_map: bool = True  # smooth the map itself with detect.smooth_sigma, as PatchCore and PaDiM do


@dataclass
class UtadConfig:
    seed: int = 0  # seeds torch, numpy and data splits; CPU runs repeat exactly
    method: str = "utad"  # utad | ae-l2 | ae-ssim | feature-knn | feature-gaussian (utad.methods)
    data: DataConfig = field(default_factory=DataConfig)
    ienet: IENetConfig = field(default_factory=IENetConfig)
    expert: ExpertNetConfig = field(default_factory=ExpertNetConfig)
    pm: PMConfig = field(default_factory=PMConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    ae: AEConfig = field(default_factory=AEConfig)  # used by method ae-l2 / ae-ssim only
    feature: FeatureConfig = field(
        default_factory=FeatureConfig
    )  # used by feature-knn / feature-gaussian only


def _build(cls: type, values: dict[str, Any], where: str, key: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``; errors read ``<where>: <key path>: <problem>``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(key + u for u in unknown)}; valid: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for k, v in values.items():
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            kwargs[k] = _build(hint, v, where, f"{key}{k}.")
        else:
            kwargs[k] = _coerce(v, hint, f"{where}: {key}{k}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (int, float, str, bool, list, Optional/Union)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def to_dict(cfg: UtadConfig) -> dict[str, Any]:
    """The config as plain nested dicts (YAML/JSON-ready)."""
    return dataclasses.asdict(cfg)


def from_dict(values: dict[str, Any], where: str = "config") -> UtadConfig:
    """Build a ``UtadConfig`` from nested dicts, filling unspecified fields with defaults; then ``validate``."""
    return validate(_build(UtadConfig, values or {}, where), where)


_CHOICES = {
    "method": ("utad", "ae-l2", "ae-ssim", "feature-knn", "feature-gaussian"),
    "feature.backbone": ("vgg19", "efficientnet-lite0"),
    "feature.coreset": ("greedy", "random", "none"),
    "data.source": ("demo", "mvtec", "folder", "mnist", "fashion-mnist", "cifar10"),
    "data.channels": (1, 3),
    "ienet.decoder_input": ("spatial", "global"),
    "ienet.global_pool": ("mean", "flatten"),
    "pm.backbone": ("vgg19", "efficientnet-lite0", "auto"),
    "pm.distance": ("perceptual", "pixel"),
    "train.ie_optimizer": ("sgd", "adam"),
    "train.lr_schedule": ("constant", "cosine"),
    "detect.normalisation": ("quantile", "minmax"),
    "detect.score": ("max", "mean", "topk"),
}


def validate(cfg: UtadConfig, where: str = "config") -> UtadConfig:
    """Check values that types alone do not catch; the first problem is a ``ConfigError`` naming the key."""

    def get(key: str) -> Any:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def fail(key: str, problem: str) -> None:
        raise ConfigError(f"{where}: {key}: {problem} (got {get(key)!r})")

    for key, choices in _CHOICES.items():
        if get(key) not in choices:
            fail(key, f"must be one of {', '.join(map(str, choices))}")
    positive = ["train.ie_epochs", "train.batch_size", "train.ie_lr", "data.image_size", "ienet.blocks"]
    positive += ["ienet.width", "ienet.z_dim"]
    if cfg.expert.enabled:
        positive += ["train.expert_epochs", "train.expert_lr", "expert.dim", "expert.detail_dim"]
    for key in positive:
        if get(key) <= 0:
            fail(key, "must be greater than 0")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        fail("data.val_fraction", "must be between 0 and 1 (held-out normal images normalise the maps)")
    if not 0.0 < cfg.detect.quantile < 1.0:
        fail("detect.quantile", "must be between 0 and 1")
    if not 0.0 < cfg.detect.top_k <= 1.0:
        fail("detect.top_k", "must be in (0, 1] (a share of the pixels)")
    if cfg.detect.smooth_sigma < 0:
        fail("detect.smooth_sigma", "must be 0 (off) or more")
    if cfg.detect.open_px < 0:
        fail("detect.open_px", "must be 0 (off) or more")
    if cfg.detect.map_sigma < 0:
        fail("detect.map_sigma", "must be 0 (off) or more")
    if cfg.method in ("ae-l2", "ae-ssim"):
        for key in ("ae.width", "ae.latent_dim", "ae.epochs", "ae.batch_size", "ae.lr", "ae.ssim_window"):
            if get(key) <= 0:
                fail(key, "must be greater than 0")
        if cfg.data.image_size % 16 or cfg.data.image_size < 32:
            fail(
                "data.image_size", "must be a multiple of 16, at least 32 (the autoencoder halves it 4 times)"
            )
        return cfg
    if cfg.method in ("feature-knn", "feature-gaussian"):
        for key in ("feature.grid_stride", "feature.neighbourhood", "feature.k", "feature.channels"):
            if get(key) <= 0:
                fail(key, "must be greater than 0")
        if not 0.0 < cfg.feature.coreset_ratio <= 1.0:
            fail("feature.coreset_ratio", "must be in (0, 1]")
        if not cfg.feature.layers:
            fail("feature.layers", "must name at least one backbone layer")
        if cfg.data.image_size % cfg.feature.grid_stride:
            fail("data.image_size", f"must be divisible by feature.grid_stride {cfg.feature.grid_stride}")
        return cfg
    stride = 2**cfg.ienet.blocks
    if cfg.expert.enabled:
        stride = max(stride, 2**cfg.expert.downsample)
    if cfg.data.image_size % stride:
        fail("data.image_size", f"must be divisible by {stride} (the networks halve it that often)")
    if cfg.expert.enabled and cfg.expert.lambda_adv < 0:
        fail("expert.lambda_adv", "must be 0 (off) or more")
    if cfg.expert.enabled and cfg.expert.detail_stride:
        unit = 2 ** (cfg.expert.detail_layers - 1)
        if cfg.expert.detail_stride < 0 or cfg.expert.detail_stride % unit:
            fail(
                "expert.detail_stride",
                f"must be 0 (one s per image) or a positive multiple of {unit} (E_S's stride)",
            )
        if cfg.data.image_size % cfg.expert.detail_stride:
            fail("expert.detail_stride", f"must divide data.image_size {cfg.data.image_size}")
    if cfg.ienet.lambda_ssim < 0:
        fail("ienet.lambda_ssim", "must be 0 (off) or more")
    if not 0 <= cfg.ienet.train_defects <= 1:
        fail("ienet.train_defects", f"must be a probability in [0, 1], got {cfg.ienet.train_defects}")
    for key in ("lambda_s_prior", "lambda_s_random", "lambda_ssim"):
        if cfg.expert.enabled and getattr(cfg.expert, key) < 0:
            fail(f"expert.{key}", "must be 0 (off) or more")
    if cfg.expert.enabled and cfg.expert.lambda_adv > 0:
        for key in ("expert.disc_dim", "expert.disc_layers", "expert.disc_scales"):
            if get(key) <= 0:
                fail(key, "must be greater than 0 when expert.lambda_adv > 0")
        if cfg.expert.disc_lr is not None and cfg.expert.disc_lr <= 0:
            fail("expert.disc_lr", "must be null (Expert-Net's learning rate) or greater than 0")
        if cfg.train.devices not in (1, "1") or cfg.train.num_nodes != 1:
            fail(
                "train.devices",
                "must be 1 with expert.lambda_adv > 0 (the adversarial term runs in one process)",
            )
    crop = cfg.train.expert_crop
    if crop is not None and (crop <= 0 or crop > cfg.data.image_size or crop % 2**cfg.expert.downsample):
        fail(
            "train.expert_crop",
            f"must be null or a side <= data.image_size divisible by {2**cfg.expert.downsample}",
        )
    if (
        crop is not None
        and cfg.expert.enabled
        and cfg.expert.detail_stride
        and crop % cfg.expert.detail_stride
    ):
        fail("train.expert_crop", f"must be divisible by expert.detail_stride {cfg.expert.detail_stride}")
    return cfg


def preset_path(name_or_path: str | os.PathLike) -> Path:
    """A preset name (``paper-mvtec``) or a YAML file path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        return p
    cand = PRESETS_DIR / f"{name_or_path}.yaml"
    if not cand.is_file():
        raise ConfigError(
            f"unknown preset {name_or_path!r}; presets: {', '.join(preset_names()) or 'none found'}"
        )
    return cand


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section (a nested mapping merges, any other value replaces)."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def read_preset(preset: str | os.PathLike, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's values (name or YAML path). A preset may start from another with ``extends: NAME`` (a preset
    name, or a YAML path relative to the extending file): its values, then the extending file's over them."""
    path = preset_path(preset)
    if str(path.resolve()) in _chain:
        raise ConfigError(f"{path}: 'extends' goes round in a circle ({' -> '.join([*_chain, str(path)])})")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: 'extends' must name a preset or a YAML file, got {base!r}")
    if Path(base).suffix in (".yaml", ".yml") and not Path(base).is_absolute():
        base = str(path.parent / base)
    return _merged(read_preset(base, (*_chain, str(path.resolve()))), values)


def load_config(preset: str | os.PathLike | None = None, overrides: list[str] | None = None) -> UtadConfig:
    """Defaults, then the preset (name or YAML path, ``extends`` resolved), then ``section.field=value``
    overrides."""
    values: dict[str, Any] = {}
    where = "config"
    if preset is not None:
        where = str(preset_path(preset))
        values = read_preset(preset)
    for item in overrides or []:
        apply_override(values, item)
    if overrides:
        where = f"{where} with overrides"
    return from_dict(values, where)


def apply_override(values: dict[str, Any], item: str) -> None:
    """Apply one ``a.b=value`` override to nested dicts (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.field=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = values
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {p} is not a section")
    node[parts[-1]] = value


def dump_yaml(cfg: UtadConfig) -> str:
    """The resolved config as YAML (written next to every run's outputs)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
