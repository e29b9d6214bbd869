"""Forward/backward checks over every network: output shapes, no NaN, every parameter receives a gradient."""

import pytest
import torch

from utad.nets.blocks import AdaINResBlock, ConvBlock, InceptionBlock, ResBlock, SameMaxPool3, adain
from utad.nets.expert_net import DetailExtractor, ExpertNet
from utad.nets.ie_net import IENet


def assert_all_grads(module: torch.nn.Module) -> None:
    missing = [
        n
        for n, p in module.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize(
    "decoder_input,global_pool", [("spatial", "mean"), ("global", "mean"), ("global", "flatten")]
)
@pytest.mark.parametrize("blocks,size", [(4, 32), (3, 16)])
def test_ienet(decoder_input, global_pool, blocks, size):
    torch.manual_seed(0)
    net = IENet(
        size,
        blocks=blocks,
        width=4,
        max_width=32,
        z_dim=8,
        mlp_hidden=16,
        t_hidden=16,
        fc_channels=8,
        decoder_input=decoder_input,
        global_pool=global_pool,
    )
    x = torch.rand(3, 3, size, size)
    out = net(x)
    b = size // 2**blocks if decoder_input == "spatial" else 1
    per_position = 32  # the last block's channels: 4 branches x width 4 x 2**i, capped at max_width
    flat = per_position * (size // 2**blocks) ** 2
    assert out.g.shape == (3, flat if global_pool == "flatten" and b == 1 else per_position, b, b)
    assert out.m.shape == x.shape and out.z.shape == out.mu.shape == out.logvar.shape == (3, 8, b, b)
    assert 0 <= out.m.min() and out.m.max() <= 1 and torch.isfinite(out.m).all()
    t = net.critic(out.g, out.z)
    assert t.shape == (3, b * b)  # one logit of T per position
    (out.m.mean() + t.mean() + out.logvar.mean()).backward()
    assert_all_grads(net)
    net.eval()
    assert torch.equal(net.impression(x), net.impression(x))  # deterministic at inference


def test_ienet_global_code_from_flatten_keeps_where_mean_only_what():
    """ienet.global_pool: moving the encoder's features to other positions leaves the mean-pooled code as it
    was; the flattened one (a dense VAE bottleneck) changes, so the impression can follow the input's layout."""
    torch.manual_seed(0)
    kw = dict(blocks=3, width=2, max_width=8, z_dim=4, mlp_hidden=8, t_hidden=8, fc_channels=4)
    h = torch.rand(1, 8, 2, 2)
    moved = h.roll(1, dims=3)
    for pool, same in (("mean", True), ("flatten", False)):
        net = IENet(16, decoder_input="global", global_pool=pool, **kw)
        net.encoder = torch.nn.Identity()  # encode() now sees h as E_M's output
        mu, mu_moved = net.encode(h)[1], net.encode(moved)[1]
        assert torch.allclose(mu, mu_moved) is same, pool
    with pytest.raises(ValueError, match="global_pool must be mean or flatten"):
        IENet(16, decoder_input="global", global_pool="max", **kw)


@pytest.mark.parametrize("use_detail,use_naive", [(True, True), (False, True), (True, False)])
def test_expert_net(use_detail, use_naive):
    torch.manual_seed(0)
    net = ExpertNet(
        dim=4, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=8, use_detail=use_detail, use_naive=use_naive
    )
    x, m = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = net(x, m)
    assert out.x_hat.shape == x.shape and out.s.shape == (2, 4)
    assert (out.m_hat is not None) == use_naive
    assert torch.isfinite(out.x_hat).all() and 0 <= out.x_hat.min() and out.x_hat.max() <= 1
    loss = out.x_hat.mean() + (out.m_hat.mean() if use_naive else 0)
    if use_detail:
        loss = loss + net.detail_vector(out.x_hat).mean()
    loss.backward()
    assert_all_grads(net)
    if not use_detail:
        net.eval()
        assert torch.equal(net.detail_vector(x), torch.zeros(2, 4))


def test_expert_adain_starts_as_instance_norm():
    net = ExpertNet(dim=4, downsample=1, res_blocks=2, detail_dim=4, mlp_dim=8)
    params = net.mlp(torch.zeros(1, 4))
    c = net.enc_a.out_channels
    g1, b1, g2, b2 = params[:, : 4 * c].split(c, dim=1)
    assert torch.allclose(g1, torch.ones_like(g1), atol=0.05) and torch.allclose(
        b1, torch.zeros_like(b1), atol=0.05
    )
    assert torch.allclose(g2, torch.ones_like(g2), atol=0.05) and torch.allclose(
        b2, torch.zeros_like(b2), atol=0.05
    )


def test_adain_matches_eq7_by_hand():
    k = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])  # mean 4, std sqrt(5)
    out = adain(k, torch.tensor([[2.0]]), torch.tensor([[1.0]]), eps=0.0)
    expected = 2.0 * (k - 4.0) / 5.0**0.5 + 1.0
    assert torch.allclose(out, expected)


def test_same_max_pool3_is_maxpool2d_with_and_without_autograd():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 7)
    x[:, :, 2:6, 1:5] = 0.25  # ties: a flat region, as in a digit's background
    x[0, 0, 0, 0] = float("nan")
    reference = torch.nn.MaxPool2d(3, stride=1, padding=1)
    with torch.no_grad():
        fast = SameMaxPool3()(x)
    assert fast.shape == x.shape
    assert torch.equal(fast.isnan(), reference(x).isnan()) and fast.isnan().sum() == 4
    assert torch.equal(fast.nan_to_num(), reference(x).nan_to_num())
    x = x.nan_to_num().requires_grad_()
    grad = torch.randn(2, 5, 9, 7)
    (mine,) = torch.autograd.grad(SameMaxPool3()(x), x, grad)
    (theirs,) = torch.autograd.grad(reference(x), x, grad)
    assert torch.equal(mine, theirs)


def test_blocks_shapes_and_grads():
    x = torch.rand(2, 8, 16, 16, requires_grad=True)
    for block, shape in [
        (InceptionBlock(8, 16), (2, 16, 16, 16)),
        (ConvBlock(8, 12, 4, stride=2), (2, 12, 8, 8)),
        (ConvBlock(8, 4, 5, norm="ln", upsample=True), (2, 4, 32, 32)),
        (ResBlock(8), (2, 8, 16, 16)),
        (DetailExtractor(8, 4, 3), (2, 3)),
    ]:
        y = block(x)
        assert y.shape == shape and torch.isfinite(y).all()
        y.mean().backward()
        assert_all_grads(block)
    res = AdaINResBlock(8)
    y = res(x, torch.randn(2, res.n_params))
    assert y.shape == x.shape


def test_spatial_detail_code_is_local_and_places_details():
    """``detail_stride``: s is a map of one vector per cell of that many pixels; E_S's code of a cell depends only
    on the pixels near it, and a detail code changed in one cell changes x^ near that cell, not across it."""
    torch.manual_seed(0)
    net = ExpertNet(dim=4, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=8, detail_stride=8).eval()
    x, m = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    out = net(x, m)
    assert out.s.shape == (1, 4, 8, 8) and out.x_hat.shape == x.shape
    x2 = x.clone()
    x2[:, :, :16, :16] = 1 - x2[:, :, :16, :16]  # change the top-left corner only
    s, s2 = net.detail_vector(x), net.detail_vector(x2)
    assert not torch.allclose(s[..., :2, :2], s2[..., :2, :2])
    assert torch.equal(s[..., 5:, 5:], s2[..., 5:, 5:])  # cells beyond E_S's receptive field do not move
    # a global s of the same weights is the mean over cells, and a constant spatial s decodes as the global one
    glob = ExpertNet(dim=4, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=8).eval()
    glob.load_state_dict(net.state_dict())
    assert torch.allclose(glob.detail_vector(x), s.mean(dim=(2, 3)), atol=1e-6)
    flat = s.mean(dim=(2, 3), keepdim=True).expand_as(s)
    assert torch.allclose(net.reconstruct(m, flat), glob.reconstruct(m, s.mean(dim=(2, 3))), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of E_S's own stride 4"):
        DetailExtractor(3, 4, 4, layers=3, stride=6)


def test_adain_with_maps_modulates_each_position():
    k = torch.rand(2, 3, 8, 8)
    gamma, beta = torch.rand(2, 3), torch.rand(2, 3)
    as_maps = adain(k, gamma[:, :, None, None].expand(2, 3, 4, 4), beta[:, :, None, None].expand(2, 3, 4, 4))
    assert torch.allclose(as_maps, adain(k, gamma, beta), atol=1e-6)  # constant maps: Eq. 7 itself
    g = torch.ones(2, 3, 8, 8)
    g[:, :, :4] = 0.0  # gamma 0 over the top half: only beta is left there
    out = adain(k, g, torch.zeros(2, 3, 8, 8))
    assert torch.equal(out[:, :, :4], torch.zeros(2, 3, 4, 8))
    assert torch.allclose(out[:, :, 4:], adain(k, torch.ones(2, 3), torch.zeros(2, 3))[:, :, 4:])
