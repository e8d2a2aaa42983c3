"""Turning a generator into images: fixed noise, eval mode, uint8 like the real data."""

from __future__ import annotations

import torch
from torch import nn


def image_range(head: str) -> tuple[float, float]:
    """The value range a generator head produces, and that real images are scaled to for training."""
    return (-1.0, 1.0) if head == "tanh" else (0.0, 1.0)


def to_float(images: torch.Tensor, head: str, channels: int) -> torch.Tensor:
    """uint8 [N, 1, H, W] -> float [N, channels, H, W] in the head's range (grey copied to RGB)."""
    lo, hi = image_range(head)
    x = images.float() * ((hi - lo) / 255.0) + lo
    return x.expand(-1, channels, -1, -1).contiguous() if channels != x.shape[1] else x


def to_uint8(images: torch.Tensor, head: str) -> torch.Tensor:
    """float [N, C, H, W] in the head's range -> uint8 [N, 1, H, W] (RGB averaged back to grey).

    Generated images are quantised exactly like the real ones, so both sides of every metric see
    the same kind of input.
    """
    lo, hi = image_range(head)
    x = images.detach().float().mean(dim=1, keepdim=True)
    return ((x - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)


def noise(n: int, latent_dim: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Fixed noise for pictures and evaluation: the same seed gives the same vectors on every device."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, latent_dim, generator=g).to(device)


@torch.no_grad()
def generate_from(generator: nn.Module, z: torch.Tensor, head: str, batch_size: int = 500) -> torch.Tensor:
    """uint8 images [len(z), 1, 32, 32] from the given noise, the generator in eval mode (its mode restored after)."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        out = [to_uint8(generator(z[i:i + batch_size].to(device)), head).cpu() for i in range(0, len(z), batch_size)]
    finally:
        generator.train(was_training)
    return torch.cat(out)


def generate(generator: nn.Module, n: int, head: str, seed: int = 12345, batch_size: int = 500) -> torch.Tensor:
    """n uint8 images [n, 1, 32, 32] from fixed noise (``seed``), the generator in eval mode (restored after)."""
    return generate_from(generator, noise(n, generator.latent_dim, seed), head, batch_size)
