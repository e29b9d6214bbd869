"""Each loss against a hand computation on tiny tensors."""

import math

import pytest
import torch

from utad.losses import derangement, expert_loss, ie_loss, kl_loss, mi_loss
from utad.nets.expert_net import ExpertNet
from utad.nets.ie_net import IENet


def test_mi_loss_is_eq4():
    t_pos, t_neg = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])
    sig = torch.sigmoid
    expected = -(torch.log(sig(t_pos))).mean() - torch.log(1 - sig(t_neg)).mean()
    assert torch.allclose(mi_loss(t_pos, t_neg), expected)
    # equals Deep InfoMax's JSD estimator plus 2 log 2
    sp = torch.nn.functional.softplus
    jsd = (sp(-t_neg) + t_neg - math.log(2)).mean() - (math.log(2) - sp(-t_pos)).mean()
    assert torch.allclose(mi_loss(t_pos, t_neg), jsd + 2 * math.log(2))


def test_kl_by_hand():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # KL(N(1,1)||N(0,1)) = 0.5; KL(N(0,4)||N(0,1)) = 0.5 * (4 - 1 - log 4)
    expected = 0.5 + 0.5 * (4 - 1 - math.log(4))
    assert kl_loss(mu, logvar).item() == pytest_approx(expected)


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-6)


def test_derangement_has_no_fixed_point():
    for n in range(2, 9):
        p = derangement(n)
        assert sorted(p.tolist()) == list(range(n)) and not (p == torch.arange(n)).any()


def tiny_ienet() -> IENet:
    """A 16 px IE-Net small enough for hand checks, seeded."""
    torch.manual_seed(0)
    return IENet(16, blocks=2, width=4, max_width=16, z_dim=4, mlp_hidden=8, t_hidden=8, fc_channels=4)


def test_ie_loss_combines_terms_with_weights():
    net = tiny_ienet()
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    total, parts, out = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0)
    assert parts["rec"] == pytest_approx((out.m - x).abs().mean().item())
    assert parts["kl"] == pytest_approx(kl_loss(out.mu, out.logvar).item())
    assert total.item() == pytest_approx(parts["info"] + 0.5 * parts["kl"] + 3.0 * parts["rec"])
    _total2, parts2, _ = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0, use_info=False)
    assert "info" not in parts2


def test_expert_loss_by_hand():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8)
    x, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    total, parts, out = expert_loss(net, x, m, lambda_x=2.0, lambda_m=3.0, lambda_s=4.0)
    lx = (out.x_hat - x).abs().mean().item()
    lm = (out.m_hat - m).abs().mean().item()
    ls = (net.detail_vector(out.x_hat) - out.s).abs().mean().item()
    assert (
        parts["x"] == pytest_approx(lx)
        and parts["m"] == pytest_approx(lm)
        and parts["s"] == pytest_approx(ls)
    )
    assert total.item() == pytest_approx(2 * lx + 3 * lm + 4 * ls)


def test_kl_sums_channels_and_averages_batch_and_positions():
    # (B=2, C=2, 1, 2): per position KL = sum over channels of 0.5 * (mu^2 + var - 1 - logvar)
    mu = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]], [[[0.0, 0.0]], [[-3.0, 0.0]]]])
    logvar = torch.zeros_like(mu)
    logvar[0, 1, 0, 0] = math.log(4.0)
    per_elem = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
    expected = per_elem.sum(dim=1).mean().item()  # sum(channels) then mean over B * positions = 4 values
    assert expected == pytest_approx((4 + (4 - 1 - math.log(4)) + 0 + 1 + 0 + 9 + 0 + 0) / 2 / 4)
    assert kl_loss(mu, logvar).item() == pytest_approx(expected)


def test_derangement_of_one_and_its_generator():
    assert derangement(1).tolist() == [0]
    a = derangement(7, torch.Generator().manual_seed(3))
    assert torch.equal(a, derangement(7, torch.Generator().manual_seed(3)))  # the generator drives it
    seen = {tuple(derangement(7, torch.Generator().manual_seed(s)).tolist()) for s in range(20)}
    assert len(seen) > 1  # ... and different seeds give different shuffles


def test_ie_info_term_by_hand_with_the_same_random_draws():
    """L_tM from T(x, E_M(x)) on matched pairs and T(x~, z~) with x~ the deranged batch and z~ = mu + eps*sigma."""
    net = tiny_ienet()
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(5)
    total, parts, _ = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0)
    assert parts["total"] == pytest_approx(total.item())
    torch.manual_seed(5)
    out = net(x)
    perm = derangement(4)
    z_tilde = out.mu + torch.randn_like(out.mu) * torch.exp(0.5 * out.logvar)
    expected = mi_loss(net.critic(out.g, out.z), net.critic(out.g[perm], z_tilde))
    assert parts["info"] == pytest_approx(expected.item())
    # a batch of one has no negative: the term is dropped, whatever the number of channels
    _, parts1, _ = ie_loss(net, x[:1], lambda_kl=0.5, lambda_rec=3.0)
    assert "info" not in parts1 and parts1["total"] == pytest_approx(0.5 * parts1["kl"] + 3.0 * parts1["rec"])


class _ScaledL1:
    """A stand-in PerceptualMeasurement: feature_loss(a, b) = 10 * mean |a - b|."""

    def feature_loss(self, a, b):
        return 10 * (a - b).abs().mean()


def test_expert_perceptual_term_only_when_asked():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8)
    x, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    plain, parts, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0)
    assert "p" not in parts and parts["total"] == pytest_approx(plain.item())
    off, parts_off, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, perceptual=_ScaledL1())
    assert "p" not in parts_off and off.item() == pytest_approx(plain.item())  # lambda_p defaults to 0
    none, parts_none, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, perceptual=None, lambda_p=0.5)
    assert "p" not in parts_none and none.item() == pytest_approx(plain.item())
    with_p, parts_p, out = expert_loss(net, x, m, 2.0, 3.0, 4.0, perceptual=_ScaledL1(), lambda_p=0.5)
    assert parts_p["p"] == pytest_approx(10 * (out.x_hat - x).abs().mean().item())
    assert with_p.item() == pytest_approx(plain.item() + 0.5 * parts_p["p"])


def test_info_term_from_a_batch_of_two():
    net = tiny_ienet()
    _, parts, _ = ie_loss(net, torch.rand(2, 3, 16, 16), lambda_kl=0.5, lambda_rec=3.0)
    assert "info" in parts  # two images are enough for one negative pair each


def test_detail_judge_stops_the_gradient_into_e_s_only_through_e_s_of_x_hat():
    import copy

    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8)
    x, m = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)

    def grads(**kw):
        net.zero_grad()
        loss, parts, out = expert_loss(net, x, m, 0.0, 0.0, 1.0, **kw)
        loss.backward()
        return parts, out, {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}

    parts_j, _, judged = grads(detail_judge=True)
    # by hand: the same term with a frozen copy of E_S as the judge
    net.zero_grad()
    out = net(x, m)
    judge = copy.deepcopy(net.detail).requires_grad_(False)
    term = (judge(out.x_hat * 2 - 1) - out.s.detach()).abs().mean()
    term.backward()
    assert parts_j["s"] == pytest.approx(float(term), rel=1e-6)
    for k, p in net.named_parameters():  # (the m^ branch, weighted 0 here, has no gradient by hand)
        expected = torch.zeros_like(p) if p.grad is None else p.grad
        assert torch.allclose(judged.get(k, torch.zeros_like(p)), expected, atol=1e-7), k
    assert judged["detail.net.0.conv.weight"].abs().sum() > 0  # E_S still learns through s -> AdaIN -> x^
    parts_b, _, both = grads()
    assert parts_b["s"] == pytest.approx(parts_j["s"])  # the same value, other gradients
    assert not torch.allclose(both["detail.net.0.conv.weight"], judged["detail.net.0.conv.weight"])


def test_the_detail_prior_adds_the_mean_square_of_s_only_when_asked():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8).eval()
    x, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    plain, parts, out = expert_loss(net, x, m, 2.0, 3.0, 4.0)
    assert "s_prior" not in parts
    total, parts, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, out=out, lambda_s_prior=0.5)
    expected = (out.s**2).mean().item()
    assert parts["s_prior"] == pytest.approx(expected) and expected > 0
    assert total.item() == pytest.approx(plain.item() + 0.5 * expected)
    total.backward()
    assert net.detail.net[0].conv.weight.grad.abs().sum() > 0  # it reaches E_S


@pytest.mark.parametrize(
    "key", ["expert.lambda_s_prior", "expert.lambda_s_random", "expert.lambda_ssim", "ienet.lambda_ssim"]
)
def test_a_negative_loss_weight_is_refused(key):
    from utad.config import load_config
    from utad.errors import ConfigError

    with pytest.raises(ConfigError, match=key):
        load_config("cpu-fast", [f"{key}=-1"])


def test_munit_anchor_reads_a_random_code_back_from_a_second_decoding():
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8).eval()
    x, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    plain, parts, out = expert_loss(net, x, m, 2.0, 3.0, 4.0)
    assert "s_random" not in parts
    torch.manual_seed(5)
    total, parts, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, out=out, lambda_s_random=0.5)
    torch.manual_seed(5)
    r = torch.randn(2, 3)
    expected = (net.detail_vector(net.reconstruct(m, r)) - r).abs().mean().item()
    assert parts["s_random"] == pytest.approx(expected) and expected > 0
    assert total.item() == pytest.approx(plain.item() + 0.5 * expected)


def test_ie_loss_adds_the_structural_term_only_when_asked():
    from utad.ssim import ssim_loss

    net = tiny_ienet()
    x = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    total, parts, out = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0, lambda_ssim=2.0)
    structure = ssim_loss(out.m, x).item()
    assert parts["ssim"] == pytest_approx(structure) and 0 < structure < 2
    assert total.item() == pytest_approx(
        parts["info"] + 0.5 * parts["kl"] + 3.0 * parts["rec"] + 2 * structure
    )
    torch.manual_seed(1)
    _, plain, _ = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0)
    assert "ssim" not in plain


def test_expert_loss_adds_the_structural_term_on_x_hat_only_when_asked():
    from utad.ssim import ssim_loss

    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8)
    x, m = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    plain, parts, out = expert_loss(net, x, m, 2.0, 3.0, 4.0)
    total, parts2, _ = expert_loss(net, x, m, 2.0, 3.0, 4.0, out=out, lambda_ssim=5.0)
    structure = ssim_loss(out.x_hat, x).item()
    assert "ssim" not in parts and parts2["ssim"] == pytest_approx(structure) and 0 < structure < 2
    assert total.item() == pytest_approx(plain.item() + 5.0 * structure)


def test_ie_loss_encodes_x_in_but_compares_the_impression_with_the_clean_x():
    net = tiny_ienet()
    x = torch.rand(4, 3, 16, 16)
    x_in = x.clone()
    x_in[:, :, 4:8, 4:8] = 1.0  # a "defect" the target does not have
    torch.manual_seed(1)
    _, parts, out = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0, lambda_ssim=2.0, x_in=x_in)
    torch.manual_seed(1)
    expected = net(x_in)
    assert torch.allclose(out.m, expected.m)  # E_M saw x_in
    assert parts["rec"] == pytest_approx((out.m - x).abs().mean().item())  # L1 against the clean x
    torch.manual_seed(1)
    *_, plain_out = ie_loss(net, x, lambda_kl=0.5, lambda_rec=3.0, lambda_ssim=2.0)
    assert not torch.allclose(plain_out.m, out.m)
