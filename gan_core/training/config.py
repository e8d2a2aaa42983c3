"""One frozen RunConfig per run: everything that changes a result lives here.

It round-trips through JSON (``to_dict`` / ``from_dict``), is written to ``config.json`` in every
run folder, into every checkpoint and into every Optuna trial. Validation happens on construction
so that a bad value fails before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from gan_core.errors import ConfigError, UnknownName

ARCHS = ("blog", "dcgan")
RENAMED = {"seed": "blog"}  # old preset and arch names: refused with one line naming the new one
DEPTHS = range(4, 10)  # 9 = the blog's depth
HEADS = ("bn_sigmoid", "sigmoid", "tanh")  # bn_sigmoid = the blog's BatchNorm before the output Sigmoid
LOSSES = ("bce", "bce_logits")  # bce = the blog's Sigmoid + BCELoss; bce_logits is the safe form
SOURCES = ("embedded", "mnist", "folder")
ORDERS = ("sampled", "blog_epochs")  # blog_epochs = the blog's unshuffled epochs and its D rule (training/order.py)
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # reduce-overhead = CUDA graphs


def _choice(name: str, value: Any, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{name} {value!r} is not valid; choose one of: {', '.join(map(str, valid))}")


MAX_SEED = 2**31 - 1  # a run seeds torch with seed, seed + 1 and seed + 2, each of which must fit an int64


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:  # NaN fails too
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _arch(arch: Any) -> None:
    """A built-in family, or a user's builder as module:function (gan_core.training.plugin_arch; imported only
    when the models are built, so that a config is read anywhere)."""
    if arch in ARCHS:
        return
    if isinstance(arch, str) and arch in RENAMED:  # a config.json may hold any JSON value here
        raise ConfigError(f"arch {arch!r} is now {RENAMED[arch]!r}")
    from gan_core import plugins

    if not isinstance(arch, str) or ":" not in arch:
        raise ConfigError(f"arch {arch!r} is not valid; choose one of: {', '.join(ARCHS)}, or module:function "
                          "(your own builder)")
    plugins.split_spec(arch, "--arch")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "blog"  # blog, dcgan, or a user's builder "module:function" (gan_core.training.plugin_arch)
    depth: int = 9  # blocks in G and in D (D: conv blocks + the 1-logit head)
    width: float = 1.0  # channel multiplier; 1.0 = the blog's 768-wide top layer
    channels: int = 1  # 3 reproduces the blog's RGB copies of grey digits
    head: str = "bn_sigmoid"
    latent_dim: int = 100
    shrink: float = 1.0  # a budget's channel factor on top of width; never below 8 channels (models._scaled)
    arch_sha256: str = ""  # a builder's module source hash (plugin_arch.with_source_hash); "" for a built-in arch

    def __post_init__(self):
        _arch(self.arch)
        if self.depth not in DEPTHS:
            raise ConfigError(f"depth must be an integer from {DEPTHS[0]} to {DEPTHS[-1]}, got {self.depth!r}")
        _positive_float("width", self.width)
        if self.width > 4:
            raise ConfigError(f"width must be in (0, 4], got {self.width!r}")
        _choice("channels", self.channels, (1, 3))
        _choice("head", self.head, HEADS)
        _positive_int("latent_dim", self.latent_dim)
        _positive_float("shrink", self.shrink)
        if self.shrink > 1:
            raise ConfigError(f"shrink must be in (0, 1], got {self.shrink!r}")


@cache  # walking torch.optim imports its submodules: seconds the first time
def optimizer_names() -> list[str]:
    import torch.optim

    return sorted(
        n for n, v in vars(torch.optim).items()
        if isinstance(v, type) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer
    )


# torch.optim classes the loop cannot drive: LBFGS's step() needs a closure that re-evaluates the loss,
# SparseAdam takes only sparse gradients (embeddings), and a GAN's convolutions have dense ones
UNSUPPORTED_OPTIMIZERS = {"LBFGS": "its step() needs a closure", "SparseAdam": "it takes only sparse gradients"}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "Adadelta"  # a class in torch.optim
    lr: float = 1e-3  # the blog's Adadelta lr (Adadelta's usual lr is 1.0)
    kwargs: dict = field(default_factory=dict)  # extra constructor arguments, JSON values

    def __post_init__(self):
        names = optimizer_names()
        canonical = {n.lower(): n for n in names}.get(str(self.name).lower())
        usable = ", ".join(n for n in names if n not in UNSUPPORTED_OPTIMIZERS)
        if canonical is None:
            raise ConfigError(f"optimizer {self.name!r} is not in torch.optim; choose one of: {usable}")
        if canonical in UNSUPPORTED_OPTIMIZERS:
            raise ConfigError(f"optimizer {canonical} cannot train a GAN here ({UNSUPPORTED_OPTIMIZERS[canonical]}); "
                              f"choose one of: {usable}")
        object.__setattr__(self, "name", canonical)
        _positive_float("lr", self.lr)
        if not isinstance(self.kwargs, dict):
            raise ConfigError(f"optimizer kwargs must be a JSON object, got {self.kwargs!r}")
        import torch

        try:  # construct it once on a dummy parameter so that bad arguments fail before any work
            getattr(torch.optim, canonical)([torch.zeros(1, requires_grad=True)], lr=self.lr, **self.kwargs)
        except Exception as e:  # noqa: BLE001 - whatever the optimizer raises, the user gets one line
            raise ConfigError(f"optimizer {canonical} rejects lr={self.lr}, {self.kwargs}: {e}") from None


@dataclass(frozen=True)
class ScheduleConfig:
    d_steps: int = 1  # discriminator steps per iteration
    g_steps: int = 5  # generator steps per iteration; 1:5 is the blog's schedule
    batch_size: int = 100
    loss: str = "bce"
    reuse_noise: bool = False  # True = the blog's two noise batches drawn once and reused
    order: str = "sampled"  # real batches at random; blog_epochs = the blog's unshuffled epochs (training/order.py)

    def __post_init__(self):
        _positive_int("d_steps", self.d_steps)
        _positive_int("g_steps", self.g_steps)
        _positive_int("batch_size", self.batch_size)
        _choice("loss", self.loss, LOSSES)
        _choice("data order", self.order, ORDERS)

    @property
    def ratio(self) -> str:
        return f"{self.d_steps}:{self.g_steps}"


@dataclass(frozen=True)
class DataConfig:
    source: str = "embedded"
    root: str | None = None  # mnist: folder holding MNIST/raw; folder: the ImageFolder root
    download: bool = False  # mnist only: fetch the files when missing (needs internet)
    train_limit: int | None = None  # first N images of the train split (the blog used 900)
    heldout_per_class: int = 100  # embedded/folder: stratified held-out images per class

    def __post_init__(self):
        _choice("data source", self.source, SOURCES)
        if self.source == "folder" and not self.root:
            raise ConfigError("data source 'folder' needs a root folder (--data-root DIR)")
        if self.train_limit is not None:
            _positive_int("train_limit", self.train_limit)
        _positive_int("heldout_per_class", self.heldout_per_class)


@dataclass(frozen=True)
class DeviceConfig:
    device: str = "auto"  # auto = cuda when available, else cpu
    amp: bool = False  # bf16 autocast; ablations.run turns it on for a CPU with bf16 instructions (devices.native_bf16)
    channels_last: bool = False
    compile: str = "off"
    cudnn_benchmark: bool = True

    def __post_init__(self):
        d = str(self.device)
        if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ConfigError(f"device {d!r} is not valid; choose one of: auto, cpu, cuda, cuda:N")
        _choice("compile", self.compile, COMPILE_MODES)

    @property
    def precision(self) -> str:
        """What the training computes in, for the record."""
        return "bf16 autocast" if self.amp else "fp32"


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    g_optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    d_optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    steps: int = 1000  # the budget, in generator steps
    seed: int = 0
    log_every: int = 50  # G steps between stats.jsonl lines (host syncs); a checkpoint, eval or sample adds one
    sample_every: int = 0  # generator steps between samples.png refreshes; 0 = at the end only
    checkpoint_every: int = 500  # generator steps between checkpoints; the end always writes one
    eval_every: int = 0  # generator steps between on_eval callbacks; 0 = none
    # G steps at which on_eval is called too (a study's equal-compute point, its G-step budget when it trains on
    # past it); an iteration that would pass one ends there, as one ends at the budget, so that the generator
    # judged there is the one a run of that many steps ends with
    eval_at: tuple[int, ...] = ()

    def __post_init__(self):
        _positive_int("steps", self.steps)
        _positive_int("seed", self.seed, minimum=0)
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED:,}, got {self.seed:,}")
        _positive_int("log_every", self.log_every)
        for name in ("sample_every", "checkpoint_every", "eval_every"):
            _positive_int(name, getattr(self, name), minimum=0)
        if not isinstance(self.eval_at, list | tuple):
            raise ConfigError(f"eval_at must be a list of G steps, got {self.eval_at!r}")
        for step in self.eval_at:
            _positive_int("each of eval_at", step)
        object.__setattr__(self, "eval_at", tuple(sorted(set(self.eval_at))))  # JSON gives a list; frozen = hashable

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return _from_dict(cls, d)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))


def _from_dict(cls, d: dict):
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, value in d.items():
        sub = fields[name].default_factory if dataclasses.is_dataclass(fields[name].default_factory) else None
        kwargs[name] = _from_dict(sub, value) if sub is not None else value
    return cls(**kwargs)


def override(cfg, changes: dict[str, Any]):
    """Return a copy of a config with dotted keys replaced: ``{"model.depth": 5, "steps": 10}``."""
    nested: dict[str, dict] = {}
    flat = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if not any(f.name == head for f in dataclasses.fields(cfg)):
            valid = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise ConfigError(f"unknown config key {key!r}; valid: {valid}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, sub in nested.items():
        flat[head] = override(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **flat)


def parse_ratio(text: str) -> tuple[int, int]:
    """'1:5' -> (1, 5): D steps and G steps per iteration."""
    parts = str(text).split(":")
    if len(parts) == 2 and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ConfigError(f"ratio {text!r} is not valid; write D:G with positive integers, e.g. 1:5 or 2:1")


# Presets are dotted override maps on top of RunConfig(): a preset names only what it changes, and
# importing this module builds no OptimizerConfig (whose check imports torch, which takes seconds).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The blog, setting for setting (../shared/seed/README.md).
    "blog": {
        "model.arch": "blog", "model.depth": 9, "model.width": 1.0, "model.channels": 3,
        "model.head": "bn_sigmoid",
        "g_optim.name": "Adadelta", "g_optim.lr": 1e-3, "g_optim.kwargs": {},
        "d_optim.name": "Adadelta", "d_optim.lr": 1e-3, "d_optim.kwargs": {},
        "schedule.d_steps": 1, "schedule.g_steps": 5, "schedule.batch_size": 100,
        "schedule.loss": "bce", "schedule.reuse_noise": True, "schedule.order": "blog_epochs",
        "data.train_limit": 900,
    },
    # A known-good DCGAN (Radford et al.): 4 blocks, Tanh, Adam(2e-4, beta1=0.5), 1:1, all data.
    "dcgan": {
        "model.arch": "dcgan", "model.depth": 4, "model.width": 0.25, "model.channels": 1,
        "model.head": "tanh",
        "g_optim.name": "Adam", "g_optim.lr": 2e-4, "g_optim.kwargs": {"betas": [0.5, 0.999]},
        "d_optim.name": "Adam", "d_optim.lr": 2e-4, "d_optim.kwargs": {"betas": [0.5, 0.999]},
        "schedule.d_steps": 1, "schedule.g_steps": 1, "schedule.batch_size": 64,
        "schedule.loss": "bce_logits", "schedule.reuse_noise": False, "schedule.order": "sampled",
        "data.train_limit": None,
    },
}


# The DCGAN member a 2-core CPU trains to digits within a study's budget: 1/8 width (96 channels at the top),
# batch 32, Adam at twice DCGAN's lr. Measured on one core, 1:1: a G step costs 42 ms (75 ms at batch 64), and at
# 900 G steps seeds 0-3 cover 9, 10, 9, 9 of the 10 digits at fid1k 8-11; DCGAN's own lr 2e-4 at batch 64
# covers 7 at 800 steps and needs about 1,400 to cover 9 on every seed.
PRESETS["dcgan-cpu"] = {**PRESETS["dcgan"], "model.width": 0.125, "schedule.batch_size": 32,
                        "g_optim.lr": 4e-4, "d_optim.lr": 4e-4}


def preset(name: str) -> RunConfig:
    if name in RENAMED:
        raise ConfigError(f"preset {name!r} is now {RENAMED[name]!r}: use --preset {RENAMED[name]} (or --base "
                        f"{RENAMED[name]})")
    if name not in PRESETS:
        raise UnknownName("preset", name, PRESETS)
    return override(RunConfig(), PRESETS[name])
