"""Building UTAD's networks from a config (one place, used by training, the detector and export)."""

from __future__ import annotations

from utad.config import UtadConfig
from utad.nets.expert_net import ExpertNet
from utad.nets.ie_net import IENet
from utad.nets.perceptual import BackboneInfo, PerceptualMeasurement, load_backbone


def build_ienet(cfg: UtadConfig) -> IENet:
    c = cfg.ienet
    return IENet(
        image_size=cfg.data.image_size,
        in_channels=cfg.data.channels,
        blocks=c.blocks,
        width=c.width,
        max_width=c.max_width,
        z_dim=c.z_dim,
        mlp_hidden=c.mlp_hidden,
        t_hidden=c.t_hidden,
        fc_channels=c.fc_channels,
        negative_slope=c.negative_slope,
        decoder_input=c.decoder_input,
        global_pool=c.global_pool,
    )


def build_expert(cfg: UtadConfig) -> ExpertNet | None:
    c = cfg.expert
    if not c.enabled:
        return None
    return ExpertNet(
        in_channels=cfg.data.channels,
        dim=c.dim,
        downsample=c.downsample,
        res_blocks=c.res_blocks,
        detail_dim=c.detail_dim,
        detail_layers=c.detail_layers,
        mlp_dim=c.mlp_dim,
        use_detail=c.use_detail,
        use_naive=c.use_naive,
        residual=c.residual,
        skips=c.skips,
        detail_stride=c.detail_stride,
    )


def pm_terms(cfg: UtadConfig) -> list[str]:
    """The Eq. 8 terms this model can compute: no Expert-Net -> only phi(x, m); no m^ -> no phi(m, m^)."""
    terms = list(cfg.pm.terms)
    if not cfg.expert.enabled:
        terms = ["x_m"]
    elif not cfg.expert.use_naive:
        terms = [t for t in terms if t != "m_mhat"] or ["x_m"]
    return terms


def build_pm(cfg: UtadConfig) -> tuple[PerceptualMeasurement, BackboneInfo]:
    """The Perceptual Measurement with its (frozen, pretrained unless asked otherwise) backbone."""
    p = cfg.pm
    if p.distance == "pixel":
        info = BackboneInfo("none", "-", False, [])
        return PerceptualMeasurement(None, [], None, pm_terms(cfg)), info
    if p.distance != "perceptual":
        from utad.errors import ConfigError

        raise ConfigError(f"pm.distance must be perceptual or pixel, got {p.distance!r}")
    backbone, info = load_backbone(p.backbone, p.layers, p.vgg_weights, p.allow_random)
    pm = PerceptualMeasurement(backbone, info.layers, p.layer_weights, pm_terms(cfg), p.input_size)
    return pm, info
