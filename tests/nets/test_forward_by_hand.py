"""The networks' forward paths against hand computations from their own sub-modules: normalisations, residual
shortcuts, the reparameterisation, the [0, 1] <-> [-1, 1] conversions and the AdaIN parameter slicing. Written
against the mutants a reviewer (and mutmut) found surviving the shape tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utad.nets.blocks import AdaINResBlock, ConvBlock, LayerNorm2d, ResBlock, adain
from utad.nets.expert_net import Decoder, ExpertNet
from utad.nets.ie_net import IENet


def _inorm(k, eps):
    mean = k.mean(dim=(2, 3), keepdim=True)
    var = ((k - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (k - mean) / torch.sqrt(var + eps)


def test_adain_is_per_sample_per_channel_with_eps_inside_the_root():
    torch.manual_seed(0)
    k = torch.randn(2, 3, 4, 5) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1) + 3.0
    k[1, 2] = 7.0  # a constant channel: std = sqrt(eps), not NaN
    gamma, beta = torch.rand(2, 3) + 0.5, torch.randn(2, 3)
    expected = gamma[:, :, None, None] * _inorm(k, 1e-5) + beta[:, :, None, None]
    out = adain(k, gamma, beta)
    assert torch.isfinite(out).all() and torch.allclose(out, expected, atol=1e-5)


def test_layer_norm_over_c_h_w_then_affine():
    torch.manual_seed(0)
    ln = LayerNorm2d(3)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        ln.bias.copy_(torch.tensor([0.1, -0.3, 0.7]))
    x = torch.randn(2, 3, 4, 4) * 3 + 1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)  # biased
    expected = (x - mean) / torch.sqrt(var + 1e-5) * ln.weight.view(1, 3, 1, 1) + ln.bias.view(1, 3, 1, 1)
    assert torch.allclose(ln(x), expected, atol=1e-5)
    tiny = torch.full((1, 3, 2, 2), 0.25)  # zero variance: finite (eps added, not subtracted)
    assert torch.isfinite(ln(tiny)).all()


def test_residual_blocks_add_their_body():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    res = ResBlock(4)
    assert torch.allclose(res(x), x + res.body(x), atol=1e-6)
    ada = AdaINResBlock(4)
    params = torch.randn(2, 16)
    g1, b1, g2, b2 = params.split(4, dim=1)
    y = F.relu(adain(ada.conv1(ada.pad1(x)), g1, b1))
    y = adain(ada.conv2(ada.pad2(y)), g2, b2)
    assert torch.allclose(ada(x, params), x + y, atol=1e-5)


def test_upsampling_conv_block_uses_nearest_neighbour():
    torch.manual_seed(0)
    block = ConvBlock(2, 3, 5, norm="ln", upsample=True)
    x = torch.randn(1, 2, 4, 4)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(block(x), block.act(block.norm(block.conv(block.pad(up)))), atol=1e-6)


def test_adain_decoder_gives_each_block_its_own_slice_of_the_parameters():
    torch.manual_seed(0)
    dec = Decoder(4, 3, upsample=1, res_blocks=3, adaptive=True)
    h, params = torch.randn(2, 4, 4, 4), torch.randn(2, dec.n_adain_params)
    n = dec.res[0].n_params
    h1 = dec.res[0](h, params[:, :n])
    expected = dec.up(dec.res[2](dec.res[1](h1, params[:, n : 2 * n]), params[:, 2 * n : 3 * n]))
    assert torch.allclose(dec(h, params), expected, atol=1e-5)


def _ienet():
    torch.manual_seed(0)
    return IENet(16, blocks=2, width=4, max_width=16, z_dim=4, mlp_hidden=8, t_hidden=8, fc_channels=4)


def test_ienet_reparameterisation_and_eval_mean():
    net = _ienet()
    x = torch.rand(3, 3, 16, 16)
    _, mu, logvar = net.encode(x)
    torch.manual_seed(7)
    out = net(x)
    torch.manual_seed(7)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    assert torch.allclose(out.z, z, atol=1e-6) and torch.allclose(out.m, net.decoder(z), atol=1e-6)
    net.eval()
    out = net(x)
    assert torch.equal(out.z, out.mu) and torch.allclose(out.m, net.impression(x), atol=1e-6)


@pytest.mark.parametrize("bias", [50.0, -50.0])
def test_ienet_log_variance_is_clamped_to_plus_minus_10(bias):
    net = _ienet()
    last = net.mlp.net[-1] if hasattr(net.mlp, "net") else list(net.mlp.modules())[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)
    _, mu, logvar = net.encode(torch.rand(2, 3, 16, 16))
    assert torch.all(logvar == (10.0 if bias > 0 else -10.0)) and torch.all(mu == bias)


def test_ienet_decoder_leaky_slope_is_0_2():
    net = _ienet()
    dec = net.decoder
    z = -torch.rand(2, 4, 4, 4)  # spatial code; negative so the slope matters after fc
    h = dec.fc(z)
    expected = torch.sigmoid(dec.head(dec.blocks(F.leaky_relu(h, 0.2))))
    assert torch.allclose(dec(z), expected, atol=1e-6)


def _expert(**kw):
    torch.manual_seed(0)
    return ExpertNet(dim=4, downsample=1, res_blocks=1, detail_dim=3, mlp_dim=8, **kw).eval()


def test_expert_paths_convert_between_0_1_and_minus_1_1():
    net = _expert()
    x, m = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    s = net.detail(x * 2 - 1)
    assert torch.allclose(net.detail_vector(x), s, atol=1e-6)
    y = net.dec_a(net.enc_a(m * 2 - 1), net.mlp(s))
    assert torch.allclose(net.reconstruct(m, s), (torch.tanh(y) + 1) / 2, atol=1e-6)
    y_b = net.dec_b(net.enc_b(x * 2 - 1))
    assert torch.allclose(net.naive_impression(x), (torch.tanh(y_b) + 1) / 2, atol=1e-6)


def test_residual_expert_adds_details_to_the_logit_of_m():
    net = _expert(residual=True)
    m = torch.rand(2, 3, 8, 8).clamp(0.01, 0.99)
    m[0, 0, 0, 0] = 0.0  # logit clamped at eps = 1e-4, not infinite
    s = torch.randn(2, 3)
    with torch.no_grad():
        net.dec_a.up[-1].conv.weight.normal_()  # leave the zero start: the details must matter
    y = net.dec_a(net.enc_a(m * 2 - 1), net.mlp(s))
    expected = torch.sigmoid(torch.logit(m, eps=1e-4) + y)
    out = net.reconstruct(m, s)
    assert torch.isfinite(out).all() and torch.allclose(out, expected, atol=1e-6)


def test_residual_expert_starts_as_m_with_the_logit_clamped():
    net = _expert(
        residual=True
    )  # last convolution starts at zero: x^ = sigmoid(logit(m)) = m, clamped at 1e-4
    m = torch.tensor([0.0, 0.3, 1.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8).contiguous()
    out = net.reconstruct(m, torch.zeros(1, 3))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1e-4, 0.3, 1 - 1e-4]), rtol=1e-3, atol=0)


def test_ienet_channel_schedule():
    from utad.nets.ie_net import channel_schedule

    assert channel_schedule(4, 8, 128) == [32, 64, 128, 128]
    assert channel_schedule(3, 4, 512) == [16, 32, 64]


def test_skips_carry_m_only_and_match_the_unet_sum():
    torch.manual_seed(0)
    kw = dict(dim=8, downsample=2, res_blocks=1, detail_dim=4, mlp_dim=16)
    net = ExpertNet(**kw, skips=True).eval()
    x, m = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32, requires_grad=True)
    # x reaches x^ only through s: with s fixed, x^ does not depend on x at all
    s = net.detail_vector(x).detach()
    net.reconstruct(m, s).sum().backward()
    assert x.grad is None and m.grad.abs().sum() > 0
    feats = net.enc_a.features(m * 2 - 1)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 32, 32), (16, 16, 16), (32, 8, 8)]
    assert torch.allclose(feats[-1], net.enc_a(m * 2 - 1))  # the last map is the content code
    # by hand: the decoder's upsampling blocks, each followed by adding the encoder map at its resolution
    h, params = feats[-1], net.mlp(s)
    h = net.dec_a.res[0](h, params)
    h = net.dec_a.up[0](h) + feats[1]
    h = net.dec_a.up[1](h) + feats[0]
    expected = (torch.tanh(net.dec_a.up[2](h)) + 1) / 2
    assert torch.allclose(net.reconstruct(m, s), expected, atol=1e-6)
    plain = ExpertNet(**kw).eval()
    plain.load_state_dict(net.state_dict())
    assert not torch.allclose(plain.reconstruct(m, s), expected, atol=1e-3)  # the skips change x^
