"""Packed members (gan_core.training.packing) against the same members trained alone: init, forward, gradients,
optimizer steps. A GAN amplifies rounding over steps, so equivalence is checked per step, not per trajectory."""

import dataclasses

import pytest
import torch

from gan_core.errors import ConfigError
from gan_core.training import data, models, packing, sampling
from gan_core.training.loop import GanSteps
from tests.conftest import tiny_config

SEEDS = (0, 1, 2)
BATCH = 32


def members(arch: str, seeds=SEEDS, depth: int | None = None):
    """(generators, discriminators) built with each seed, exactly as a solo run initialises them."""
    gs, ds = [], []
    for s in seeds:
        torch.manual_seed(s)
        if arch == "seed":  # the blog's family at a size a test affords, its BatchNorm-before-Sigmoid head
            g, d = models.build("seed", depth or 9, 1 / 16, 3, "bn_sigmoid")
        else:
            g, d = models.build("dcgan", depth or 5, 1 / 16, 1, "tanh")
        gs.append(g.train())
        ds.append(d.train())
    return gs, ds


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-12))


@pytest.mark.parametrize("arch", ["seed", "dcgan"])
def test_each_member_starts_exactly_as_its_solo_run(arch):
    gs, ds = members(arch)
    for solo, packed in ((gs, packing.pack(gs)), (ds, packing.pack(ds))):
        for m, net in enumerate(solo):
            state = packing.member_state(packed, m)
            assert state.keys() == net.state_dict().keys()
            for name, value in net.state_dict().items():
                assert torch.equal(state[name], value), (m, name)


@pytest.mark.parametrize("optim", [("Adam", {"betas": (0.5, 0.999)}), ("Adadelta", {}), ("RMSprop", {}),
                                   ("SGD", {"momentum": 0.9})])
def test_an_elementwise_optimizer_step_on_the_pack_is_each_members_own_step(optim):
    name, kwargs = optim
    gs, _ = members("dcgan")
    g_pack = packing.pack(gs)
    z = torch.randn(BATCH, len(SEEDS), 100, generator=torch.Generator().manual_seed(3))
    solo_opts = [getattr(torch.optim, name)(g.parameters(), lr=1e-3, **kwargs) for g in gs]
    pack_opt = getattr(torch.optim, name)(g_pack.parameters(), lr=1e-3, **kwargs)
    for _ in range(2):
        for g, opt, zm in zip(gs, solo_opts, z.unbind(1), strict=True):
            opt.zero_grad()
            g(zm).square().mean().backward()
            opt.step()
        pack_opt.zero_grad()
        g_pack(z).square().mean(dim=(0, 2, 3, 4)).sum().backward()
        pack_opt.step()
    for m, g in enumerate(gs):
        state = packing.member_state(g_pack, m)
        for name_, value in g.state_dict().items():
            if value.is_floating_point():
                assert rel(state[name_], value) < 1e-4, (name, m, name_)


def test_members_of_different_configurations_are_refused():
    g_small = models.build("dcgan", 4, 1 / 16, 1, "tanh")[0]
    g_deep = models.build("dcgan", 5, 1 / 16, 1, "tanh")[0]
    g_wide = models.build("dcgan", 4, 1 / 8, 1, "tanh")[0]
    with pytest.raises(ValueError, match="differ in depth"):
        packing.pack([g_small, g_deep])
    with pytest.raises(ValueError, match="differ in architecture"):  # same layers, other widths
        packing.pack([g_small, g_wide])


def member_grads(net, k: int, m: int) -> list[torch.Tensor]:
    return [p.grad[m * (p.shape[0] // k):(m + 1) * (p.shape[0] // k)] for p in net.parameters()]


def assert_close_grads(packed: list[torch.Tensor], solo: list[torch.Tensor], tol: float, what) -> None:
    whole = torch.cat([g.flatten() for g in solo])
    assert rel(torch.cat([g.flatten() for g in packed]), whole) <= tol, what
    for a, b in zip(packed, solo, strict=True):
        assert a.shape == b.shape and float((a - b).norm()) <= tol * float(whole.norm()), what


@pytest.mark.parametrize("changes, dtype, tol", [
    ({}, torch.float32, 1e-3),  # a DCGAN member: Adam, BCE with logits, fresh noise
    # The blog's family and quirks (at Adadelta's usual lr). In float32 its 17 BatchNorm layers of 8 channels
    # reassociate sums to 1.1e-3 relative in D's gradients (the issue's own probe: 2e-3); in float64 the pack's
    # gradients equal the solo ones to the last bit, which is what packing must guarantee.
    ({"model.arch": "seed", "model.depth": 9, "model.width": 1.0, "model.shrink": 1 / 16, "model.channels": 3,
     "model.head": "bn_sigmoid", "schedule.loss": "bce", "schedule.reuse_noise": True, "schedule.batch_size": 32,
     "g_optim.name": "Adadelta", "g_optim.lr": 1.0, "g_optim.kwargs": {}, "d_optim.name": "Adadelta",
     "d_optim.lr": 1.0, "d_optim.kwargs": {}}, torch.float64, 1e-12),
], ids=["dcgan", "blog-float64"])
def test_packed_steps_give_each_member_its_solo_runs_losses_and_gradients(split, changes, dtype, tol, monkeypatch):
    to_float = sampling.to_float
    monkeypatch.setattr(sampling, "to_float", lambda *a, **kw: to_float(*a, **kw).to(dtype))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # models, noise and data in it; the losses stay float32, as the loop has them
    try:
        cfg = tiny_config(**{"schedule.batch_size": 16, **changes})
        images, cpu, k = data.training_images(split, cfg.data), torch.device("cpu"), len(SEEDS)
        packed = packing.PackedSteps(cfg, list(SEEDS), images, cpu)
        solos = [GanSteps(dataclasses.replace(cfg, seed=s), images, cpu) for s in SEEDS]
        for o in (packed, *solos):  # the loss's float32 targets
            o.ones, o.zeros = o.ones.float(), o.zeros.float()
        for m, solo in enumerate(solos):  # the same start
            assert all(torch.equal(a, b) for a, b in zip(packing.member_state(packed.g_net, m).values(),
                                                         solo.g_net.state_dict().values(), strict=True))
        for step in range(2):  # the second step starts from weights one update apart only by rounding
            d_losses = packed.d_step()
            for m, solo in enumerate(solos):
                assert float(d_losses[m]) == pytest.approx(float(solo.d_step()), rel=1e-4), (step, m)
                assert_close_grads(member_grads(packed.d_net, k, m), [p.grad for p in solo.d_net.parameters()],
                                   tol, (step, m, "D"))
            g_losses = packed.g_step()
            for m, solo in enumerate(solos):
                assert float(g_losses[m]) == pytest.approx(float(solo.g_step()), rel=1e-4), (step, m)
                assert_close_grads(member_grads(packed.g_net, k, m), [p.grad for p in solo.g_net.parameters()],
                                   tol, (step, m, "G"))
    finally:
        torch.set_default_dtype(previous)


def test_an_optimizer_that_couples_parameters_cannot_pack_seeds(split):
    cfg = tiny_config(**{"g_optim.name": "Adagrad"})
    with pytest.raises(ConfigError, match="Adagrad for the generator cannot train packed seeds"):
        packing.PackedSteps(cfg, [0, 1], data.training_images(split, cfg.data), torch.device("cpu"))
