"""Training the MNIST feature extractors, deterministically (the API behind ``python -m gan_core.train_extractor``).

One loop for both judges (gan_core.judging.extractor.JUDGES); each has its own ``Recipe`` (seed, epochs, rates).

Trains on the embedded data's train split only (the held-out images judge the generators, so the
extractor must never have seen them), on the CPU, with fixed seeds and torch's deterministic
algorithms: two runs on one machine give the same weights, byte for byte. Writes the weights and a
JSON beside them (SHA-256, held-out accuracy, settings); by default into the package, where
gan_core.judging.extractor loads them from.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan_core.judging import extractor
from gan_core.training.data import Split

EPOCHS = 7
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
MAX_SHIFT = 2  # random translation in pixels: the cheapest augmentation that helps with 4,000 digits
SEED = 0
TRAIN_THREADS = 1


@dataclass(frozen=True)
class Recipe:
    """How one judge is trained; every field goes into its weights' JSON."""

    epochs: int = EPOCHS
    seed: int = SEED
    batch_size: int = BATCH_SIZE
    lr: float = LR
    weight_decay: float = WEIGHT_DECAY
    max_shift: int = MAX_SHIFT

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The second judge: its own seed (another initialisation and batch order, not only another network). More epochs:
# without BatchNorm, LeNet's loss falls more slowly at this rate.
RECIPES = {extractor.FIRST.key: Recipe(), extractor.SECOND.key: Recipe(epochs=12, seed=1)}


def recipe_for(judge: extractor.Judge, epochs: int | None = None, seed: int | None = None) -> Recipe:
    """The judge's recipe, with ``epochs`` and ``seed`` replaced where given."""
    given = {"epochs": epochs, "seed": seed}
    return dataclasses.replace(RECIPES[judge.key], **{k: v for k, v in given.items() if v is not None})


@contextlib.contextmanager
def _deterministic(seed: int):
    """Fixed seed, deterministic kernels and one CPU thread inside; the caller's settings restored after.

    One thread because CPU kernels split their sums by thread count: two threads and one give
    different weights (seen), so a machine's core count would otherwise change the shipped file. It
    is also faster here: a second busy process on 2 cores made 2 threads ~9x slower than 1 (seen).
    """
    was_deterministic, was_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(TRAIN_THREADS)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(was_threads)


def shift(images: torch.Tensor, max_shift: int, rng: torch.Generator) -> torch.Tensor:
    """Translate every uint8 image by its own random offset in [-max_shift, max_shift] px, zero fill."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=rng)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=rng)
    rows = dy + torch.arange(h).view(1, h, 1)
    cols = dx + torch.arange(w).view(1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1), 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    was_training = model.training
    model.eval()
    correct = sum(int((model(images[i:i + batch_size])[1].argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    model.train(was_training)
    return correct / len(images)


def train_extractor(split: Split, epochs: int | None = None, seed: int | None = None, train_limit: int | None = None,
                    on_epoch: Callable[[int, float], None] | None = None,
                    judge: extractor.Judge = extractor.FIRST) -> torch.nn.Module:
    """Train the judge's network on ``split.train`` (the first ``train_limit`` images if given) with its recipe
    (``epochs``, ``seed``: default the recipe's); eval mode on return."""
    recipe = recipe_for(judge, epochs, seed)
    epochs, seed = recipe.epochs, recipe.seed
    images = split.train if train_limit is None else split.train[:train_limit]
    labels = split.train_labels if train_limit is None else split.train_labels[:train_limit]
    with _deterministic(seed):
        model = judge.network()
        rng = torch.Generator().manual_seed(seed + 1)  # batch order and augmentation
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps_per_epoch = -(-len(images) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=epochs * steps_per_epoch)
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=rng)
            total = torch.zeros(())
            for i in range(0, len(images), recipe.batch_size):
                idx = order[i:i + recipe.batch_size]
                _, logits = model(shift(images[idx], recipe.max_shift, rng))
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach() * len(idx)
            if on_epoch is not None:
                on_epoch(epoch + 1, float(total) / len(images))
    return model.eval()
