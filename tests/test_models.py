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


def test_seed_generator_is_the_blog_layer_for_layer():
    ours, blog = models.seed_generator(channels=3), Gen_net()
    assert layer_spec(ours) == layer_spec(blog)
    assert n_params(ours) == n_params(blog) == 4_140_996


def test_seed_discriminator_is_the_blog_layer_for_layer_with_sigmoid_moved_into_the_loss():
    ours, blog = models.seed_discriminator(channels=3), Dis_net()
    # The blog ends D with nn.Sigmoid; ours returns the logit and the "bce" loss applies the Sigmoid.
    assert layer_spec(ours) + [("Sigmoid",)] == layer_spec(blog)
    assert n_params(ours) == n_params(blog) == 5_764_567


def test_seed_replica_computes_what_the_blog_computes():
    torch.manual_seed(0)
    blog_g, blog_d = Gen_net().eval(), Dis_net().eval()
    g, d = models.seed_generator(channels=3).eval(), models.seed_discriminator(channels=3).eval()
    g.net.load_state_dict(blog_g.net.state_dict())
    d.net.load_state_dict({k: v for k, v in blog_d.net.state_dict().items()})
    z = torch.randn(2, 100, 1, 1)
    with torch.no_grad():
        img = g(z)
        torch.testing.assert_close(img, blog_g(z))
        torch.testing.assert_close(torch.sigmoid(d(img)), blog_d(img))


def test_seed_spatial_sizes_follow_the_blog():
    g = models.seed_generator(channels=3)
    sizes, x = [], torch.randn(2, 100, 1, 1)
    for layer in g.net:
        x = layer(x)
        if isinstance(layer, nn.ConvTranspose2d):
            sizes.append(x.shape[-1])
    assert sizes == [3, 5, 11, 22, 24, 26, 28, 30, 32]
    d = models.seed_discriminator(channels=3)
    sizes, x = [], torch.randn(2, 3, 32, 32)
    for layer in d.net:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            sizes.append(x.shape[-1])
    assert sizes == [30, 27, 25, 22, 20, 17, 8, 5, 1]


@pytest.mark.parametrize("arch", ["seed", "dcgan"])
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
    g_full, _ = models.build("seed", 9, 1.0, 1, "tanh")
    g_small, _ = models.build("seed", 9, 0.125, 1, "tanh")
    first = lambda g: next(m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)).out_channels  # noqa: E731
    assert first(g_full) == 768 and first(g_small) == 96
    assert n_params(g_small) < n_params(g_full) / 20


def test_dcgan_init_is_applied():
    g, _ = models.build("dcgan", 4, 0.25, 1, "tanh")
    w = next(m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)).weight
    assert abs(float(w.detach().std()) - 0.02) < 0.002
