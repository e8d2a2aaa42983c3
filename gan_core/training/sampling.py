"""Turning a generator into images: fixed noise, eval mode, uint8 like the real data.

Eval mode uses BatchNorm's running statistics, and early in training those still hold their initial
values (mean 0, variance 1) while the batch statistics they should track are far from it: the
generator's eval-mode output is then a constant grey image, which scores a *better* FID than a
half-trained generator (measured on 9 untrained generators of both families: fid1k 181-182 each in plain
eval mode, 368-915 with fresh statistics). So every eval-mode picture or evaluation first re-estimates the
statistics on fresh latent vectors, in a copy of the generator (``with_fresh_batchnorm``); the training
run's own statistics are untouched.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn

BN_NOISE_SEED = 20240614  # latent vectors that re-estimate BatchNorm statistics before eval-mode sampling
BN_SAMPLES = 1024  # enough for the statistics of every channel to settle (each batch adds its mean and variance)
BN_BATCH = 256


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


# A generator judged twice unchanged (an evaluation point's anytime and final judgements, the end's samples.png and
# final judgement) is re-estimated once: its copy is kept, weakly, with the identity, storage and version counter of
# each of its tensors (an optimizer step, a load or any other in-place change bumps the counter).
_fresh: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def with_fresh_batchnorm(generator: nn.Module, seed: int = BN_NOISE_SEED, n: int = BN_SAMPLES,
                         batch_size: int = BN_BATCH) -> nn.Module:
    """A copy of the generator, in eval mode, whose BatchNorm running statistics are re-estimated from n
    fixed latent vectors (cumulative average over batches); a generator without BatchNorm is returned as is.
    The copy must not be changed: the same generator, unchanged, gets the same copy again."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return generator
    tensors = generator.state_dict(keep_vars=True).values()
    key = (seed, n, batch_size, *((id(t), t.data_ptr(), t._version) for t in tensors))
    kept = _fresh.get(generator)
    if kept is not None and kept[0] == key:
        return kept[1]
    fresh = copy.deepcopy(generator)
    for m in fresh.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # None = cumulative moving average: every batch counts equally
    fresh.train()
    device = next(generator.parameters()).device
    z = noise(n, generator.latent_dim, seed, device)
    for i in range(0, n, batch_size):
        fresh(z[i:i + batch_size])
    _fresh[generator] = key, fresh.eval()
    return fresh


@torch.no_grad()
def generate_from(generator: nn.Module, z: torch.Tensor, head: str, batch_size: int = 500) -> torch.Tensor:
    """uint8 images [len(z), 1, 32, 32] from the given noise: eval mode, BatchNorm statistics re-estimated
    (with_fresh_batchnorm); the generator itself is not changed."""
    device = next(generator.parameters()).device
    g = with_fresh_batchnorm(generator)
    was_training = g.training
    g.eval()
    try:
        out = [to_uint8(g(z[i:i + batch_size].to(device)), head).cpu() for i in range(0, len(z), batch_size)]
    finally:
        g.train(was_training)
    return torch.cat(out)


def generate(generator: nn.Module, n: int, head: str, seed: int = 12345, batch_size: int = 500) -> torch.Tensor:
    """n uint8 images [n, 1, 32, 32] from fixed noise (``seed``), the generator in eval mode (restored after)."""
    return generate_from(generator, noise(n, generator.latent_dim, seed), head, batch_size)
