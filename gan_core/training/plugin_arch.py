"""A user's model family plugged in as ``--arch module:function`` (ModelConfig.arch), trained like the built-in ones.

The builder is called with the family's knobs its signature accepts (KNOBS: depth, width, channels, head,
latent_dim, shrink; all of them if it takes ``**kwargs``) and returns ``(G, D)``: G maps noise [B, latent_dim]
to images [B, channels, 32, 32] in the head's range (tanh: [-1, 1], else [0, 1]); D maps such images to one
logit each ([B] or [B, 1]; the loss applies the sigmoid). The shapes are checked once, on the meta device,
before training. The config records the import path (``model.arch``) and a SHA-256 of the builder module's
source (``model.arch_sha256``), so that resuming a run whose code has changed is refused in one line.
"""

from __future__ import annotations

import inspect
from functools import cache

import torch
from torch import nn

from gan_core import plugins
from gan_core.errors import ConfigError
from gan_core.training import models
from gan_core.training.config import ModelConfig, RunConfig, override
from gan_core.training.models import IMAGE_SIZE

FLAG = "--arch"
KNOBS = ("depth", "width", "channels", "head", "latent_dim", "shrink")  # ModelConfig fields a builder may take


def is_plugin(arch: str) -> bool:
    return ":" in arch


def accepted_knobs(spec: str) -> tuple[str, ...]:
    """The knobs the builder takes, from its signature (every knob when it takes **kwargs)."""
    params = inspect.signature(plugins.load(spec, FLAG)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return KNOBS
    names = {p.name for p in params}
    return tuple(k for k in KNOBS if k in names)


def with_source_hash(cfg: RunConfig) -> RunConfig:
    """cfg with model.arch_sha256 set to the hash of the builder's source as it is now (a built-in arch: as is)."""
    if not is_plugin(cfg.model.arch):
        return cfg
    return override(cfg, {"model.arch_sha256": plugins.source_sha256(cfg.model.arch, FLAG)})


def check_knobs(spec: str, keys, why: str) -> None:
    """Refuse dotted config keys (``model.depth``) that vary a knob the builder does not take: ``why`` says who
    varies them (e.g. "the depth study's arms")."""
    taken = accepted_knobs(spec)
    ignored = sorted({k.split(".", 1)[1] for k in keys if k.startswith("model.")} & set(KNOBS) - set(taken))
    if ignored:
        raise ConfigError(f"{why} vary {', '.join(ignored)}, which {FLAG} {spec} does not take (it takes: "
                          f"{', '.join(taken) or 'none'}); take them in its signature, or leave them at the base's")


def build_models(m: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) of any family: a user's builder (--arch module:function), or the built-in blog and DCGAN families."""
    if is_plugin(m.arch):
        return build(m)
    return models.build(m.arch, m.depth, m.width, m.channels, m.head, m.latent_dim, m.shrink)


def build(m: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) from the builder, shapes checked (once per configuration). G gets a ``latent_dim`` attribute."""
    check_shapes(m)
    return _call(m)


def _call(m: ModelConfig) -> tuple[nn.Module, nn.Module]:
    fn = plugins.load(m.arch, FLAG)
    out = fn(**{k: getattr(m, k) for k in accepted_knobs(m.arch)})
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(n, nn.Module) for n in out)):
        raise ConfigError(f"{FLAG} {m.arch} returned {type(out).__name__}; return (generator, discriminator), two "
                          "torch.nn.Module")
    g, d = out
    if getattr(g, "latent_dim", m.latent_dim) != m.latent_dim:
        raise ConfigError(f"{FLAG} {m.arch}: its generator's latent_dim is {g.latent_dim}, the config's "
                          f"{m.latent_dim}; build it from the latent_dim argument")
    g.latent_dim = m.latent_dim  # sampling reads it (fixed noise, BatchNorm re-estimation)
    return g, d


@cache  # once per configuration and process: a study builds the same member many times
def check_shapes(m: ModelConfig) -> None:
    """G: noise [2, latent_dim] -> [2, channels, 32, 32]; D: those images -> one logit each. One line if not."""
    want = [2, m.channels, IMAGE_SIZE, IMAGE_SIZE]
    with torch.device("meta"):  # shapes only: no memory, no time, and no BatchNorm statistic is touched
        g, d = _call(m)
        images = _forward(g, torch.empty(2, m.latent_dim), m.arch, "generator", "noise [2, latent_dim]")
        if list(images.shape) != want:
            raise ConfigError(f"{FLAG} {m.arch}: the generator maps noise [2, {m.latent_dim}] to "
                              f"{list(images.shape)}; it must give {want} (channels {m.channels}, 32x32)")
        logits = _forward(d, torch.empty(want), m.arch, "discriminator", f"images {want}")
        if list(logits.shape) not in ([2], [2, 1]):
            raise ConfigError(f"{FLAG} {m.arch}: the discriminator maps images {want} to {list(logits.shape)}; it "
                              "must give one logit per image, [2] or [2, 1]")


def _forward(net: nn.Module, x: torch.Tensor, spec: str, which: str, what: str) -> torch.Tensor:
    try:
        out = net(x)
    except Exception as e:  # noqa: BLE001 - the user's network failing on the family's shapes is one line
        first = (str(e).splitlines() or [""])[0]
        raise ConfigError(f"{FLAG} {spec}: the {which} fails on {what} ({type(e).__name__}: {first})") from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{FLAG} {spec}: the {which} returned a {type(out).__name__}, not a tensor")
    return out
