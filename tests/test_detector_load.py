"""Detector.load and Detector.predict on hand-made run folders: what is loaded, what is refused, and that file
prediction gives the same result as the tensor path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import save
from detector_runs import STORED_NORM, hand_made_run
from utad.config import load_config
from utad.detector import Detector, gaussian_kernel, resolve_device
from utad.errors import UtadError


@pytest.mark.parametrize(
    "changes,stage",
    [({"stage": "expert", "norm": None}, "expert"), ({"norm": None}, "done"), ({"stage": "ienet"}, "ienet")],
)
def test_unfinished_runs_are_refused_with_their_stage(tmp_path, changes, stage):
    hand_made_run(tmp_path, **changes)
    with pytest.raises(UtadError) as err:
        Detector.load(tmp_path)
    assert str(err.value) == f"{tmp_path}: training has not finished (stage {stage}); resume it first"


def test_load_restores_both_networks_the_size_and_the_config(tmp_path):
    _, expert = hand_made_run(tmp_path)
    det = Detector.load(tmp_path)
    assert det.expert is not None and not det.training
    for name, w in expert.state_dict().items():
        assert torch.equal(det.expert.state_dict()[name], w), name
    assert torch.allclose(det.kernel, gaussian_kernel(det.detect.smooth_sigma * 32 / 256))  # 32 px, not 256
    assert det.config.data.image_size == 32 and det.backbone.name == "efficientnet-lite0"
    assert str(det.kernel.device) == resolve_device("auto")  # the CPU here, the GPU where torch sees one


def test_load_without_expert(tmp_path):
    hand_made_run(tmp_path, ["expert.enabled=false"])
    det = Detector.load(tmp_path)
    assert det.expert is None and det.pm.terms == ("x_m",)


def test_auto_backbone_follows_the_checkpoint_and_a_mismatch_is_refused(tmp_path):
    hand_made_run(tmp_path / "a")
    assert Detector.load(tmp_path / "a").backbone.name == "efficientnet-lite0"
    info = {"name": "resnet-x", "weights": "elsewhere.pth", "pretrained": True, "layers": ["l1"]}
    hand_made_run(tmp_path / "b", ["pm.backbone=efficientnet-lite0"], backbone=info)
    with pytest.raises(UtadError) as err:
        Detector.load(tmp_path / "b")
    assert str(err.value) == (
        f"{tmp_path / 'b'}: trained with backbone resnet-x but efficientnet-lite0 is what loads here; pass the "
        "same weights (--vgg-weights) or set pm.backbone"
    )


def test_pixel_distance_run_loads_without_a_backbone(tmp_path):
    hand_made_run(tmp_path, ["pm.distance=pixel"])
    det = Detector.load(tmp_path)
    assert det.backbone.name == "none" and det.config.pm.backbone == "auto"


def test_baseline_runs_load_through_their_method(tmp_path):
    from utad.methods.autoencoder import AEDetector, build_autoencoder
    from utad.methods.train import _save
    from utad.nets.perceptual import BackboneInfo

    cfg = load_config("ae-l2", ["data.image_size=32", "ae.width=4"])
    torch.manual_seed(1)
    net = build_autoencoder(32, cfg.data.channels, cfg.ae)
    _save(
        tmp_path,
        cfg,
        "done",
        0,
        net.state_dict(),
        None,
        BackboneInfo("none", "-", False, []),
        STORED_NORM,
        {},
        "x",
    )
    det = Detector.load(tmp_path)
    assert isinstance(det, AEDetector) and det.norm == STORED_NORM
    for name, w in net.state_dict().items():
        assert torch.equal(det.net.state_dict()[name], w), name


def test_predict_files_equals_the_tensor_path(tmp_path):
    from utad.data.images import load_image

    hand_made_run(tmp_path / "run")
    det = Detector.load(tmp_path / "run")
    rng = np.random.default_rng(0)
    files = [
        save(tmp_path / f"img{i}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for i in range(3)
    ]
    preds = det.predict(files, batch_size=2)  # batches of 2 and 1; float sums differ with the batch (1e-4)
    assert [p.path for p in preds] == [str(f) for f in files]
    x = torch.from_numpy(np.stack([load_image(str(f), 32, 3) for f in files]).transpose(0, 3, 1, 2).copy())
    ref = det.predict_tensor(x)
    for p, q in zip(preds, ref, strict=True):
        assert p.score == pytest.approx(q.score, rel=1e-4) and p.anomaly_map.shape == (32, 32)
        np.testing.assert_allclose(p.anomaly_map, q.anomaly_map, rtol=1e-4, atol=1e-6)
        assert np.array_equal(p.mask, p.anomaly_map > det.detect.alpha)
        assert p.is_anomaly == (p.score > det.detect.alpha)
        assert p.image.shape == (32, 32, 3) and p.reconstruction.shape == (32, 32, 3)
    det.config = None
    with pytest.raises(UtadError, match=r"^detector has no config: load it with Detector.load\(run\)$"):
        det.predict(files)


def test_load_moves_the_detector_to_the_requested_device(tmp_path):
    """``device`` reaches every method's detector (the meta device stands in for a GPU on a CPU machine)."""
    from utad.methods.autoencoder import build_autoencoder
    from utad.methods.train import _save
    from utad.nets.perceptual import BackboneInfo

    hand_made_run(tmp_path / "utad")
    det = Detector.load(tmp_path / "utad", device="meta")
    assert {p.device.type for p in det.parameters()} == {"meta"} and det.kernel.device.type == "meta"
    cfg = load_config("ae-l2", ["data.image_size=32", "ae.width=4"])
    net = build_autoencoder(32, cfg.data.channels, cfg.ae)
    info = BackboneInfo("none", "-", False, [])
    _save(tmp_path / "ae", cfg, "done", 0, net.state_dict(), None, info, STORED_NORM, {}, "x")
    det = Detector.load(tmp_path / "ae", device="meta")
    assert {p.device.type for p in det.parameters()} == {"meta"}


def test_device_auto_picks_the_gpu_only_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device(" CPU ") == "cpu"
    with pytest.raises(
        UtadError, match=r"^device cuda: torch sees 0 CUDA device\(s\) \(use --device cpu or auto\)$"
    ):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UtadError, match="device cuda:2: torch sees 2 CUDA device"):
        resolve_device("cuda:2")
    with pytest.raises(UtadError, match=r"device 'tpu': use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")


def test_load_puts_every_part_on_the_device_asked(tmp_path, monkeypatch):
    hand_made_run(tmp_path)
    det = Detector.load(tmp_path, "cpu")
    assert {str(t.device) for t in [*det.parameters(), *det.buffers()]} == {"cpu"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UtadError, match="device cuda: torch sees 0"):
        Detector.load(tmp_path, "cuda")
