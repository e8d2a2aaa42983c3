"""Budgets: how long every trial trains and how it is evaluated, in stated units.

The unit of training is the generator step (every trial also records D steps, real images shown,
wall seconds and FLOPs, so arms can be compared at equal compute too). ``auto`` is quick on a CPU
and standard on CUDA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gan_core.errors import UnknownName


@dataclass(frozen=True)
class Budget:
    name: str
    g_steps: int  # training length of every trial, in generator steps
    eval_n: int | None  # generated samples for the final metrics; None = as many as held-out images
    eval_every: int  # generator steps between intermediate evaluations (anytime curves, pruning)
    eval_n_intermediate: int
    width_scale: float  # < 1 shrinks every model's channels to fit the time; said in the output and report
    batch_size: int | None  # None keeps the base config's batch
    seeds: int  # default --seeds
    joint_trials: int  # trials of the searched (joint) study
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


BUDGETS = {
    "smoke": Budget("smoke", 4, 100, 4, 100, 1 / 16, 16, 1, 3,
                    "4 G steps of 1/16-width models at batch 16: checks that everything runs, measures nothing"),
    "quick": Budget("quick", 100, None, 50, 200, 1 / 8, None, 3, 12,
                    "100 G steps of models shrunk to 1/8 of their width, so that a 5-arm study with 3 seeds "
                    "finishes in about 15 minutes on a 2-core CPU; shows trends, not converged quality"),
    "standard": Budget("standard", 5000, None, 500, 500, 1.0, None, 3, 40,
                       "5,000 G steps at full width (a GPU budget)"),
    "paper": Budget("paper", 20000, None, 1000, 1000, 1.0, None, 5, 100,
                    "20,000 G steps at full width, 5 seeds"),
}


def resolve(name: str, cuda: bool) -> Budget:
    if name == "auto":
        return BUDGETS["standard" if cuda else "quick"]
    if name not in BUDGETS:
        raise UnknownName("budget", name, ["auto", *BUDGETS])
    return BUDGETS[name]
