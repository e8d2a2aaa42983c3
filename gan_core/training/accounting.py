"""The models as a run builds them, and what they cost: FLOPs per D and G step (and so at any point of a run's
schedule), memory per image in a step, every layer's channels. Counted on the meta device: no memory, no time.
The training loop, the studies (equal compute) and the benchmarks (model FLOPs against peak) all ask here."""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from gan_core.training import models, order, plugin_arch
from gan_core.training.config import ModelConfig, RunConfig


def build_models(cfg: RunConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) of a run's config: the blog's family, DCGAN's, or a --arch builder's (plugin_arch)."""
    return plugin_arch.build_models(cfg.model)


def solo_generator(m: ModelConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """A generator holding ``state``'s tensors (a checkpoint's "g", a member's part of a pack), in training mode:
    built on the meta device, so no initialisation is computed only to be overwritten."""
    with torch.device("meta"):
        g, _ = plugin_arch.build_models(m)
    g.load_state_dict(state, assign=True)
    return g.train()


def channel_lists(cfg: RunConfig) -> dict[str, list[int]]:
    """Every conv layer's output channels of G and D, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return models.channel_lists(*build_models(cfg))


def count_flops(cfg: RunConfig) -> tuple[float, float]:
    """Model FLOPs (forward + backward) of one D step and one G step, counted once on the meta device."""
    return _count_flops(cfg.model, cfg.schedule.batch_size)


@cache  # a study counts the same model many times
def _count_flops(m: ModelConfig, b: int) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        g, d = plugin_arch.build_models(m)
        z = torch.randn(b, m.latent_dim)
        real = torch.randn(b, m.channels, models.IMAGE_SIZE, models.IMAGE_SIZE)
    with FlopCounterMode(display=False) as counter:  # a D step: G forward, D on real and fake, D backward
        with torch.no_grad():
            fake = g(z)
        (d(real).sum() + d(fake).sum()).backward()
    d_flops = counter.get_total_flops()
    d.requires_grad_(False)  # as in the loop: a G step needs no D weight gradients
    with FlopCounterMode(display=False) as counter:
        d(g(z)).sum().backward()
    return float(d_flops), float(counter.get_total_flops())


def flops_at(cfg: RunConfig, g_steps: int, n_images: int) -> float:
    """Model FLOPs of a run's first ``g_steps`` G steps with the D steps its order places among them (training
    ``n_images`` images: the blog's order depends on it)."""
    d_flops, g_flops = count_flops(cfg)
    d_steps = order.schedule(cfg.schedule, n_images).d_steps_before(g_steps)
    return g_steps * g_flops + d_steps * d_flops


def g_steps_for(cfg: RunConfig, flops: float, n_images: int) -> int:
    """The fewest G steps at which a run has spent at least ``flops`` model FLOPs: where an arm of a study has had
    the compute of another (a run's eval_at step may fall mid-iteration: the iteration ends there)."""
    hi = 1
    while flops_at(cfg, hi, n_images) < flops:
        hi *= 2
    lo = hi // 2  # flops_at(lo) < flops <= flops_at(hi), or lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if flops_at(cfg, mid, n_images) < flops else (lo, mid)
    return hi


@cache
def bytes_per_image(m: ModelConfig) -> float:
    """Memory one image of a batch takes in a training step, estimated: the float32 outputs of every layer of G
    and of D (run on real and fake images), each kept for the backward pass and matched by its gradient."""
    with torch.device("meta"):
        g, d = plugin_arch.build_models(m)
        # a batch of 2, since BatchNorm on [1, C] fails in training mode; out[0] counts one image's share
        z, image = torch.empty(2, m.latent_dim), torch.empty(2, m.channels, models.IMAGE_SIZE, models.IMAGE_SIZE)
        elements = []
        for net, x in ((g, z), (d, image), (d, image)):
            hooks = [layer.register_forward_hook(lambda _m, _i, out: elements.append(out[0].numel()))
                     for layer in net.modules() if not list(layer.children())]
            net(x)
            for h in hooks:
                h.remove()
    return 2 * 4 * sum(elements)
