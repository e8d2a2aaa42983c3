"""The studies, as data: one search-space function per study, in a registry.

A grid study has arms (a label and the config changes it makes to the base); each arm is trained
with every seed exactly once. The joint study has no arms: TPE samples every knob at once.
A search-space function takes an Optuna trial and returns dotted RunConfig overrides.

Every study names its base per budget: a preset and a shrink factor (channels x shrink, never below
8 channels). The blog's own setting does not learn in any budget this suite can afford (Adadelta at
lr 1e-3 moves a weight by about 1e-6 per step), and a study whose base never leaves its
initialisation measures the seed, not the knob: so the step ratio, optimizer, depth and width studies
start from a DCGAN member that does learn, and say so. seed_quirks keeps the blog as its base: its
question is what the blog's own setting costs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import optuna

from gan_core.training.config import parse_ratio


@dataclass(frozen=True)
class Base:
    """What every arm of a study starts from at one budget."""

    preset: str  # a gan_core preset
    shrink: float = 1.0  # channels x shrink, never below 8 channels (gan_core.training.models)
    why: str = ""  # why this base, said on the page when it is not the blog's own setting
    batch_size: int | None = None  # a cheaper batch at this budget; None keeps the preset's


DCGAN_WHY = ("the blog's own setting does not learn in this budget (Adadelta at lr 1e-3 moves each weight by about "
             "1e-6 per step: its own code gives noise after 200 epochs), so the arms start from a DCGAN member, "
             "which does")
BLOG_BASES = {"smoke": Base("blog", 1 / 16), "quick": Base("blog", 1 / 16), "standard": Base("blog"),
              "paper": Base("blog")}
# The blog's model costs 137 ms per G step at 1/16 width and its batch of 100 on one core (its layers work at
# 22-32 pixels). At quick its batch is 32. With every choice fixed the network is DCGAN's 4 blocks (FIXED_NETWORK):
# the blog's stack cut to 4 blocks (a 22x22 output kernel) covered only 4 of the 10 digits in 900 G steps (fid1k 54,
# 5 seeds), DCGAN's at 1/16 covers 8-10 on every seed at 600 G steps (fid1k 6.3-9.8, measured) for 29 ms an
# iteration on one core, against 128 ms for the blog's 9 blocks (measured on the 2-core AMD EPYC).
QUIRK_BASES = {**BLOG_BASES,
               "quick": Base("blog", 1 / 16, "the blog's setting, with 1/16 of its channels (never below 8) and batch "
                             "32 instead of 100; with every choice fixed its network is DCGAN's 4 blocks (48 channels "
                             "at the top), which learns digits in 900 G steps on every seed, where the blog's own "
                             "stack cut to 4 blocks covered only 4 of the 10 digits", batch_size=32)}


def learning_bases(quick_shrink: float = 1.0) -> dict[str, Base]:
    """A DCGAN member as base: on the CPU's quick budget the one that learns there (dcgan-cpu, shrunk by
    ``quick_shrink``), on a GPU's budgets the usual one (width 1/4, DCGAN's Adam recipe)."""
    return {"smoke": Base("dcgan-cpu", 1 / 8, DCGAN_WHY), "quick": Base("dcgan-cpu", quick_shrink, DCGAN_WHY),
            "standard": Base("dcgan", 1.0, DCGAN_WHY), "paper": Base("dcgan", 1.0, DCGAN_WHY)}


@dataclass(frozen=True)
class Arm:
    label: str
    changes: dict


@dataclass(frozen=True)
class Family:
    """One family tuned over one knob (an optimizer over its learning rate): a candidate arm per swept value. Its
    verdict arm (``label``) trains the candidate that did best on the tuning seeds."""

    label: str  # the verdict arm, e.g. "Adam tuned"
    values: tuple[float, ...]  # the swept values, in order (the page's x axis)
    candidates: tuple[Arm, ...]  # one per value, same order
    usual: float  # the family's usual value: a tie (every candidate failed) goes to the candidate nearest it


# Tuning seeds are numbered past any verdict seed: ablations.run refuses more seeds than MAX_TRIALS (10,000) trials,
# so the verdict seeds 0..n-1 of a study with at least one arm never reach 10,000.
TUNING_SEED = 10_000


@dataclass(frozen=True)
class Tuning:
    """A study's tuning phase: every family's candidates train on the tuning seeds first; then each family's verdict
    arm is queued on the verdict seeds with its best candidate's changes (ablations.trial_queue). The choice is made
    on seeds the verdict never sees, so that picking the best of several values does not flatter the winner."""

    knob: str  # what is swept, e.g. "learning rate"
    families: tuple[Family, ...]
    seeds: tuple[int, ...] = (TUNING_SEED,)

    @property
    def candidates(self) -> tuple[Arm, ...]:
        """Every family's candidates, family by family: what the tuning phase trains on each tuning seed."""
        return tuple(c for f in self.families for c in f.candidates)

    def text(self) -> str:
        """The tuning phase in words, for --list and the plan a run prints."""
        seeds = ", ".join(map(str, self.seeds))
        return (f"tuned first: {len(self.families)} families x {len(self.families[0].candidates)} values of the "
                f"{self.knob} on tuning seed(s) {seeds}, each family's best one then judged on the verdict seeds")

    def family(self, label: str) -> Family | None:
        return next((f for f in self.families if f.label == label), None)

    def candidate(self, label: str) -> Arm | None:
        return next((c for c in self.candidates if c.label == label), None)

    def description(self) -> dict:
        return {"knob": self.knob, "seeds": list(self.seeds),
                "families": [{"arm": f.label, "candidates": [c.label for c in f.candidates], "values": list(f.values)}
                             for f in self.families]}


@dataclass(frozen=True)
class Study:
    name: str
    knob: str  # what varies: the x axis of the report
    question: str  # the blog's question this study answers
    space: Callable[[optuna.Trial], dict]
    arms: tuple[Arm, ...] = ()  # empty for searched (not gridded) studies
    blog_arm: str | None = None  # the arm that is the blog's own setting
    bases: Mapping[str, Base] = field(default_factory=lambda: BLOG_BASES)  # budget name -> base
    # What is special about the study, stored in its record for the report (which holds no study name): its kind
    # of verdict ("leave_one_out"), the arm that verdict is measured against, the page's heading, and so on.
    special: Mapping = field(default_factory=dict)
    tuning: Tuning | None = None  # a tuning phase before the verdict: its families' arms are in ``arms``

    @property
    def is_grid(self) -> bool:
        return bool(self.arms)

    @property
    def tuning_trials(self) -> int:
        """The trials of its tuning phase (0 without one): every candidate on every tuning seed."""
        return len(self.tuning.candidates) * len(self.tuning.seeds) if self.tuning else 0

    @property
    def fixed_arms(self) -> tuple[Arm, ...]:
        """The arms whose changes are known before anything trains (every arm but the tuned ones)."""
        return tuple(a for a in self.arms if self.tuning is None or self.tuning.family(a.label) is None)

    @property
    def trained_arms(self) -> tuple[Arm, ...]:
        """Every set of changes a trial of the study may train: the fixed arms and every tuning candidate (a tuned
        arm's changes are its winning candidate's)."""
        return self.fixed_arms + (self.tuning.candidates if self.tuning else ())

    @property
    def labels(self) -> list[str]:
        """Every value of a trial's "arm" parameter: the verdict arms, then the tuning candidates."""
        arms = [a.label for a in self.arms]
        return arms + [a.label for a in self.trained_arms if a.label not in arms]

    def changes(self, label: str, candidate: str | None = None) -> dict:
        """The config changes of arm ``label``; a tuned arm's are those of ``candidate``, the one it was queued with."""
        tuned = self.tuning is not None and self.tuning.family(label) is not None
        return self.tuning.candidate(candidate).changes if tuned else \
            next(a for a in self.trained_arms if a.label == label).changes

    @property
    def restores(self) -> bool:
        """Its arms leave fixes out to restore the base's own settings (leave-one-out): no other base makes sense."""
        return self.special.get("verdict") == "leave_one_out"

    def arm(self, label: str) -> Arm:
        return next(a for a in self.arms if a.label == label)

    def base(self, budget: str) -> Base:
        return self.bases[budget]

    def description(self) -> dict:
        """What the report shows of this study; the runner stores it in the Optuna study's user attrs, so that
        the report reads it from the storage and never imports this registry."""
        tuning = {"tuning": self.tuning.description()} if self.tuning else {}
        return {"question": self.question, "knob": self.knob, "arms": [a.label for a in self.arms],
                "blog_arm": self.blog_arm, **self.special, **tuning}


REGISTRY: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add a study to the registry; a name used twice is a programming error, refused at import."""
    if study.name in REGISTRY:
        raise ValueError(f"study {study.name!r} is registered twice")
    REGISTRY[study.name] = study
    return study


def grid(name: str, knob: str, question: str, arms: list[Arm], blog_arm: str,
         bases: Mapping[str, Base] = BLOG_BASES, special: Mapping | None = None, tuning: Tuning | None = None) -> Study:
    """A grid study; with ``tuning``, one verdict arm per tuned family follows the fixed ``arms``."""
    arms = list(arms) + [Arm(f.label, {}) for f in (tuning.families if tuning else ())]

    def space(trial: optuna.Trial) -> dict:
        return study.changes(trial.suggest_categorical("arm", study.labels), trial.user_attrs.get("candidate"))

    study = Study(name, knob, question, space, tuple(arms), blog_arm, bases, special or {}, tuning)
    return register(study)


def _ratio(d: int, g: int) -> Arm:
    return Arm(f"{d}:{g}", {"schedule.d_steps": d, "schedule.g_steps": g})


def _optim(name: str, lr: float, kwargs: dict | None = None, d_lr: float | None = None) -> dict:
    kwargs = kwargs or {}
    return {"g_optim.name": name, "g_optim.lr": lr, "g_optim.kwargs": kwargs,
            "d_optim.name": name, "d_optim.lr": d_lr or lr, "d_optim.kwargs": kwargs}


ADAM = {"betas": [0.5, 0.999]}
# The joint study's optimizer choices, each at one learning rate (its stored trials hold these labels).
OPTIMIZER_ARMS = [
    Arm("Adadelta lr=1e-3", _optim("Adadelta", 1e-3)),  # the blog
    Arm("Adadelta lr=1.0", _optim("Adadelta", 1.0)),  # Adadelta's usual learning rate
    Arm("Adam 2e-4", _optim("Adam", 2e-4, ADAM)),  # DCGAN's recipe
    Arm("Adam TTUR 1e-4/4e-4", _optim("Adam", 1e-4, ADAM, d_lr=4e-4)),  # two time-scale update rule
    Arm("RMSprop 2e-4", _optim("RMSprop", 2e-4)),
    Arm("SGD 0.01 m=0.9", _optim("SGD", 0.01, {"momentum": 0.9})),
]

grid("step_ratio", "D:G steps per iteration",
     "Does training the generator five times per discriminator step help?",
     [_ratio(5, 1), _ratio(2, 1), _ratio(1, 1), _ratio(1, 2), _ratio(1, 5)], blog_arm="1:5",
     bases=learning_bases())


def _lr(x: float) -> str:
    """A learning rate as arm labels write it: 0.33, 1, 0.01, 2e-4, 6.7e-5."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{x:.2g}" if -2 <= int(exponent) <= 1 else f"{float(mantissa):g}e{int(exponent)}"


def _family(name: str, usual: float, changes: Callable[[float], dict], label: Callable[[float], str],
            values: int = 5, factor: float = 3.0, lowest: int = -1) -> Family:
    """``values`` learning rates log-spaced ``factor`` apart, from ``usual * factor ** lowest`` upwards."""
    # rounded to 6 digits: 6e-4, not 6.000...1e-4
    lrs = tuple(float(f"{usual * factor ** (lowest + i):.6g}") for i in range(values))
    return Family(f"{name} tuned", lrs, tuple(Arm(f"{name} lr={label(lr)}", changes(lr)) for lr in lrs), usual)


# Every optimizer family gets the same tuning budget: 5 learning rates a factor of 3 apart, from a third of its usual
# one to 27x it (Lucic et al. 2018 gave every model the same number of tuning trials before comparing). The sweep
# reaches further up than down because the CPU budget's 900 G steps reward fast rates (Xeon, bf16, 2026-12-04): 3
# values around the usual one (1/3, 1, 3) left 4 of the 5 winners at the top and Adam TTUR failing at every rate; a
# 4th (9x) brought TTUR to fid1k 5.4 on the tuning seed and left Adam and TTUR at the top still; 1/3 lost in every
# family.
# Adadelta is swept from its usual 1.0; the blog's 1e-3 stays the blog's arm, untuned, as the blog ran it.
OPTIMIZER_TUNING = Tuning("learning rate", (
    _family("Adadelta", 1.0, lambda lr: _optim("Adadelta", lr), _lr),
    _family("Adam", 2e-4, lambda lr: _optim("Adam", lr, ADAM), _lr),  # DCGAN's betas
    # two time-scale update rule: D learns 4x faster than G at every swept rate
    _family("Adam TTUR", 1e-4, lambda lr: _optim("Adam", lr, ADAM, d_lr=4 * lr), lambda lr: f"{_lr(lr)}/{_lr(4 * lr)}"),
    _family("RMSprop", 2e-4, lambda lr: _optim("RMSprop", lr), _lr),
    _family("SGD m=0.9", 0.01, lambda lr: _optim("SGD", lr, {"momentum": 0.9}), _lr),
))
grid("optimizer", "optimizer", "Adadelta at lr 1e-3, or something else?",
     [Arm("Adadelta lr=1e-3", _optim("Adadelta", 1e-3))],  # the blog's
     blog_arm="Adadelta lr=1e-3", bases=learning_bases(), tuning=OPTIMIZER_TUNING)
# each extra block is a 3x3 convolution at 16x16 in G and in D: at full dcgan-cpu width depth 9 costs 3.6x depth 4
# per G step (146 against 40 ms on one core), and the six arms would take 29 minutes at quick (22 at 3/4 of the
# channels, measured); half the channels (the extra blocks' cost goes with their square) brings it under 20
grid("depth", "blocks in G and D", "Is the plain 9-block stack too deep?",
     [Arm(str(d), {"model.depth": d}) for d in range(4, 10)], blog_arm="9", bases=learning_bases(1 / 2))
# widths are the blog's multipliers (1 = 768 channels at the top); at quick the widest arm would cost 64x
# the base per step on the CPU, so the budget shrinks every arm by 1/4 (the floor of 8 channels holds).
# Equal compute is the 1/4 arm's: the base (1/8) spends so little in the budget that no arm had learned at its
# compute (fid1k 74-775). 1/4 learns (fid1k 20). 1/2 would learn too, but then 1/8 trains on to 10,673 G steps,
# and its tiny steps cost mostly overhead (36 ms an iteration on one core, against 49 for 1/4 and 68 for 1/2):
# about 32 minutes for the study at quick; with 1/4 it trains on to about 2,800 G steps
grid("width", "channel multiplier", "How wide must the layers be?",
     [Arm(w, {"model.width": float(Fraction(w))}) for w in ("1/8", "1/4", "1/2", "1")], blog_arm="1",
     bases=learning_bases(1 / 4), special={"reference": "1/4"})

# The blog's choices, each with the change that fixes it. The quirks study leaves one out at a time: every arm fixes
# all of them but one, which it restores (its changes are the others' fixes on the blog's preset), so that the arm
# says what that one choice costs once the rest is fixed. A single fix on the blog's setting never learns in a CPU
# budget (every other choice still breaks it), so single fixes cannot rank the choices; leaving one out can.
@dataclass(frozen=True)
class Choice:
    label: str  # the blog's choice, as the arm that restores it is named
    fix: dict  # the dotted changes that fix it
    guess: str = ""  # which of the blog's own guesses it tests (a key of BLOG_GUESSES); "" = one it did not make
    see_also: str = ""  # the study that asks the same question on the DCGAN base, if any


# The blog's three guesses at why its digits stayed blurry (../shared/seed/README.md), in its own order.
BLOG_GUESSES = {"structure": "the network (a plain deep stack of CBR blocks)",
                "settings": "the settings (channels, kernels, strides, learning rate)",
                "data": "too little data"}
# The fixed network: DCGAN's (4 blocks, strided 4x4 kernels, its N(0, 0.02) init) in place of the blog's 9-block
# stack, at the base's channels; restoring the stack restores the blog's depth, kernels, strides and init together
FIXED_NETWORK = {"model.arch": "dcgan", "model.depth": 4}
BLOG_CHOICES = (
    # Adadelta's usual lr (on the DCGAN base the optimizer study's sweep finds its best at 1-3; the blog's 1e-3 does
    # not learn there)
    Choice("Adadelta lr=1e-3", {"g_optim.lr": 1.0, "d_optim.lr": 1.0}, "settings", "optimizer"),
    Choice("D:G 1:5", {"schedule.d_steps": 1, "schedule.g_steps": 1}, see_also="step_ratio"),
    Choice("reused noise", {"schedule.reuse_noise": False}),
    Choice("BatchNorm before Sigmoid", {"model.head": "tanh"}),  # the usual head (sigmoid alone collapsed more)
    Choice("3 channels", {"model.channels": 1}),
    Choice("900 images", {"data.train_limit": None}, "data"),
    Choice("9-block stack", FIXED_NETWORK, "structure", "depth"),
    Choice("unshuffled epochs", {"schedule.order": "sampled"}),
)
ALL_FIXED = "all fixed"


def _fixed_but(restored: str | None) -> dict:
    return {k: v for c in BLOG_CHOICES if c.label != restored for k, v in c.fix.items()}


grid("blog_quirks", "choice restored (the others fixed)", "Why were the blog's digits blurry?",
     [Arm("blog", {}), Arm(ALL_FIXED, _fixed_but(None))] + [Arm(c.label, _fixed_but(c.label)) for c in BLOG_CHOICES],
     blog_arm="blog", bases=QUIRK_BASES,
     special={"verdict": "leave_one_out", "reference": ALL_FIXED, "heading": "Which of the blog's choices made its "
              "digits blurry?", "choices": [{"label": c.label, "guess": c.guess, "see_also": c.see_also}
                                            for c in BLOG_CHOICES], "guesses": BLOG_GUESSES})
RENAMED = {"seed_quirks": "blog_quirks"}  # old study names: refused with one line naming the new one


def _joint_space(trial: optuna.Trial) -> dict:
    ratio = trial.suggest_categorical("ratio", ["5:1", "2:1", "1:1", "1:2", "1:5"])
    d, g = parse_ratio(ratio)
    optim = trial.suggest_categorical("optimizer", [a.label for a in OPTIMIZER_ARMS])
    return {
        "schedule.d_steps": d, "schedule.g_steps": g,
        **next(a for a in OPTIMIZER_ARMS if a.label == optim).changes,
        "model.depth": trial.suggest_int("depth", 4, 9),
        "model.width": trial.suggest_categorical("width", [0.125, 0.25, 0.5, 1.0]),
        "model.head": trial.suggest_categorical("head", ["bn_sigmoid", "sigmoid", "tanh"]),
        "schedule.reuse_noise": trial.suggest_categorical("reuse_noise", [True, False]),
        "schedule.loss": trial.suggest_categorical("loss", ["bce", "bce_logits"]),
    }


register(Study("joint", "all knobs", "What is the best configuration this budget can buy?", _joint_space))


def catalogue() -> list[dict]:
    """Every study's name and question, in registry order: the report lists those not run yet."""
    return [{"name": s.name, "question": s.question} for s in REGISTRY.values()]
