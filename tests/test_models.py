import pytest
import torch
from torch import nn

from gan_core.training import models
from tests.blog_reference import Dis_net, Gen_net


def layer_spec(module: nn.Module) -> list[tuple]:
    """Every leaf layer with the settings that define it (ReLU's inplace flag does not change results)."""
    spec = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            spec.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                         m.bias is not None))
        elif isinstance(m, nn.BatchNorm2d):
            spec.append(("BatchNorm2d", m.num_features, m.eps, m.momentum, m.affine))
        elif isinstance(m, nn.LeakyReLU):
            spec.append(("LeakyReLU", m.negative_slope))
        elif isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
            spec.append((type(m).__name__,))
    return spec


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_blog_generator_is_the_blog_layer_for_layer():
    ours, blog = models.blog_generator(channels=3), Gen_net()
    assert layer_spec(ours) == layer_spec(blog)
    assert n_params(ours) == n_params(blog) == 4_140_996


def test_blog_discriminator_is_the_blog_layer_for_layer_with_sigmoid_moved_into_the_loss():
    ours, blog = models.blog_discriminator(channels=3), Dis_net()
    # The blog ends D with nn.Sigmoid; ours returns the logit and the "bce" loss applies the Sigmoid.
    assert layer_spec(ours) + [("Sigmoid",)] == layer_spec(blog)
    assert n_params(ours) == n_params(blog) == 5_764_567


def test_seed_replica_computes_what_the_blog_computes():
    torch.manual_seed(0)
    blog_g, blog_d = Gen_net().eval(), Dis_net().eval()
    g, d = models.blog_generator(channels=3).eval(), models.blog_discriminator(channels=3).eval()
    g.net.load_state_dict(blog_g.net.state_dict())
    d.net.load_state_dict({k: v for k, v in blog_d.net.state_dict().items()})
    z = torch.randn(2, 100, 1, 1)
    with torch.no_grad():
        img = g(z)
        torch.testing.assert_close(img, blog_g(z))
        torch.testing.assert_close(torch.sigmoid(d(img)), blog_d(img))


def test_seed_spatial_sizes_follow_the_blog():
    g = models.blog_generator(channels=3)
    sizes, x = [], torch.randn(2, 100, 1, 1)
    for layer in g.net:
        x = layer(x)
        if isinstance(layer, nn.ConvTranspose2d):
            sizes.append(x.shape[-1])
    assert sizes == [3, 5, 11, 22, 24, 26, 28, 30, 32]
    d = models.blog_discriminator(channels=3)
    sizes, x = [], torch.randn(2, 3, 32, 32)
    for layer in d.net:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            sizes.append(x.shape[-1])
    assert sizes == [30, 27, 25, 22, 20, 17, 8, 5, 1]


@pytest.mark.parametrize("arch", ["blog", "dcgan"])
@pytest.mark.parametrize("depth", range(4, 10))
@pytest.mark.parametrize("width", [1 / 8, 0.25, 0.5, 1.0])
def test_every_family_member_maps_noise_to_32x32_and_images_to_one_logit(arch, depth, width):
    for channels, head in ((1, "tanh"), (3, "bn_sigmoid"), (1, "sigmoid")):
        g, d = models.build(arch, depth, width, channels, head)
        convs = [m for m in list(g.modules()) + list(d.modules()) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        assert len(convs) == 2 * depth  # depth counts the conv blocks of each network
        with torch.no_grad():
            x = g(torch.randn(3, 100))
            logits = d(x)
        assert x.shape == (3, channels, 32, 32)
        lo = -1.0 if head == "tanh" else 0.0
        assert lo <= float(x.min()) and float(x.max()) <= 1.0
        assert logits.shape == (3,)


def test_width_scales_channels_and_keeps_the_blog_top_at_width_one():
    g_full, _ = models.build("blog", 9, 1.0, 1, "tanh")
    g_small, _ = models.build("blog", 9, 0.125, 1, "tanh")
    first = lambda g: next(m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)).out_channels  # noqa: E731
    assert first(g_full) == 768 and first(g_small) == 96
    assert n_params(g_small) < n_params(g_full) / 20


def test_dcgan_init_is_applied():
    g, _ = models.build("dcgan", 4, 0.25, 1, "tanh")
    w = next(m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)).weight
    assert abs(float(w.detach().std()) - 0.02) < 0.002


def test_eval_mode_sampling_re_estimates_stale_batchnorm_statistics():
    """Stale running statistics make an eval-mode generator print one constant image (PITFALLS); sampling must
    re-estimate them on fresh noise first, in a copy, leaving the training run's own statistics alone."""
    from gan_core.training import sampling

    torch.manual_seed(0)
    g = models.dcgan_generator(depth=4, width=1 / 16, channels=1, head="tanh")
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:  # what stale statistics look like: far from what the current weights produce
        m.running_var.fill_(1e6)
    z = sampling.noise(64, g.latent_dim, seed=1)
    with torch.no_grad():
        stale = g.eval()(z)
    assert stale.std(dim=0).max() < 1e-3  # one image, 64 times
    images = sampling.generate_from(g, z, "tanh")
    assert images.float().std(dim=0).mean() > 5  # different images (uint8 grey levels)
    assert all(float(m.running_var.min()) == 1e6 for m in norms)  # the generator itself is untouched

    fresh = sampling.with_fresh_batchnorm(g, n=512, batch_size=128)
    first_conv, first_norm = fresh.net[0], next(m for m in fresh.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():  # equal batches: the cumulative average of batch means is the mean over all 512 vectors
        pre = first_conv(sampling.noise(512, g.latent_dim, sampling.BN_NOISE_SEED).view(512, -1, 1, 1))
    assert torch.allclose(first_norm.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not fresh.training


def test_a_generator_without_batchnorm_is_sampled_as_it_is():
    from gan_core.training import sampling

    g = models.Generator([torch.nn.ConvTranspose2d(100, 1, 32), torch.nn.Tanh()], 100)
    assert sampling.with_fresh_batchnorm(g) is g


def test_a_budget_shrinks_channels_but_never_below_8():
    g, d = models.build("blog", 9, 1.0, 1, "bn_sigmoid", shrink=1 / 8)
    lists = models.channel_lists(g, d)
    assert lists["G"] == [96, 48, 24, 12, 8, 8, 8, 6, 1]  # the blog's 6-channel layer was asked for: it stays 6
    assert lists["D"] == [6, 8, 8, 8, 12, 24, 48, 96, 1]
    # an arm that asks for a narrow member gets it (the width study's 1/8 arm), and a budget adds nothing below 8
    narrow = models.channel_lists(*models.build("blog", 9, 1 / 8, 1, "bn_sigmoid"))
    assert narrow["G"][:8] == [96, 48, 24, 12, 6, 3, 2, 1]
    both = models.channel_lists(*models.build("blog", 9, 1 / 8, 1, "bn_sigmoid", shrink=1 / 8))
    assert both["G"][:8] == [12, 8, 8, 8, 6, 3, 2, 1]
    dc = models.channel_lists(*models.build("dcgan", 4, 0.25, 1, "tanh", shrink=0.5))
    assert dc == {"G": [96, 48, 24, 1], "D": [24, 48, 96, 1]}


@pytest.mark.parametrize("arch", ["blog", "dcgan"])
@pytest.mark.parametrize("width", [1 / 64, 1 / 8, 0.25, 1.0])
@pytest.mark.parametrize("shrink", [1 / 16, 1 / 8, 0.5])
def test_shrinking_stops_at_8_channels_or_what_the_member_asked_for(arch, width, shrink):
    depth = 9 if arch == "blog" else 4
    asked = models.channel_lists(*models.build(arch, depth, width, 1, "tanh"))
    shrunk = models.channel_lists(*models.build(arch, depth, width, 1, "tanh", shrink=shrink))
    for net in ("G", "D"):
        for a, s in zip(asked[net][:-1], shrunk[net][:-1], strict=True):  # the last layer is the image / logit
            assert min(a, 8) <= s <= a


def test_a_generator_judged_twice_unchanged_is_re_estimated_once_and_again_after_any_change():
    from gan_core.training import sampling
    from gan_core.training.accounting import build_models
    from tests.conftest import tiny_config

    g, _ = build_models(tiny_config())
    z = sampling.noise(16, g.latent_dim, seed=1)
    fresh = sampling.with_fresh_batchnorm(g)
    first = sampling.generate_from(g, z, "tanh")
    assert sampling.with_fresh_batchnorm(g) is fresh  # the evaluation point's second judgement: the same copy
    with torch.no_grad():
        next(g.parameters()).mul_(-1)  # an in-place change, as an optimizer step makes
    again = sampling.with_fresh_batchnorm(g)
    assert again is not fresh and not torch.equal(sampling.generate_from(g, z, "tanh"), first)
    g.load_state_dict(fresh.state_dict())  # a load puts back the copy's weights (and its fresh statistics)
    assert sampling.with_fresh_batchnorm(g) is not again
    assert sampling.with_fresh_batchnorm(g.train(False)) is sampling.with_fresh_batchnorm(g)  # a mode is no change
