"""Training throughput: one training iteration (d_steps D steps, then g_steps G steps) per timed call.

Cases are model x device x loop/variant. ``project`` is gan_core.training.loop.GanSteps, the loop that
``train()`` runs; ``blog`` and ``example`` are the baselines in benchmarks/reference_loops.py, on
the same model, batch and D:G schedule, so their speed-up ratio is a like-for-like comparison.
CUDA variants switch on what RunConfig.device offers: bf16 autocast, channels_last,
torch.compile and its CUDA-graph mode.

extra_info per case: config, device name, batch, dtype, torch version, s/iteration (best round), G and
real images/s, utilisation (model FLOPs per iteration x iterations/s / the best matmul rate measured in
this session on the same device and precision), peak memory, and on the project case the speed-up over
each baseline measured in the same session (see harness.Comparisons; on the CPU, which other work
shares, a baseline is also timed in pairs with the project loop: ``speedup_vs_<loop>_paired``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import torch

from benchmarks import harness
from benchmarks.reference_loops import make_loop
from gan_core.training import data
from gan_core.training.accounting import count_flops
from gan_core.training.config import RunConfig, override, preset

# name -> (preset, overrides). "blog" is preset("blog"): the blog's model, 3 channels, batch 100, 1:5.
MODELS: dict[str, tuple[str, dict]] = {
    "blog-3ch-b100": ("blog", {}),
    "blog-1ch-b100": ("blog", {"model.channels": 1}),
    "blog-3ch-b400": ("blog", {"schedule.batch_size": 400}),
    "seed-d9-w0.25-b100": ("blog", {"model.width": 0.25}),
    "seed-d5-w0.125-b100": ("blog", {"model.depth": 5, "model.width": 0.125}),
    "dcgan-b64": ("dcgan", {}),  # the DCGAN-style member: depth 4, width 0.25, Adam, 1:1
    "dcgan-cpu-b32": ("dcgan-cpu", {}),  # the CPU's study base at quick: width 0.125, batch 32
    "blog-x0.0625-b32": ("blog", {"model.shrink": 1 / 16, "schedule.batch_size": 32}),  # blog_quirks' base at quick
    "dcgan-b256": ("dcgan", {"schedule.batch_size": 256}),
    "dcgan-b1024": ("dcgan", {"schedule.batch_size": 1024}),
    "dcgan-d6-b64": ("dcgan", {"model.depth": 6}),
    "dcgan-w0.5-b64": ("dcgan", {"model.width": 0.5}),
}

# Project-loop variants: RunConfig.device settings (on the CPU fp32, and bf16 on the studies' CPU bases).
VARIANTS: dict[str, dict] = {
    "fp32": {},
    "bf16": {"device.amp": True},
    "channels_last": {"device.channels_last": True},
    "compile": {"device.compile": "default"},
    "cudagraphs": {"device.compile": "reduce-overhead"},  # torch.compile's CUDA-graph mode: no launch overhead
    "bf16-cl-cudagraphs": {"device.amp": True, "device.channels_last": True, "device.compile": "reduce-overhead"},
}


@dataclass(frozen=True)
class Case:
    device: str
    model: str
    loop: str = "project"
    variant: str = "fp32"
    marks: tuple = field(default=(), compare=False)

    def __str__(self) -> str:
        return f"{self.device}-{self.model}-{self.loop}" + (f"-{self.variant}" if self.loop == "project" else "")

    def config(self) -> RunConfig:
        name, changes = MODELS[self.model]
        return override(preset(name), {**changes, **VARIANTS[self.variant], "device.device": self.device})


def _cases() -> list[Case]:
    # CPU: the blog's model takes tens of seconds an iteration on 2 cores, so it runs against the blog-style
    # loop only (the example-style comparison is made on the DCGAN member, where the target is).
    cpu = [Case("cpu", m, loop) for m, loops in [
        ("blog-3ch-b100", ("blog", "project")),  # targets: project >= 1.2x blog-style, >= 60% of the matmul peak
        ("blog-1ch-b100", ("project",)),
        ("seed-d9-w0.25-b100", ("project",)),
        ("seed-d5-w0.125-b100", ("project",)),
        ("dcgan-b64", ("blog", "example", "project")),  # target: project >= example-style
        ("dcgan-b256", ("project",)),
        ("dcgan-d6-b64", ("project",)),
        ("dcgan-w0.5-b64", ("project",)),
    ] for loop in loops]
    # bf16 autocast on the studies' CPU bases: ablations.run's default on a CPU with bf16 instructions (--no-amp: fp32)
    cpu += [Case("cpu", m, "project", variant)
            for m in ("dcgan-cpu-b32", "blog-x0.0625-b32") for variant in ("fp32", "bf16")]
    # CUDA: every variant on the DCGAN member (the CUDA target is there, and its small steps are launch-bound);
    # torch.compile costs tens of seconds of compilation per case, so other models get few compiled variants.
    cuda = [Case("cuda", m, loop, variant) for m, loops, variants in [
        ("blog-3ch-b100", ("blog", "example"), ("fp32",)),
        ("blog-3ch-b100", ("project",), ("fp32", "bf16", "channels_last", "compile", "cudagraphs")),
        ("blog-1ch-b100", ("project",), ("fp32", "bf16")),
        ("blog-3ch-b400", ("project",), ("fp32", "bf16")),
        ("dcgan-b64", ("blog", "example"), ("fp32",)),
        ("dcgan-b64", ("project",), tuple(VARIANTS)),  # target: project >= 2x example-style
        ("dcgan-b1024", ("project",), ("fp32", "bf16", "cudagraphs")),
        ("dcgan-d6-b64", ("project",), ("fp32", "bf16")),
        ("dcgan-w0.5-b64", ("project",), ("fp32", "bf16")),
    ] for loop in loops for variant in variants]
    return cpu + cuda


CASES = _cases()


def _param(case: Case):
    return pytest.param(case, id=str(case), marks=[harness.requires_cuda] if case.device == "cuda" else [])


def _count_steps(loop) -> dict[str, int]:
    """Optimizer steps taken from now on, per network: proof that the timed calls did the work claimed."""
    counts = {"d": 0, "g": 0}
    for key, opt in (("d", loop.opt_d), ("g", loop.opt_g)):
        opt.register_step_post_hook(lambda *_, key=key: counts.__setitem__(key, counts[key] + 1))
    return counts


# Where other work shares the machine (the CPU here), a baseline of several rounds is timed in pairs with
# the project loop, round by round. A one-round baseline (the blog's model on the CPU) runs right before
# its project case anyway, and one more project iteration would cost tens of seconds of the suite's budget.
PAIRED_DEVICES = ("cpu",)
PAIR_MIN_ROUNDS = 3


COMPARED_MODELS = {(c.device, c.model) for c in CASES if c.loop != "project"}


def _flops(cfg: RunConfig) -> float:
    d_flops, g_flops = count_flops(cfg)
    return cfg.schedule.d_steps * d_flops + cfg.schedule.g_steps * g_flops


def _plan(case: Case, flops: float) -> tuple[int, int]:
    compared = (case.device, case.model) in COMPARED_MODELS and case.variant == "fp32"
    return harness.plan_rounds(torch.device(case.device), flops, case.config().device.compile != "off", compared)


def _paired(case: Case, rounds: int) -> bool:
    return case.loop != "project" and case.device in PAIRED_DEVICES and rounds >= PAIR_MIN_ROUNDS


PAIRED_CASES = {Case(c.device, c.model) for c in CASES if c.loop != "project" and c.device in PAIRED_DEVICES
                and _paired(c, _plan(c, _flops(c.config()))[0])}


@pytest.fixture(scope="module")
def warm_project_loops(split):
    """``get(case)``: a warmed-up project loop, kept for the model's baseline cases to pair with."""
    kept: dict[Case, object] = {}

    def get(case: Case):
        if case in kept:
            return kept[case]
        cfg = case.config()
        loop = make_loop("project", cfg, data.training_images(split, cfg.data), torch.device(case.device))
        loop.warm_up()
        if case in PAIRED_CASES:
            kept[case] = loop
        return loop

    return get


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_train_iteration(benchmark, case: Case, split, image_folder, comparisons, matmul_peak, warm_project_loops):
    device = torch.device(case.device)
    cfg = case.config()
    sch = cfg.schedule
    flops = _flops(cfg)
    precision = harness.peak_dtype(device, cfg.device.amp)
    peak = matmul_peak.measure(device, precision)
    rounds, warmup_rounds = _plan(case, flops)

    if case.loop == "project":
        loop, setup = warm_project_loops(case), None
    else:
        folder = image_folder(cfg) if case.loop == "blog" else None
        loop = make_loop(case.loop, cfg, data.training_images(split, cfg.data), device, folder)
        loop.warm_up()
        paired: list[float] = []
        setup = None
        if _paired(case, rounds):
            project = harness.synced(warm_project_loops(Case(case.device, case.model)).iteration, device)

            def setup() -> None:  # untimed by pytest-benchmark: one project iteration before each round
                t0 = time.perf_counter()
                project()
                paired.append(time.perf_counter() - t0)

    counts = _count_steps(loop)
    benchmark.group = f"train {case.device} {case.model}"
    with harness.PeakMemory(device) as memory:
        benchmark.pedantic(harness.synced(loop.iteration, device), setup=setup, rounds=rounds,
                           warmup_rounds=warmup_rounds)

    calls = 1 if benchmark.disabled else rounds + warmup_rounds
    assert counts == {"d": calls * sch.d_steps, "g": calls * sch.g_steps}
    assert all(torch.isfinite(p).all() for p in loop.g_net.parameters()), "the generator's weights went non-finite"

    info = benchmark.extra_info
    info.update(harness.environment(device))
    info.update(
        model=case.model, loop=case.loop, variant=case.variant, config=cfg.to_dict(), batch=sch.batch_size,
        ratio=sch.ratio, dtype="bfloat16 autocast" if cfg.device.amp else "float32",
        channels_last=cfg.device.channels_last, compile=cfg.device.compile,
        flops_per_iteration=flops, rounds=rounds, warmup_rounds=warmup_rounds, **peak, **memory.info,
    )
    seconds = harness.best_s(benchmark)
    if seconds is None:  # --benchmark-disable: one untimed call, nothing to compute
        info["timed"] = False
        return
    info.update(
        timed=True, s_per_iteration=seconds, s_per_iteration_median=harness.median_s(benchmark),
        iterations_per_s=1 / seconds,
        g_images_per_s=sch.g_steps * sch.batch_size / seconds,
        real_images_per_s=sch.d_steps * sch.batch_size / seconds,
        achieved_flops=flops / seconds,
    )
    matmul_peak.track(info, device, precision, flops / seconds)  # utilisation, against the session's best peak
    group = f"{case.device} {case.model}"
    if case.loop == "project":
        comparisons.add_project(group, info, seconds, case.variant)
    elif setup is not None:
        project_s = min(paired[warmup_rounds:])
        info["paired_project_s_per_iteration"] = project_s
        info["paired_project_speedup"] = comparisons.add_baseline(group, case.loop, seconds, project_s)
    else:
        comparisons.add_baseline(group, case.loop, seconds)


# ---- K seeds in one pass (GanSteps with K seeds): is packing worth it on this device?

PACKED_MODELS: dict[str, tuple[str, dict]] = {
    "blog-w0.125-b100": ("blog", {"model.width": 0.125}),
    "blog-w0.25-b100": ("blog", {"model.width": 0.25}),
    "blog-3ch-b100": MODELS["blog-3ch-b100"],
    "dcgan-b64": MODELS["dcgan-b64"],  # the standard budget's base (step_ratio, optimizer, ...)
    "dcgan-cpu-b32": MODELS["dcgan-cpu-b32"],
}
PACKED_K = (1, 3, 5, 15)
PACKED_CASES = [("cuda", m, k) for m in ("blog-w0.125-b100", "blog-w0.25-b100", "blog-3ch-b100", "dcgan-b64")
                for k in PACKED_K] + [("cpu", m, k) for m, ks in (("dcgan-cpu-b32", (1, 5)),
                                                                  ("blog-w0.125-b100", (1, 3))) for k in ks]
_one_seed_s: dict[tuple[str, str], float] = {}  # (device, model) -> best s/iteration at K = 1, this session


@pytest.mark.parametrize("device_name, model, k", [
    pytest.param(d, m, k, id=f"{d}-{m}-packed-k{k}", marks=[harness.requires_cuda] if d == "cuda" else [])
    for d, m, k in PACKED_CASES])
def test_packed_iteration(benchmark, device_name: str, model: str, k: int, split, matmul_peak):
    """One iteration of K members trained as one network (their seeds 0..K-1): trials x iterations per second,
    and the speed-up over K one-seed passes (K x the K = 1 case's time over this case's, same session)."""
    from gan_core.training.loop import GanSteps

    device = torch.device(device_name)
    name, changes = PACKED_MODELS[model]
    cfg = override(preset(name), {**changes, "device.device": device_name})
    sch = cfg.schedule
    steps = GanSteps(cfg, data.training_images(split, cfg.data), device, range(k))
    steps.iteration(g_steps=1)  # warm-up: allocations, kernels
    flops = k * _flops(cfg)
    rounds, warmup_rounds = harness.plan_rounds(device, flops)
    counts = _count_steps(steps)
    benchmark.group = f"train {device_name} {model} packed"
    precision = harness.peak_dtype(device, False)
    peak = matmul_peak.measure(device, precision)
    with harness.PeakMemory(device) as memory:
        benchmark.pedantic(harness.synced(steps.iteration, device), rounds=rounds, warmup_rounds=warmup_rounds)
    calls = 1 if benchmark.disabled else rounds + warmup_rounds
    assert counts == {"d": calls * sch.d_steps, "g": calls * sch.g_steps}
    assert bool(steps.finite_members().all()), "a member's weights went non-finite"

    info = benchmark.extra_info
    info.update(harness.environment(device))
    info.update(model=model, loop=f"packed K={k}", variant=None, members=k, config=cfg.to_dict(),
                batch=sch.batch_size, ratio=sch.ratio, dtype="float32", flops_per_iteration=flops, rounds=rounds,
                warmup_rounds=warmup_rounds, **peak, **memory.info)
    seconds = harness.best_s(benchmark)
    if seconds is None:
        info["timed"] = False
        return
    info.update(timed=True, s_per_iteration=seconds, iterations_per_s=1 / seconds,
                trials_x_iterations_per_s=k / seconds, g_images_per_s=k * sch.g_steps * sch.batch_size / seconds,
                real_images_per_s=k * sch.d_steps * sch.batch_size / seconds, achieved_flops=flops / seconds)
    matmul_peak.track(info, device, precision, flops / seconds)
    if k == 1:
        _one_seed_s[(device_name, model)] = seconds
    elif (device_name, model) in _one_seed_s:
        info["speedup_vs_solo_passes"] = k * _one_seed_s[(device_name, model)] / seconds
