"""Generator callables for `python -m gan_core.evaluate --generator tests.plugins.generators:NAME`: one that
replays real digits (in a user's layout and range), and the wrong ones of the bad-input table."""

from __future__ import annotations

import torch

from tests.metric_helpers import embedded_split

SEEN: list[torch.Tensor] = []  # the latent batches replay() was called with


def replay(z: torch.Tensor) -> torch.Tensor:
    """The held-out digits in order, as float [B, 32, 32, 1] in [-1, 1]: real data through the callable path."""
    start = sum(len(b) for b in SEEN)
    SEEN.append(z.clone())
    real = embedded_split().heldout[start:start + len(z)]
    return (real.float() / 127.5 - 1).permute(0, 2, 3, 1)


def wrong_shape(z: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(z), 7)


def too_few(z: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(z) - 1, 1, 32, 32)


def mixed(z: torch.Tensor) -> torch.Tensor:
    """[0, 1] on full batches (500 latent vectors), [-1, 1] on a shorter last one (--n 600)."""
    lo = 0.0 if len(z) == 500 else -1.0
    return torch.full((len(z), 1, 32, 32), lo).index_fill_(3, torch.tensor([0]), 1.0)


def fails(z: torch.Tensor) -> torch.Tensor:
    return torch.nn.Linear(64, 10)(z)  # expects a 64-d latent


def not_an_array(z: torch.Tensor):
    return [0.5] * len(z)


NOT_CALLABLE = 3
