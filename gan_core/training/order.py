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
resumed mid-epoch goes on where it stopped. Both orders are data: ``phases(at, g_steps)`` lists the next G steps
with the D steps placed among them, as phases of one network with their counts (stylegan2-ada's phases), which the
loop runs in order; its losses are thus one timeline, and a step's place in time is its place in that list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gan_core.errors import ConfigError
from gan_core.training.config import ScheduleConfig

D, G = "D", "G"


@dataclass(frozen=True)
class Phase:
    """``count`` steps of one network, D or G, in a row; a D phase of the blog's order trains on the real images
    ``rows`` (every step of it on the same ones), else each D step draws a random batch."""

    net: str
    count: int
    rows: slice | None = None


def d_steps_in(phases: list[Phase]) -> int:
    return sum(p.count for p in phases if p.net == D)


@dataclass(frozen=True)
class Sampled:
    """Iterations of d_steps D steps, then g_steps G steps. An iteration starts wherever the loop asks for one (a
    budget or an eval_at step may have cut the one before it short), so ``at`` does not move it."""

    d_steps: int
    g_steps: int

    def phases(self, at: int, g_steps: int) -> list[Phase]:
        """The next ``g_steps`` G steps as iterations: each its D steps, then up to g_steps G steps."""
        return [phase for start in range(0, g_steps, self.g_steps)
                for phase in (Phase(D, self.d_steps), Phase(G, min(self.g_steps, g_steps - start)))]

    def d_steps_before(self, g_steps: int) -> int:
        """d_steps_in(phases(0, g_steps)), without listing them (accounting asks for long runs many times)."""
        return -(-g_steps // self.g_steps) * self.d_steps


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

    def phases(self, at: int, g_steps: int) -> list[Phase]:
        """G steps ``at``..``at + g_steps - 1``, each iteration's D steps (on its batch) before its G step; runs of
        G steps as one phase."""
        out: list[Phase] = []
        for g_step in range(at, at + g_steps):
            if self.trains_d(g_step):
                out.append(Phase(D, self.d_steps, self.batch_of(g_step)))
            if out and out[-1].net == G:
                out[-1] = Phase(G, out[-1].count + 1)
            else:
                out.append(Phase(G, 1))
        return out

    def d_steps_before(self, g_steps: int) -> int:
        """d_steps_in(phases(0, g_steps)), without listing them: the iterations that train D, per whole epoch and
        in the last, partial one."""
        epochs, rest = divmod(g_steps, self.iterations)
        return (epochs * -(-self.iterations // self.g_steps) + -(-rest // self.g_steps)) * self.d_steps

    def trains_d(self, g_step: int) -> bool:
        """Whether a D step comes before G step number g_step (0-based)."""
        return g_step % self.iterations % self.g_steps == 0

    def batch_of(self, g_step: int) -> slice:
        """The real images of G step g_step's iteration, as a slice of the ordered train set."""
        start = g_step % self.iterations * self.batch
        return slice(start, min(start + self.batch, self.n))


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
