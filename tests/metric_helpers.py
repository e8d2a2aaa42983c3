"""Shared by the metric and extractor tests: the embedded split (loaded once per process), image degradations,
and a generator that replays real images (to push real data through the "generated" path)."""

from __future__ import annotations

import functools

import torch
import torchvision.transforms.functional as TF
from torch import nn

from gan_core import devices
from gan_core.training import data, sampling
from gan_core.training.config import DataConfig


@functools.lru_cache(maxsize=1)
def embedded_split() -> data.Split:
    return data.load(DataConfig(source="embedded"))


def one_thread():
    """Torch and numpy's BLAS on one thread while these tests run.

    On the 2 shared cores of the dev machines, with a second busy process, 2 threads were ~9x slower than 1
    for torch and ~25x slower for numpy's OpenBLAS (KID's kernel matrices) because of oversubscription.
    """
    return devices.threads(1)


def add_noise(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images.float() + std * torch.randn(images.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    return TF.gaussian_blur(images.float(), 5, sigma).round().clamp(0, 255).to(torch.uint8)


def uniform_noise(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, like.shape, generator=g, dtype=torch.uint8)


class ReplayGenerator(nn.Module):
    """A 'generator' whose outputs are given real images, in the float range and channels a model of that head
    and channel count produces: real data through exactly the path generated samples take."""

    def __init__(self, images: torch.Tensor, head: str, channels: int, latent_dim: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("images", sampling.to_float(images, head, channels))
        self.anchor = nn.Parameter(torch.zeros(()))  # so that next(parameters()) finds a device
        self.served = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.images[self.served:self.served + len(z)] + 0 * self.anchor
        self.served += len(z)
        return out
