"""The data order: which real batch a D step sees, and where D steps fall among G steps (schedule.order).

- ``sampled`` (the default): an iteration is ``d_steps`` D steps on batches drawn at random (with replacement) by
  each member's RNG, then ``g_steps`` G steps.
- ``blog_epochs``: the blog's loop (../shared/seed/), ``for it, (img, _) in enumerate(dataloader): if it % 5 == 0:
  D step; G step``. Unshuffled epochs of ceil(n / batch) batches (the last one short, as a DataLoader's) over the
  train images in ImageFolder's order (folder_order); one G step per batch, and ``d_steps`` D steps, on that
  batch, before the G step of every iteration ``it`` of the epoch with ``it % g_steps == 0`` (``it`` restarts each
  epoch). The blog's 1:5 thus makes D steps on iterations 0 and 5 of its 9-batch epochs, on the same 200 images
  every epoch; 1:1 is plain unshuffled epochs, and d_steps > 1 repeats the blog's D block on the same batch (the
  one reading of "D:G" that keeps the blog's rule of which batches D sees). G's steps use noise only (the blog's
  gen_init_tensor), no real image.

The position in the blog's order is derived from the G step counter alone (one G step per iteration), so a run
resumed mid-epoch goes on where it stopped. Both orders answer, for check_finite, where a step falls in time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_core.errors import ConfigError
from gan_core.training.config import ScheduleConfig


@dataclass(frozen=True)
class Sampled:
    """Iterations of d_steps D steps, then g_steps G steps, counted from a tick (ticks fall between iterations; a
    resumed run's earlier iterations may have been cut short by the budget, so counting from 0 would be wrong)."""

    d_steps: int
    g_steps: int

    def g_done_before_d(self, tick_g: int, tick_d: int, k: int) -> int:
        """G steps done when the k-th D step since the tick (0-based) starts."""
        return tick_g + k // self.d_steps * self.g_steps

    def d_done_after_g(self, tick_g: int, tick_d: int, k: int) -> int:
        """D steps done when the k-th G step since the tick (0-based) ends: all of its iteration's."""
        return tick_d + (k // self.g_steps + 1) * self.d_steps


@dataclass(frozen=True)
class BlogEpochs:
    """The blog's epochs over ``n`` images (see the module docstring); G step s is iteration s % iterations of
    epoch s // iterations."""

    n: int
    batch: int
    d_steps: int  # D steps on each iteration that trains D
    g_steps: int  # D trains on the iterations it with it % g_steps == 0

    def __post_init__(self):
        if self.n < self.batch:
            raise ConfigError(f"data order blog_epochs needs at least one full batch: the train set has {self.n:,} "
                              f"images, the batch size is {self.batch:,}; lower --batch-size or raise --train-limit")

    @property
    def iterations(self) -> int:  # batches per epoch; the last one short when batch does not divide n
        return math.ceil(self.n / self.batch)

    @property
    def d_per_epoch(self) -> int:  # iterations of an epoch that train D
        return math.ceil(self.iterations / self.g_steps)

    def trains_d(self, g_step: int) -> bool:
        """Whether a D step comes before G step number g_step (0-based)."""
        return g_step % self.iterations % self.g_steps == 0

    def batch_of(self, g_step: int) -> slice:
        """The real images of G step g_step's iteration, as a slice of the ordered train set."""
        start = g_step % self.iterations * self.batch
        return slice(start, min(start + self.batch, self.n))

    def g_done_before_d(self, tick_g: int, tick_d: int, k: int) -> int:
        q = (tick_d + k) // self.d_steps  # the D iteration's number since the run began: the order is absolute
        return q // self.d_per_epoch * self.iterations + q % self.d_per_epoch * self.g_steps

    def d_done_after_g(self, tick_g: int, tick_d: int, k: int) -> int:
        i = tick_g + k
        return (i // self.iterations * self.d_per_epoch + i % self.iterations // self.g_steps + 1) * self.d_steps


def schedule(sch: ScheduleConfig, n: int) -> Sampled | BlogEpochs:
    """The schedule of a run whose train set holds n images; refuses an order that cannot run on it."""
    if sch.order == "blog_epochs":
        return BlogEpochs(n, sch.batch_size, sch.d_steps, sch.g_steps)
    return Sampled(sch.d_steps, sch.g_steps)


def folder_order(labels: torch.Tensor, source_index: torch.Tensor) -> torch.Tensor:
    """Indices that put train images in ImageFolder's order: by class, then by position in the source (for a
    folder that is ImageFolder's own order, classes sorted then file paths; for embedded and mnist it is our
    assumption about the blog's folder, which the blog does not show: one sub-folder per digit)."""
    by_position = torch.argsort(source_index, stable=True)
    return by_position[torch.argsort(labels[by_position], stable=True)]
