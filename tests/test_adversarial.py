"""The optional adversarial term on x^ (MUNIT's multi-scale LSGAN discriminator; beyond the paper, off in every
preset): shapes, the two LSGAN losses by hand, what each update may change, training and resuming with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import TRAIN_TINY
from utad.checkpoint import load_checkpoint, save_checkpoint
from utad.cli import main
from utad.config import load_config
from utad.errors import ConfigError
from utad.losses import expert_loss
from utad.nets.discriminator import MsImageDis, lsgan_d_loss, lsgan_g_loss
from utad.nets.expert_net import ExpertNet, ExpertOutput
from utad.train import _discriminator_step


def test_scales_halve_the_input_and_each_layer_halves_again():
    dis = MsImageDis(3, dim=4, layers=3, scales=3)
    outs = dis(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    assert [n[0].out_channels for n in dis.nets] == [4, 4, 4] and dis.nets[0][4].out_channels == 16
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in dis.modules())
    weights = torch.cat([m.weight.flatten() for m in dis.modules() if isinstance(m, torch.nn.Conv2d)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.1) and abs(weights.mean().item()) < 2e-3
    assert all(not m.bias.any() for m in dis.modules() if isinstance(m, torch.nn.Conv2d))


def test_each_scale_sees_the_input_average_pooled_3x3_stride_2_without_the_padding():
    dis = MsImageDis(3, dim=4, layers=1, scales=3)
    dis.nets = torch.nn.ModuleList(torch.nn.Identity() for _ in range(3))  # outputs = what each scale sees
    x = torch.rand(2, 3, 9, 9) + 1.0  # padding counted as zeros would darken the border
    outs = dis(x)
    once = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    assert torch.equal(outs[0], x)
    assert torch.allclose(outs[1], once) and torch.allclose(
        outs[2], F.avg_pool2d(once, 3, 2, 1, count_include_pad=False)
    )
    corner = x[:, :, :2, :2].mean(dim=(2, 3))  # the 3x3 window at (0, 0) holds 4 real pixels
    assert torch.allclose(outs[1][:, :, 0, 0], corner)


class _Fixed(MsImageDis):
    """Two scales whose logits are the input's mean (scale 0) and twice it (scale 1), per image."""

    def forward(self, x):
        v = x.mean(dim=(1, 2, 3), keepdim=True)
        return [v, 2 * v]


def test_lsgan_losses_by_hand():
    dis = _Fixed(3, 1, 1, 1)
    real, fake = torch.full((2, 3, 4, 4), 0.75), torch.full((2, 3, 4, 4), 0.25)
    # D: (0.75 - 1)^2 + 0.25^2 at scale 0, (1.5 - 1)^2 + 0.5^2 at scale 1
    assert lsgan_d_loss(dis, real, fake).item() == pytest.approx(0.0625 + 0.0625 + 0.25 + 0.25)
    # G: (0.25 - 1)^2 + (0.5 - 1)^2: the generator is pushed towards what D calls real
    assert lsgan_g_loss(dis, fake).item() == pytest.approx(0.5625 + 0.25)


def test_generator_term_is_added_with_its_weight_and_reaches_expert_net_only():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8)
    dis = MsImageDis(3, dim=4, layers=2, scales=2)
    x, m = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    plain, _, out = expert_loss(net, x, m, 2.0, 3.0, 4.0)
    off, parts_off, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, adversary=dis, out=out)  # lambda_adv 0
    assert "adv" not in parts_off and off.item() == pytest.approx(plain.item())
    dis.requires_grad_(False)
    total, parts, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, adversary=dis, lambda_adv=0.5, out=out)
    assert parts["adv"] == pytest.approx(lsgan_g_loss(dis, out.x_hat).item())
    assert total.item() == pytest.approx(plain.item() + 0.5 * parts["adv"])
    total.backward()
    assert all(p.grad is None for p in dis.parameters())
    assert all(p.grad is not None for p in net.dec_a.parameters())


def test_a_given_forward_pass_is_used_not_recomputed():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8).eval()
    x, m = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    own = net(x, m)
    given = ExpertOutput(x_hat=x.clone(), m_hat=own.m_hat, s=own.s)  # a perfect x^: L_x must be 0
    _, parts, out = expert_loss(net, x, m, 2.0, 3.0, 4.0, out=given)
    assert out is given and parts["x"] == 0.0
    _, parts_own, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0)
    assert parts_own["x"] > 0.01


def test_discriminator_step_changes_only_the_discriminator_and_lowers_its_loss():
    torch.manual_seed(0)
    dis = MsImageDis(3, dim=4, layers=2, scales=2)
    opt = torch.optim.Adam(dis.parameters(), lr=1e-2)
    real, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16) * 0.2
    fake.requires_grad_(True)
    before = {k: v.clone() for k, v in dis.state_dict().items()}
    first = _discriminator_step(dis, opt, real, fake.detach(), lr=1e-2)
    assert fake.grad is None and opt.param_groups[0]["lr"] == 1e-2
    assert any(not torch.equal(v, before[k]) for k, v in dis.state_dict().items())
    for _ in range(20):
        last = _discriminator_step(dis, opt, real, fake.detach(), lr=1e-2)
    assert last < first  # real and fake are easy to tell apart here


def test_config_refuses_a_negative_weight_and_several_processes():
    assert load_config("cpu-fast").expert.lambda_adv == 0.0 == load_config("paper-mvtec").expert.lambda_adv
    with pytest.raises(ConfigError, match=r"expert.lambda_adv: must be 0 \(off\) or more"):
        load_config("cpu-fast", ["expert.lambda_adv=-1"])
    with pytest.raises(ConfigError, match="train.devices: must be 1 with expert.lambda_adv > 0"):
        load_config("cpu-fast", ["expert.lambda_adv=0.1", "train.devices=2"])
    with pytest.raises(ConfigError, match="expert.disc_lr: must be null"):
        load_config("cpu-fast", ["expert.lambda_adv=0.1", "expert.disc_lr=0"])
    with pytest.raises(ConfigError, match="expert.disc_dim: must be greater than 0"):
        load_config("cpu-fast", ["expert.lambda_adv=0.1", "expert.disc_dim=0"])


ADV = ["--set", "expert.lambda_adv=0.5", "--set", "expert.disc_dim=8", "--set", "expert.disc_layers=2"]
ADV += ["--set", "expert.disc_scales=2", "--set", "expert.disc_lr=0.0002"]


@pytest.mark.slow
def test_training_with_the_term_saves_and_resumes_the_discriminator(tmp_path):
    run = tmp_path / "run"
    assert main([*TRAIN_TINY, *ADV, "--out", str(run)]) == 0
    ckpt = load_checkpoint(run)
    (row,) = ckpt["history"]["expert"][-1:]
    assert row["adv"] > 0 and row["d"] > 0 and "adv" not in ckpt["history"]["ienet"][0]
    assert set(ckpt["disc"]) and ckpt["disc_opt"]["state"]
    assert ckpt["disc_opt"]["param_groups"][0]["lr"] == pytest.approx(2e-4)  # its own rate, constant schedule
    # resume the last stage-2 epoch: the saved discriminator is loaded and trained on, not a fresh one
    ckpt["stage"], ckpt["epoch"], ckpt["norm"] = "expert", 1, None
    ckpt["history"]["expert"] = ckpt["history"]["expert"][:1]
    saved = {k: v.clone() for k, v in ckpt["disc"].items()}
    save_checkpoint(run, ckpt)
    torch.manual_seed(123)
    fresh = MsImageDis(3, 8, 2, 2).state_dict()
    assert main(["train", "--resume", "--out", str(run), "--quiet"]) == 0
    after = load_checkpoint(run)["disc"]
    step = max((after[k] - saved[k]).abs().max().item() for k in saved)
    from_fresh = max((after[k] - fresh[k]).abs().max().item() for k in saved)
    assert 0 < step < 0.02 < 0.1 < from_fresh  # a few Adam steps at lr 1e-3 from the saved weights
