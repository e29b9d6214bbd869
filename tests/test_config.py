import dataclasses

import pytest
import yaml

from utad.config import PRESETS_DIR, UtadConfig, dump_yaml, from_dict, load_config
from utad.errors import ConfigError


def test_every_field_has_a_comment():
    import inspect

    import utad.config as c

    src = inspect.getsource(c)
    classes = (c.DataConfig, c.IENetConfig, c.ExpertNetConfig, c.PMConfig, c.TrainConfig, c.DetectConfig)
    for cls in (*classes, c.AEConfig, c.FeatureConfig):
        for f in dataclasses.fields(cls):
            line = next(ln for ln in src.splitlines() if ln.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{cls.__name__}.{f.name} has no comment"


PRESETS = ["ae-l2", "ae-ssim", "cpu-fast", "cpu-mvtec", "cpu-ssim", "feature-gaussian", "feature-knn"]
PRESETS += ["oneclass-fast"]
PRESETS += ["paper-mvtec", "paper-oneclass"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name):
    cfg = load_config(name)
    assert isinstance(cfg, UtadConfig)
    again = from_dict(yaml.safe_load(dump_yaml(cfg)))
    assert again == cfg


def test_paper_presets_match_the_paper():
    mv = load_config("paper-mvtec")
    assert (mv.data.image_size, mv.ienet.blocks, mv.expert.res_blocks) == (256, 4, 2)
    assert (mv.train.batch_size, mv.train.ie_epochs, mv.train.ie_lr, mv.train.ie_momentum) == (
        4,
        200,
        1e-3,
        0.9,
    )
    oc = load_config("paper-oneclass")
    assert (oc.data.image_size, oc.ienet.blocks, oc.expert.res_blocks) == (64, 3, 1)
    assert oc.expert.downsample == mv.expert.downsample == 3  # Sec. 4.2 changes only the block counts
    fast = load_config("oneclass-fast")
    assert (fast.data.image_size, fast.ienet.blocks, fast.expert.res_blocks) == (64, 3, 1)
    assert fast.data.limit_train == 600 and fast.detect.score == "topk"
    assert fast.expert.residual and fast.expert.skips  # the CPU budget's stable expert (README)
    assert fast.expert.lambda_s_prior == 0.1  # bounds the detail code, which blew up in 5 of 22 v2 cells
    assert oc.expert.lambda_s_prior == 0.0  # not in the paper
    # v4: one code per image, 30 stage-1 epochs (chosen on held-out training images); the paper preset keeps Fig. 3's
    assert (fast.ienet.decoder_input, fast.train.ie_epochs) == ("global", 30)
    assert oc.ienet.decoder_input == "spatial"
    assert not (oc.expert.residual or oc.expert.skips)  # the paper preset stays the paper's


def test_overrides_and_errors(tmp_path):
    cfg = load_config("cpu-fast", ["train.ie_epochs=3", "pm.layers=[conv2_2]", "data.path=/x", "seed=7"])
    assert (
        cfg.train.ie_epochs == 3 and cfg.pm.layers == ["conv2_2"] and cfg.data.path == "/x" and cfg.seed == 7
    )
    with pytest.raises(ConfigError, match="unknown key.*train.bogus"):
        load_config("cpu-fast", ["train.bogus=1"])
    with pytest.raises(ConfigError, match="train.ie_epochs: expected int"):
        load_config("cpu-fast", ["train.ie_epochs=many"])
    with pytest.raises(ConfigError, match="detect.open_px.*must be 0 \\(off\\) or more"):
        load_config("cpu-fast", ["detect.open_px=-1"])
    with pytest.raises(ConfigError, match="detect.map_sigma.*must be 0 \\(off\\) or more"):
        load_config("cpu-fast", ["detect.map_sigma=-2"])
    with pytest.raises(ConfigError, match="expert.detail_stride: must be 0 .* or a positive multiple of 4"):
        load_config("cpu-fast", ["expert.detail_stride=6"])
    with pytest.raises(ConfigError, match="expert.detail_stride: must divide data.image_size 128"):
        load_config("cpu-fast", ["expert.detail_stride=12"])
    with pytest.raises(ConfigError, match="train.expert_crop: must be divisible by expert.detail_stride 16"):
        load_config("cpu-fast", ["expert.detail_stride=16", "train.expert_crop=40"])
    assert (
        load_config("cpu-fast", ["expert.detail_stride=8", "train.expert_crop=64"]).expert.detail_stride == 8
    )
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    assert sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) == PRESETS


def test_cpu_ssim_is_cpu_fast_with_the_structural_term():
    """``extends: cpu-fast``: every value of cpu-fast, and only ienet.lambda_ssim changed."""
    assert load_config("cpu-ssim") == load_config("cpu-fast", ["ienet.lambda_ssim=30"])
    assert load_config("cpu-fast").ienet.lambda_ssim == 0.0


def test_cpu_mvtec_is_cpu_ssim_with_weight_100_and_60_ienet_epochs():
    assert load_config("cpu-mvtec") == load_config(
        "cpu-fast", ["ienet.lambda_ssim=100", "train.ie_epochs=60"]
    )


def test_a_preset_file_may_extend_another(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: cpu-fast\ntrain:\n  ie_epochs: 5\n")
    top = tmp_path / "top.yaml"
    top.write_text("extends: base.yaml\ntrain:\n  expert_epochs: 3\n")  # a path relative to top.yaml
    cfg = load_config(top, ["seed=4"])
    want = load_config("cpu-fast", ["train.ie_epochs=5", "train.expert_epochs=3", "seed=4"])
    assert cfg == want and cfg.train.batch_size == 8  # sections merge: cpu-fast's other train values stay
    base.write_text("extends: top.yaml\n")
    with pytest.raises(ConfigError, match="'extends' goes round in a circle"):
        load_config(top)
    base.write_text("extends: no-such-preset\n")
    with pytest.raises(ConfigError, match="unknown preset 'no-such-preset'"):
        load_config(top)
    base.write_text("extends: [cpu-fast]\n")
    with pytest.raises(ConfigError, match="base.yaml: 'extends' must name a preset or a YAML file"):
        load_config(top)
