"""The training loop: one frozen RunConfig in, one run folder out.

An iteration is ``d_steps`` discriminator steps, then ``g_steps`` generator steps (1:5 is one D step,
then five G steps). The budget is counted in generator steps. Real batches are drawn by random index
from one tensor already on the device, or, in the blog's order (schedule.order blog_epochs), taken
from it in unshuffled epochs with the blog's rule of which iterations train D (order.py); losses stay
on the device and are read only at logging ticks, which are the loop's only host syncs.

Run folder: config.json (before training), stats.jsonl (a line per tick), evals.jsonl (a line per
on_eval result), samples.png (fixed noise, eval mode), checkpoint.pt and summary.json (atomic).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gan_core import devices
from gan_core.errors import ConfigError, Diverged, first_line
from gan_core.training import data, order, packing, plugin_arch, sampling
from gan_core.training.accounting import build_models, bytes_per_image, count_flops, solo_generator
from gan_core.training.config import OptimizerConfig, RunConfig
from gan_core.training.losses import gan_loss
from gan_core.training.run_folder import EVALS, STATS, SUMMARY, RunFolder

N_SAMPLES_PNG = 64


@dataclass
class EvalPoint:
    """What an on_eval callback sees: the generator mid-training (it must not change its mode)."""

    g_step: int
    d_step: int
    wall_s: float
    generator: nn.Module
    cfg: RunConfig
    device: torch.device
    out_dir: Path | None


@dataclass
class TrainResult:
    cfg: RunConfig
    out_dir: Path | None
    g_steps: int
    d_steps: int
    real_images: int  # real images shown to D
    wall_s: float  # training time, without start-up, sampling and checkpoint writes
    flops: float  # model FLOPs spent (forward + backward), see count_flops
    last: dict = field(default_factory=dict)  # the last stats.jsonl record
    evals: list[dict] = field(default_factory=list)
    generator: nn.Module | None = None
    seeds_in_pass: list[int] = field(default_factory=list)  # the seeds trained together with this one, itself too


def make_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return getattr(torch.optim, cfg.name)(params, lr=cfg.lr, **cfg.kwargs)


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs on CUDA


def graph_fallback(cfg: RunConfig, device: torch.device) -> str | None:
    """The one line a run prints when it was asked for CUDA graphs it cannot have (it then runs eager).
    max-autotune is no such ask: elsewhere it is inductor's autotuning, without graphs."""
    if cfg.device.compile == "reduce-overhead" and device.type != "cuda":
        return (f"--compile {cfg.device.compile} captures CUDA graphs, which need a CUDA device: "
                f"running eager on {device}")
    return None


class GanSteps:
    """K seeds of one configuration trained as one network (K = 1: one run), its optimizers, data and noise sources,
    and its D and G steps (see packing.py for how K members become one network).

    Member m starts from its solo run's initial weights (``torch.manual_seed(seed)``, then the models are built),
    draws its real batches and noise from its own RNG stream (seed + 1) in its solo order, and its loss is its
    solo loss; the packed loss is the members' sum, so each member's gradient is its own. Everything stays on
    the device: a step returns the members' losses, [K], without a host sync. Benchmarks time ``iteration()``.
    """

    def __init__(self, cfg: RunConfig, images: torch.Tensor, device: torch.device, seeds: Sequence[int] = ()):
        self.seeds = list(seeds) or [cfg.seed]
        self.k = len(self.seeds)
        if self.k > 1:
            packing.check_packable(cfg)
        m, sch = cfg.model, cfg.schedule
        self.cfg, self.device, self.batch = cfg, device, sch.batch_size
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.device.cudnn_benchmark
        members = []
        for seed in self.seeds:  # model initialisation, one member after the other, each as its solo run
            torch.manual_seed(seed)
            members.append(build_models(cfg))
        fmt = torch.channels_last if cfg.device.channels_last else torch.contiguous_format
        self.g_net = packing.pack([g for g, _ in members]).to(device, memory_format=fmt).train()
        self.d_net = packing.pack([d for _, d in members]).to(device, memory_format=fmt).train()
        self.opt_g = make_optimizer(self.g_net.parameters(), cfg.g_optim)
        self.opt_d = make_optimizer(self.d_net.parameters(), cfg.d_optim)
        self.rngs = [torch.Generator(device=device).manual_seed(seed + 1) for seed in self.seeds]
        self.order = order.schedule(sch, len(images))  # which batches D sees, and when
        # uint8 travels to the device, the float copy is made there (4x, RGB 12x, less host memory and transfer)
        self.real = sampling.to_float(images.to(device), m.head, m.channels).contiguous(memory_format=fmt)
        shape = (sch.batch_size, m.latent_dim)
        pairs = [(torch.randn(shape, device=device, generator=r), torch.randn(shape, device=device, generator=r))
                 for r in self.rngs]  # per member: the noise its D steps reuse (reuse_noise), then its G steps'
        self.d_noise = torch.stack([d for d, _ in pairs], 1)  # [B, K, latent]
        self.g_noise = torch.stack([g for _, g in pairs], 1)
        self.ones = torch.ones(sch.batch_size, device=device)
        self.zeros = torch.zeros(sch.batch_size, device=device)
        self.mean_loss = gan_loss(sch.loss)
        self.loss_per_image = gan_loss(sch.loss, "none")
        mode = cfg.device.compile
        if graph_fallback(cfg, device):
            mode = "off"
        self.graphs = device.type == "cuda" and mode in CUDA_GRAPH_MODES
        self.g_fwd = torch.compile(self.g_net, mode=mode) if mode != "off" else self.g_net
        self.d_fwd = torch.compile(self.d_net, mode=mode) if mode != "off" else self.d_net
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.device.amp)

    def _begin_step(self) -> None:
        # A CUDA graph's outputs live in memory its next replay overwrites: each step is a new graph step, and
        # nothing a step returns is a graph output (the losses are computed outside the compiled networks).
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def noise(self, reused: torch.Tensor) -> torch.Tensor:
        if self.cfg.schedule.reuse_noise:  # the blog's quirk: the same 100 vectors every step
            return reused
        return self._members([torch.randn(reused.shape[0], reused.shape[2], device=self.device, generator=r)
                              for r in self.rngs])

    def _members(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The members' tensors side by side on dim 1; one member's as a view (a solo run copies nothing)."""
        return tensors[0].unsqueeze(1) if self.k == 1 else torch.stack(tensors, 1)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[K]: each member's mean loss over its batch, as its solo run computes it (K > 1: in one kernel, not K)."""
        if self.k == 1:
            return self.mean_loss(logits[:, 0], target).unsqueeze(0)
        return self.loss_per_image(logits, target[:, None].expand_as(logits)).mean(dim=0)

    def d_step(self, rows: slice | None = None) -> torch.Tensor:
        """One D step on a random batch, or on the real images ``rows`` (the blog's order; every member's)."""
        self._begin_step()
        if rows is None:
            picks = [torch.randint(len(self.real), (self.batch,), device=self.device, generator=r) for r in self.rngs]
            x = self._members([self.real[i] for i in picks])  # drawn before the noise, member by member
        else:
            x = self._members([self.real[rows]] * self.k)  # an epoch's last batch may be short, as a DataLoader's
        z = self.noise(self.d_noise)
        with self.autocast:
            with torch.no_grad():
                fake = self.g_fwd(z)
            logits_real, logits_fake = self.d_fwd(x), self.d_fwd(fake)
        # summed, as the blog's
        losses = self._loss(logits_real, self.ones[: len(x)]) + self._loss(logits_fake, self.zeros)
        self.opt_d.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt_d.step()
        return losses.detach()

    def g_step(self) -> torch.Tensor:
        self._begin_step()
        z = self.noise(self.g_noise)
        with self.autocast:
            logits = self.d_fwd(self.g_fwd(z))
        losses = self._loss(logits, self.ones)
        self.opt_g.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt_g.step()
        return losses.detach()

    def iteration(self, g_steps: int | None = None, at: int = 0) -> list[tuple[str, torch.Tensor]]:
        """The schedule's next ``g_steps`` G steps from G step ``at`` (the G steps done) with the D steps it places
        among them (GanSteps.order's phases): an iteration, d_steps D steps then g_steps G steps (fewer when the
        budget ends mid-iteration), or the blog's next g_steps iterations. Returns the timeline: each step's network
        (order.D or order.G) and its members' losses, in the order they ran."""
        g_steps = self.cfg.schedule.g_steps if g_steps is None else g_steps
        timeline = []
        for phase in self.order.phases(at, g_steps):
            d = phase.net == order.D
            self.d_net.requires_grad_(d)  # a G phase needs no D weight gradients: skip that work
            timeline += [(phase.net, self.d_step(phase.rows) if d else self.g_step()) for _ in range(phase.count)]
        return timeline

    def generator(self, m: int = 0) -> nn.Module:
        """Member m's generator as its solo network (a copy, in training mode), for evaluation and samples."""
        return solo_generator(self.cfg.model, packing.member_state(self.g_net, m))

    def finite_members(self) -> torch.Tensor:
        """[K] bool on the host: whether each member's weights (parameters) are all finite."""
        return packing.finite_members(self.g_net, self.d_net).cpu()

    def state_dict(self, m: int = 0) -> dict:
        """Member m's state in a solo run's checkpoint format."""
        return {"g": packing.member_state(self.g_net, m), "d": packing.member_state(self.d_net, m),
                "opt_g": packing.member_optimizer_state(self.opt_g.state_dict(), m, self.k),
                "opt_d": packing.member_optimizer_state(self.opt_d.state_dict(), m, self.k),
                "rng": self.rngs[m].get_state(),
                "d_noise": self.d_noise[:, m].reshape(self.batch, -1, 1, 1).cpu(),
                "g_noise": self.g_noise[:, m].reshape(self.batch, -1, 1, 1).cpu()}

    def load_state_dicts(self, states: list[dict]) -> None:
        """Every member's state, as state_dict gave it (the members must be at the same step)."""
        self.g_net.load_state_dict(packing.packed_state([s["g"] for s in states]))
        self.d_net.load_state_dict(packing.packed_state([s["d"] for s in states]))
        self.opt_g.load_state_dict(packing.packed_optimizer_state([s["opt_g"] for s in states]))
        self.opt_d.load_state_dict(packing.packed_optimizer_state([s["opt_d"] for s in states]))
        for rng, s in zip(self.rngs, states, strict=True):
            rng.set_state(s["rng"])
        self.d_noise = torch.stack([s["d_noise"].reshape(self.batch, -1) for s in states], 1).to(self.device)
        self.g_noise = torch.stack([s["g_noise"].reshape(self.batch, -1) for s in states], 1).to(self.device)


@dataclass
class Progress:
    """A pass's counters in every budget unit (the same for each of its members); what stats.jsonl, checkpoints
    and summary.json record."""

    cfg: RunConfig
    d_flops: float  # model FLOPs of one D step, one G step (count_flops), per member
    g_flops: float
    device: str
    g_step: int = 0
    d_step: int = 0
    wall_s: float = 0.0  # training time, without start-up, sampling, evaluation and checkpoint writes

    @property
    def real_images(self) -> int:
        return self.d_step * self.cfg.schedule.batch_size

    @property
    def flops(self) -> float:
        return self.d_step * self.d_flops + self.g_step * self.g_flops

    def summary(self, status: str, **extra) -> dict:
        return {"status": status, "g_steps": self.g_step, "d_steps": self.d_step, "real_images": self.real_images,
                "wall_s": self.wall_s, "flops": self.flops, "flops_per_g_step": self.g_flops,
                "flops_per_d_step": self.d_flops, "device": self.device, "torch": torch.__version__, **extra}

    def checkpoint(self, cfg: RunConfig, state: dict) -> dict:
        return {"config": cfg.to_dict(), **state, "g_step": self.g_step, "d_step": self.d_step,
                "wall_s": self.wall_s}


def crossed(every: int, before: int, now: int) -> bool:
    """Whether a step counter passed a multiple of ``every`` (0 = never) going from ``before`` to ``now``."""
    return every > 0 and now // every > before // every


def check_finite(nets: Sequence[str], losses: torch.Tensor, at_tick: Progress) -> None:
    """Raise Diverged naming the first non-finite loss since the last tick, in G steps and D steps: ``nets`` and
    ``losses`` are a member's timeline since the tick (GanSteps.iteration), so the steps done by then are the steps
    before it in the list, and itself."""
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        upto = list(nets[: int(bad[0]) + 1])
        what = "discriminator loss" if upto[-1] == order.D else "generator loss"
        raise Diverged(at_tick.g_step + upto.count(order.G), at_tick.d_step + upto.count(order.D), what)


def save_samples(folder: RunFolder, generator: nn.Module, z: torch.Tensor, head: str) -> None:
    """The samples.png grid: fixed noise, generator in eval mode (the blog sampled in training mode)."""
    if folder:
        folder.save_samples(sampling.generate_from(generator, z, head))


def evaluate_at(on_eval: Callable[[EvalPoint], dict | None], point: EvalPoint, folder: RunFolder,
                result: TrainResult) -> None:
    """One on_eval call; its metrics go to evals.jsonl and the result, with the step counters."""
    metrics = on_eval(point)
    if metrics:
        row = {"g_step": point.g_step, "d_step": point.d_step, "wall_s": round(point.wall_s, 4), **metrics}
        result.evals.append(row)
        folder.append(EVALS, row)


def seed_folder(out_dir: str | os.PathLike, seed: int) -> Path:
    """Where a seed of a several-seed run writes its run folder: OUT/seed<N>."""
    return Path(out_dir) / f"seed{seed}"


def train(
    cfg: RunConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    on_log: Callable[[dict], None] | None = None,
    on_eval: Callable[[EvalPoint], dict | None] | None = None,
    resume: bool = False,
    split: data.Split | None = None,
) -> TrainResult:
    """Train one GAN. ``split`` lets a study load the data once for many runs.

    Raises Diverged (the last good checkpoint stays), UserError for bad input (nothing written).
    """
    (outcome,) = train_seeds(cfg, [cfg.seed], [out_dir], on_log=on_log, on_eval=on_eval, resume=resume, split=split)
    if isinstance(outcome, Diverged):
        raise outcome
    return outcome


@dataclass
class Member:
    """One seed of a pass: its config (cfg with its seed), run folder, result so far and checkpoint to resume."""

    cfg: RunConfig
    folder: RunFolder
    ckpt: dict | None
    result: TrainResult
    outcome: TrainResult | Diverged | None = None
    fixed_noise: torch.Tensor | None = None  # samples.png's noise


def train_seeds(
    cfg: RunConfig,
    seeds: Sequence[int],
    out_dirs: Sequence[str | os.PathLike | None],
    *,
    on_log: Callable[[dict], None] | None = None,
    on_eval: Callable[[EvalPoint], dict | None] | None = None,
    on_checkpoint: Callable[[RunConfig, int], None] | None = None,
    resume: bool = False,
    split: data.Split | None = None,
) -> list[TrainResult | Diverged]:
    """Train cfg once per seed, all seeds in one pass (one packed network, see GanSteps), each into its own run
    folder exactly as a solo run would write it. A member that diverges is dropped from the pass, its summary says
    so and its outcome is the Diverged error; the others go on. Members resumed from checkpoints at different
    steps train in one pass per step. Callbacks see one member at a time (EvalPoint.cfg.seed says which);
    ``on_checkpoint(member's config, G step)`` follows each checkpoint a member's folder gets, periodic or final
    (the final one after samples.png and summary.json), e.g. to copy the folder elsewhere.

    Raises UserError for bad input, before anything is written (members resumed at different steps: before
    their pass writes).
    """
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {list(seeds)}")
    if len(out_dirs) != len(seeds):
        raise ConfigError(f"one run folder per seed: {len(seeds)} seeds, {len(out_dirs)} folders")
    cfg = plugin_arch.with_source_hash(cfg)  # a builder's code as it is now: a resume of changed code is refused
    device = devices.resolve(cfg.device.device)
    split = split or data.load(cfg.data)
    members = []
    for seed, out in zip(seeds, out_dirs, strict=True):
        member_cfg = dataclasses.replace(cfg, seed=seed)
        folder = RunFolder(out)
        members.append(Member(member_cfg, folder, folder.checkpoint_to_resume(member_cfg, resume),
                              TrainResult(member_cfg, folder.path, 0, 0, 0, 0.0, 0.0)))
    check_startable(cfg, len(seeds), device)
    if len(seeds) == 1:
        devices.check_fits("batch size", cfg.schedule.batch_size, bytes_per_image(cfg.model), device, "--batch-size")
    else:  # a pass holds every member's batch at once
        devices.check_fits("batch size x seeds", cfg.schedule.batch_size * len(seeds), bytes_per_image(cfg.model),
                           device, "--batch-size x the number of seeds")
    images = data.training_images(split, cfg.data, cfg.schedule.order)
    order.schedule(cfg.schedule, len(images))  # an order the train set cannot run is refused before any write
    passes: dict[tuple | None, list[Member]] = {}
    for member in members:  # members resumed at the same point share a pass (its counters are shared)
        key = (member.ckpt["g_step"], member.ckpt["d_step"], member.ckpt["wall_s"]) if member.ckpt else None
        passes.setdefault(key, []).append(member)
    for group in passes.values():
        _train_pass(group, images, device, on_log, on_eval, on_checkpoint or (lambda _cfg, _g_step: None))
    return [member.outcome for member in members]


PARAMETER_BYTES = 16  # float32 weight, its gradient and two optimizer moments (Adam's; Adadelta's are as many)


def check_startable(cfg: RunConfig, k: int, device: torch.device) -> None:
    """Refuse, before anything is allocated or written, models that cannot fit the device (a latent size of 10^11)
    and optimizer arguments that build but cannot step there (``capturable``, ``fused`` off CUDA)."""
    with torch.device("meta"):
        g, d = plugin_arch.build_models(cfg.model)
    params = k * sum(p.numel() for net in (g, d) for p in net.parameters())
    devices.check_fits("model parameters", params, PARAMETER_BYTES, device, "",
                       "use a smaller --latent-dim, --width or --depth (or fewer --seeds)")
    for net, opt in (("generator", cfg.g_optim), ("discriminator", cfg.d_optim)):
        weight = torch.zeros(1, device=device, requires_grad=True)
        weight.grad = torch.zeros_like(weight)
        try:
            getattr(torch.optim, opt.name)([weight], lr=opt.lr, **opt.kwargs).step()  # a probe, not the run's
        except Exception as e:  # noqa: BLE001 - whatever the optimizer objects to, the user gets one line
            raise ConfigError(f"the {net}'s optimizer {opt.name} with {opt.kwargs} cannot step on {device}: "
                              f"{first_line(e)}") from None


def _train_pass(members: list[Member], images: torch.Tensor, device: torch.device, on_log, on_eval,
                on_checkpoint) -> None:
    cfg = members[0].cfg
    steps = GanSteps(cfg, images, device, [member.cfg.seed for member in members])
    progress = Progress(cfg, *count_flops(cfg), str(device))
    first = members[0].ckpt
    if first is not None:
        steps.load_state_dicts([member.ckpt for member in members])
        progress.g_step, progress.d_step, progress.wall_s = first["g_step"], first["d_step"], first["wall_s"]
    started = []
    try:
        for member in members:  # each folder locked until the end
            member.folder.start(member.cfg, progress.g_step if first is not None else None)
            started.append(member)
        _Pass(members, steps, progress, images, device, on_log, on_eval, on_checkpoint).run()
    finally:
        for member in started:
            member.folder.unlock()


class _Pass:
    """A pass once its folders are locked: step 0, the loop, the end (``members[m]`` is the pack's member m).
    Iterations stay queued on the device between ticks; a tick (the loop's one host sync) logs, checks that the
    losses since the last tick are finite, drops diverged members from the pack, and fires the intervals due
    (evaluation, samples, checkpoint). Training time excludes what the ticks do."""

    def __init__(self, members: list[Member], steps: GanSteps, progress: Progress, images: torch.Tensor,
                 device: torch.device, on_log, on_eval, on_checkpoint):
        self.members, self.steps, self.progress, self.images, self.device = members, steps, progress, images, device
        self.on_log, self.on_eval, self.on_checkpoint = on_log, on_eval, on_checkpoint
        self.cfg = cfg = members[0].cfg
        self.evaluating = on_eval is not None and cfg.eval_every > 0
        self.intervals = (cfg.log_every, cfg.eval_every if self.evaluating else 0, cfg.sample_every,
                          cfg.checkpoint_every)
        self.timeline: list[tuple[str, torch.Tensor]] = []  # the steps since the last tick (GanSteps.iteration)
        self.copies: dict[int, nn.Module] = {}  # member -> its generator as it is now (generator())
        for member in members:
            member.fixed_noise = sampling.noise(N_SAMPLES_PNG, cfg.model.latent_dim, member.cfg.seed + 2, device)

    def run(self) -> None:
        cfg, progress = self.cfg, self.progress
        if self.evaluating and self.members[0].ckpt is None:  # step 0: the untrained generator, what "did it
            self._evaluate_all()  # learn?" compares with
        self.at_tick = dataclasses.replace(progress)
        self.t_tick = time.perf_counter()
        self.t_start = self.t_tick - progress.wall_s
        while self.members and progress.g_step < cfg.steps:
            before = progress.g_step
            # an iteration ends early at the budget and at an eval_at step (its G steps so far are a shorter run's)
            stop = min([cfg.steps, *(step for step in cfg.eval_at if step > progress.g_step)])
            steps = self.steps.iteration(min(cfg.schedule.g_steps, stop - progress.g_step), at=progress.g_step)
            self.copies.clear()
            self.timeline += steps
            progress.d_step += sum(net == order.D for net, _ in steps)
            progress.g_step += sum(net == order.G for net, _ in steps)
            end = progress.g_step == cfg.steps
            # a tick whenever any interval is due, not only the log's: a checkpoint asked for every 2 steps
            # must be written every 2 steps (and only after the losses since the last tick proved finite)
            if end or self._at_eval_point(before) or any(crossed(every, before, progress.g_step)
                                                         for every in self.intervals):
                self._tick(end)
        self._end()

    def generator(self, i: int) -> nn.Module:
        """Member i's solo generator as it is now, one copy per point: the evaluation, the samples and the final
        judgement there share it, so its BatchNorm statistics are re-estimated once (sampling.with_fresh_batchnorm
        keeps them per copy), not once each."""
        if i not in self.copies:
            self.copies[i] = self.steps.generator(i)
        return self.copies[i]

    def _at_eval_point(self, before: int) -> bool:
        """Whether an eval_at step passed since G step ``before`` (the tick lands on it)."""
        return self.evaluating and any(before < step <= self.progress.g_step for step in self.cfg.eval_at)

    def _tick(self, end: bool) -> None:
        # note: the loop's host sync point; everything between ticks stays queued on the device.
        nets = [net for net, _ in self.timeline]
        vals = torch.stack([loss for _, loss in self.timeline]).cpu()  # [steps since the tick, K]
        finite = self.steps.finite_members()
        now = time.perf_counter()
        self.progress.wall_s = now - self.t_start
        dt = max(now - self.t_tick, 1e-9)
        for i, member in enumerate(self.members):
            self._log(member, nets, vals[:, i], bool(finite[i]), dt)
        self.timeline.clear()
        if self._drop_diverged():
            self._fire(end)
        self.at_tick = dataclasses.replace(self.progress)
        self.t_tick = time.perf_counter()
        self.t_start += self.t_tick - now  # evaluation, sampling and checkpoint writes are not training time

    def _log(self, member: Member, nets: list[str], losses: torch.Tensor, finite: bool, dt: float) -> None:
        """A member's stats.jsonl line for its timeline since the last tick, or its end if it was not finite."""
        progress, at_tick, b = self.progress, self.at_tick, self.cfg.schedule.batch_size
        # the blog's order may have made no D step since the tick
        d_vals, g_vals = (losses[[i for i, n in enumerate(nets) if n == net]] for net in (order.D, order.G))
        try:
            check_finite(nets, losses, at_tick)
            if not finite:
                raise Diverged(progress.g_step, progress.d_step, "a weight")
        except Diverged as e:
            member.folder.write_json(SUMMARY, progress.summary("diverged", reason=f"{e.what} not finite at {e.where}"))
            member.outcome = e
            return
        record = {
            "g_step": progress.g_step, "d_step": progress.d_step, "real_images": progress.real_images,
            "wall_s": round(progress.wall_s, 4), "flops": progress.flops,
            "loss_d": float(d_vals.mean()) if len(d_vals) else None, "loss_g": float(g_vals.mean()),
            "g_images_per_s": (progress.g_step - at_tick.g_step) * b / dt,
            "real_images_per_s": (progress.d_step - at_tick.d_step) * b / dt,
        }
        member.folder.append(STATS, record)
        member.result.last = record
        if self.on_log is not None:
            self.on_log(record)

    def _drop_diverged(self) -> bool:
        """Rebuild the pack without the members that diverged at this tick; False when none is left."""
        if all(member.outcome is None for member in self.members):
            return True
        kept = [i for i, member in enumerate(self.members) if member.outcome is None]
        states = [self.steps.state_dict(i) for i in kept]
        self.members = [self.members[i] for i in kept]
        self.copies.clear()
        if not self.members:
            return False
        self.steps = GanSteps(self.cfg, self.images, self.device, [member.cfg.seed for member in self.members])
        self.steps.load_state_dicts(states)
        return True

    def _fire(self, end: bool) -> None:
        """The intervals due at this tick: evaluation, samples, checkpoint (the end writes its own)."""
        cfg, before, now = self.cfg, self.at_tick.g_step, self.progress.g_step
        if self.evaluating and (crossed(cfg.eval_every, before, now) or end or self._at_eval_point(before)):
            self._evaluate_all()
        if crossed(cfg.sample_every, before, now) and not end:
            for i, member in enumerate(self.members):
                save_samples(member.folder, self.generator(i), member.fixed_noise, cfg.model.head)
        if crossed(cfg.checkpoint_every, before, now) and not end:
            for i, member in enumerate(self.members):
                member.folder.save_checkpoint(self.progress.checkpoint(member.cfg, self.steps.state_dict(i)))
                self.on_checkpoint(member.cfg, now)

    def _evaluate_all(self) -> None:
        progress = self.progress
        for i, member in enumerate(self.members):
            point = EvalPoint(progress.g_step, progress.d_step, progress.wall_s, self.generator(i), member.cfg,
                              self.device, member.folder.path)
            evaluate_at(self.on_eval, point, member.folder, member.result)

    def _end(self) -> None:
        """Every member still in the pack: samples, the final checkpoint, the summary, its result."""
        progress, steps = self.progress, self.steps
        packed = {"seeds_in_pass": steps.seeds} if steps.k > 1 else {}
        for i, member in enumerate(self.members):
            r = member.result
            r.generator = self.generator(i)
            save_samples(member.folder, r.generator, member.fixed_noise, self.cfg.model.head)
            member.folder.save_checkpoint(progress.checkpoint(member.cfg, steps.state_dict(i)))
            member.folder.write_json(SUMMARY, progress.summary("finished", **packed))
            self.on_checkpoint(member.cfg, progress.g_step)
            r.g_steps, r.d_steps, r.real_images = progress.g_step, progress.d_step, progress.real_images
            r.wall_s, r.flops, r.seeds_in_pass = progress.wall_s, progress.flops, steps.seeds
            member.outcome = r


def load_run(run_dir: str | os.PathLike) -> tuple[RunConfig, nn.Module]:
    """(config, generator in eval mode on the CPU) from a run folder's config.json and checkpoint.pt."""
    cfg, ckpt = RunFolder(run_dir).trained()
    return cfg, solo_generator(cfg.model, ckpt["g"]).eval()
