"""Budgets: how long every trial trains and how it is evaluated, in stated units.

The unit of training is the generator step (every trial also records D steps, real images shown,
wall seconds and FLOPs, so arms can be compared at equal compute too). ``auto`` is quick on a CPU
and standard on CUDA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from gan_core.errors import UnknownName

QUICK_G_STEPS = 900  # where the CPU base (preset dcgan-cpu, 1:1) covers 9-10 of the 10 digits (measured, 4 seeds)


@dataclass(frozen=True)
class Budget:
    name: str
    g_steps: int  # training length of every trial, in generator steps
    eval_n: int | None  # generated samples for the final metrics; None = as many as held-out images
    eval_every: int  # generator steps between intermediate evaluations (anytime curves, pruning); also step 0
    eval_n_intermediate: int
    batch_size: int | None  # None keeps the base config's batch
    seeds: int  # default --seeds
    joint_trials: int  # trials of the searched (joint) study
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


# How wide the models are is not the budget's business: each study names its base (and a shrink factor
# that never takes a layer below 8 channels) per budget, in ablations.studies.
BUDGETS = {
    "smoke": Budget("smoke", 4, 100, 4, 100, 16, 1, 3,
                    "4 G steps of tiny models at batch 16: checks that everything runs, measures nothing"),
    "quick": Budget("quick", QUICK_G_STEPS, None, QUICK_G_STEPS // 6, 200, None, 5, 12,
                    f"{QUICK_G_STEPS:,} G steps, 5 seeds, with a base that learns digits in that budget: on a "
                    "2-core CPU with bf16 instructions (the default there: bf16 autocast) step_ratio takes 8 minutes, "
                    "optimizer 12, depth 7, width 6, blog_quirks 13 at most (Intel Xeon with AMX); 12-24 minutes "
                    "in fp32 (AMD EPYC, the optimizer's estimated; width on a Xeon; README)"),
    "standard": Budget("standard", 5000, None, 500, 500, None, 5, 40, "5,000 G steps, 5 seeds (a GPU budget)"),
    "paper": Budget("paper", 20000, None, 1000, 1000, None, 5, 100, "20,000 G steps, 5 seeds"),
}


def resolve(name: str, cuda: bool) -> Budget:
    if name == "auto":
        return BUDGETS["standard" if cuda else "quick"]
    if name not in BUDGETS:
        raise UnknownName("budget", name, ["auto", *BUDGETS])
    return BUDGETS[name]
