"""Generators and discriminators: the blog's deep DCGAN and a depth x width family around it.

Pure modules: torch only, no I/O, no config parsing. Every member maps a [N, latent] noise batch
to [N, C, 32, 32] images and a [N, C, 32, 32] image batch to [N] logits (the blog's final Sigmoid
is applied by the loss, see gan_core.training.loop).

arch="blog" (the blog, ../shared/seed/README.md), depth d, width w:
  G = the blog's first d-1 CBR blocks (ConvTranspose, BatchNorm, ReLU), then an output
      ConvTranspose whose kernel grows to reach 32x32 (3 at d=9, the blog's), then the head.
  D = the blog's last d-1 CBL blocks (Conv, BatchNorm, LeakyReLU(0.2)), then a Conv head whose
      kernel covers what is left of the image (5 at d=9, the blog's): one logit per image.
  Channels are the blog's times w (at least 1), so w=1, d=9 is the blog layer for layer. A budget's
  ``shrink`` (a cheaper stand-in for a member) scales them again, but never below 8 channels.
arch="dcgan" (Radford et al.), depth d: the usual 4-layer 32x32 DCGAN (4x4 -> 8 -> 16 -> 32,
  kernel 4, stride 2, padding 1) with d-4 size-keeping 3x3 blocks at 16x16; top = 768*w channels.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGE_SIZE = 32  # the blog resizes MNIST to 32x32; every family member produces this size, data is resized to it

# The blog's generator: 100 -> 768 -> ... -> 6 -> C; sizes 1, 3, 5, 11, 22, 24, 26, 28, 30, 32.
BLOG_G_CHANNELS = (768, 384, 192, 96, 48, 24, 12, 6)
BLOG_G_KERNELS = (3, 3, 3, 2, 3, 3, 3, 3, 3)
BLOG_G_STRIDES = (1, 1, 2, 2, 1, 1, 1, 1, 1)
# The blog's discriminator: C -> 6 -> ... -> 768 -> 1; sizes 32, 30, 27, 25, 22, 20, 17, 8, 5, 1.
BLOG_D_CHANNELS = (6, 12, 24, 48, 96, 192, 384, 768)
BLOG_D_KERNELS = (3, 4, 3, 4, 3, 4, 3, 4)
BLOG_D_STRIDES = (1, 1, 1, 1, 1, 1, 2, 1)
BLOG_D_BIAS = (False, False, False, False, True, True, True, True)
BLOG_D_HEAD_KERNEL = 5


MIN_SHRUNK_CHANNELS = 8  # a budget's shrinking stops here: a 1-channel layer is a bottleneck, not a smaller model


def _scaled(channels: float, width: float, shrink: float = 1.0) -> int:
    """Channels of a layer: the member's (times ``width``, at least 1), then a budget's ``shrink`` on top,
    which never takes a layer below 8 channels (nor below what the member itself asked for, if that is less)."""
    asked = max(1, round(channels * width))
    return max(round(asked * shrink), min(asked, MIN_SHRUNK_CHANNELS))


def _conv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _deconv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size - 1) * stride - 2 * padding + kernel


def cbr(c_in: int, c_out: int, k: int, s: int, p: int = 0) -> list[nn.Module]:
    """The blog's generator block: ConvTranspose2d (no bias), BatchNorm2d, ReLU."""
    return [nn.ConvTranspose2d(c_in, c_out, k, s, p, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def cbl(c_in: int, c_out: int, k: int, s: int, p: int = 0, bias: bool = False, norm: bool = True) -> list[nn.Module]:
    """The blog's discriminator block: Conv2d, BatchNorm2d, LeakyReLU(0.2)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, s, p, bias=bias)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


def output_head(channels: int, head: str) -> list[nn.Module]:
    if head == "bn_sigmoid":  # the blog: BatchNorm right before the Sigmoid, images in [0, 1]
        return [nn.BatchNorm2d(channels), nn.Sigmoid()]
    if head == "sigmoid":  # the blog's head without its BatchNorm, images in [0, 1]
        return [nn.Sigmoid()]
    if head == "tanh":  # the usual choice, images in [-1, 1]
        return [nn.Tanh()]
    raise ValueError(f"unknown head {head!r}")


class Generator(nn.Module):
    def __init__(self, layers: list[nn.Module], latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # one logit per image


def blog_generator(depth: int = 9, width: float = 1.0, channels: int = 3, head: str = "bn_sigmoid",
                   latent_dim: int = 100, shrink: float = 1.0) -> Generator:
    layers: list[nn.Module] = []
    c_in, size = latent_dim, 1
    for i in range(depth - 1):  # the blog's first depth-1 CBR blocks; 768 x 3 x 3 at i=0
        c_out = _scaled(BLOG_G_CHANNELS[i], width, shrink)
        layers += cbr(c_in, c_out, BLOG_G_KERNELS[i], BLOG_G_STRIDES[i])
        c_in, size = c_out, _deconv_out(size, BLOG_G_KERNELS[i], BLOG_G_STRIDES[i])
    # Output block: stride 1, kernel chosen so that size + k - 1 = 32 (the blog's k=3 at 30 x 30).
    layers.append(nn.ConvTranspose2d(c_in, channels, IMAGE_SIZE - size + 1, 1, 0, bias=False))
    return Generator(layers + output_head(channels, head), latent_dim)


def blog_discriminator(depth: int = 9, width: float = 1.0, channels: int = 3, shrink: float = 1.0) -> Discriminator:
    layers: list[nn.Module] = []
    c_in, size = channels, IMAGE_SIZE
    first = len(BLOG_D_CHANNELS) - (depth - 1)  # the blog's last depth-1 CBL blocks
    for i in range(first, len(BLOG_D_CHANNELS)):
        c_out = _scaled(BLOG_D_CHANNELS[i], width, shrink)
        layers += cbl(c_in, c_out, BLOG_D_KERNELS[i], BLOG_D_STRIDES[i], bias=BLOG_D_BIAS[i])
        c_in, size = c_out, _conv_out(size, BLOG_D_KERNELS[i], BLOG_D_STRIDES[i])
    layers.append(nn.Conv2d(c_in, 1, size, 1, 0, bias=True))  # 1 x 1 x 1; the blog's k=5 at 5 x 5
    return Discriminator(layers)


def dcgan_generator(depth: int = 4, width: float = 0.25, channels: int = 1, head: str = "tanh",
                    latent_dim: int = 100, shrink: float = 1.0) -> Generator:
    c = [_scaled(768 * f, width, shrink) for f in (1, 0.5, 0.25)]  # top, top/2, top/4
    layers = cbr(latent_dim, c[0], 4, 1, 0)  # top x 4 x 4
    layers += cbr(c[0], c[1], 4, 2, 1)  # top/2 x 8 x 8
    layers += cbr(c[1], c[2], 4, 2, 1)  # top/4 x 16 x 16
    for _ in range(depth - 4):
        layers += cbr(c[2], c[2], 3, 1, 1)  # top/4 x 16 x 16, extra depth
    layers.append(nn.ConvTranspose2d(c[2], channels, 4, 2, 1, bias=False))  # C x 32 x 32
    return Generator(layers + output_head(channels, head), latent_dim)


def dcgan_discriminator(depth: int = 4, width: float = 0.25, channels: int = 1, shrink: float = 1.0) -> Discriminator:
    c = [_scaled(768 * f, width, shrink) for f in (0.25, 0.5, 1)]  # top/4, top/2, top
    layers = cbl(channels, c[0], 4, 2, 1, norm=False)  # top/4 x 16 x 16 (no BatchNorm on the input layer)
    for _ in range(depth - 4):
        layers += cbl(c[0], c[0], 3, 1, 1)  # top/4 x 16 x 16, extra depth
    layers += cbl(c[0], c[1], 4, 2, 1)  # top/2 x 8 x 8
    layers += cbl(c[1], c[2], 4, 2, 1)  # top x 4 x 4
    layers.append(nn.Conv2d(c[2], 1, 4, 1, 0))  # 1 x 1 x 1
    return Discriminator(layers)


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build(arch: str, depth: int, width: float, channels: int, head: str, latent_dim: int = 100,
          shrink: float = 1.0):
    """(generator, discriminator) for one family member; the blog arch keeps PyTorch's default init."""
    if arch == "blog":
        return (blog_generator(depth, width, channels, head, latent_dim, shrink),
                blog_discriminator(depth, width, channels, shrink))
    if arch == "dcgan":
        g = dcgan_generator(depth, width, channels, head, latent_dim, shrink)
        d = dcgan_discriminator(depth, width, channels, shrink)
        dcgan_init_(g)
        dcgan_init_(d)
        return g, d
    raise ValueError(f"unknown arch {arch!r}")


def channel_lists(g: nn.Module, d: nn.Module) -> dict[str, list[int]]:
    """The output channels of every conv layer of G and D: what a member actually is, for the record."""
    def convs(net: nn.Module) -> list[int]:
        return [m.out_channels for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]

    return {"G": convs(g), "D": convs(d)}
