"""The training loop: one frozen RunConfig in, one run folder out.

An iteration is ``d_steps`` discriminator steps, then ``g_steps`` generator steps (the blog's 1:5 is
one D step, then five G steps). The budget is counted in generator steps. Real batches are drawn by
random index from one tensor already on the device; losses stay on the device and are read only at
logging ticks, which are the loop's only host syncs.

Run folder: config.json (before training), stats.jsonl (a line per tick), evals.jsonl (a line per
on_eval result), samples.png (fixed noise, eval mode), checkpoint.pt and summary.json (atomic).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan_core import devices
from gan_core.errors import Diverged
from gan_core.training import data, models, sampling
from gan_core.training.config import ModelConfig, OptimizerConfig, RunConfig
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


def make_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return getattr(torch.optim, cfg.name)(params, lr=cfg.lr, **cfg.kwargs)


def build_models(cfg: RunConfig):
    return _build(cfg.model)


def _build(m: ModelConfig):
    return models.build(m.arch, m.depth, m.width, m.channels, m.head, m.latent_dim, m.shrink)


def blog_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The blog's BCELoss(Sigmoid(x)), computed by the built-in (log clamped at -100, its gradient eps).

    The built-in raises on a NaN input on the CPU and trips a device-side assert on CUDA (which ends
    the process). A diverged run must become a Diverged error instead, so NaNs are kept out of the
    built-in and added back afterwards: the loss is NaN exactly when an input is.
    """
    p = torch.sigmoid(logits)
    safe = torch.nan_to_num(p, nan=0.5)
    return F.binary_cross_entropy(safe, target) + (p - safe).sum() * 0


def gan_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Losses are computed in fp32, outside autocast."""
    if name == "bce":
        return lambda logits, target: blog_bce(logits.float(), target)
    return lambda logits, target: F.binary_cross_entropy_with_logits(logits.float(), target)


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
        g, d = _build(m)
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


@cache
def bytes_per_image(m: ModelConfig) -> float:
    """Memory one image of a batch takes in a training step, estimated: the float32 outputs of every layer of G
    and of D (run on real and fake images), each kept for the backward pass and matched by its gradient."""
    with torch.device("meta"):
        g, d = _build(m)
        z, image = torch.empty(1, m.latent_dim), torch.empty(1, m.channels, models.IMAGE_SIZE, models.IMAGE_SIZE)
        elements = []
        for net, x in ((g, z), (d, image), (d, image)):
            hooks = [layer.register_forward_hook(lambda _m, _i, out: elements.append(out[0].numel()))
                     for layer in net.modules() if not list(layer.children())]
            net(x)
            for h in hooks:
                h.remove()
    return 2 * 4 * sum(elements)


def _finite_weights(*modules: nn.Module) -> bool:
    return bool(torch.isfinite(torch.stack([p.detach().float().sum() for m in modules for p in m.parameters()])).all())


class GanSteps:
    """One run's models, optimizers, data and noise sources, and its D and G steps.

    Everything stays on the device: a step returns its loss as a 0-d tensor without a host sync.
    Benchmarks time ``iteration()`` directly.
    """

    def __init__(self, cfg: RunConfig, images: torch.Tensor, device: torch.device):
        m, sch = cfg.model, cfg.schedule
        self.cfg, self.device, self.batch = cfg, device, sch.batch_size
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.device.cudnn_benchmark
        torch.manual_seed(cfg.seed)  # model initialisation
        self.g_net, self.d_net = build_models(cfg)
        fmt = torch.channels_last if cfg.device.channels_last else torch.contiguous_format
        self.g_net.to(device, memory_format=fmt).train()
        self.d_net.to(device, memory_format=fmt).train()
        self.opt_g = make_optimizer(self.g_net.parameters(), cfg.g_optim)
        self.opt_d = make_optimizer(self.d_net.parameters(), cfg.d_optim)
        self.rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # batches and training noise
        # uint8 travels to the device, the float copy is made there (4x, RGB 12x, less host memory and transfer)
        self.real = sampling.to_float(images.to(device), m.head, m.channels).contiguous(memory_format=fmt)
        noise_shape = (sch.batch_size, m.latent_dim, 1, 1)
        self.d_noise = torch.randn(noise_shape, device=device, generator=self.rng)  # used when reuse_noise
        self.g_noise = torch.randn(noise_shape, device=device, generator=self.rng)
        self.ones = torch.ones(sch.batch_size, device=device)
        self.zeros = torch.zeros(sch.batch_size, device=device)
        self.loss_fn = gan_loss(sch.loss)
        compiled = cfg.device.compile != "off"
        self.g_fwd = torch.compile(self.g_net, mode=cfg.device.compile) if compiled else self.g_net
        self.d_fwd = torch.compile(self.d_net, mode=cfg.device.compile) if compiled else self.d_net
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.device.amp)

    def noise(self, reused: torch.Tensor) -> torch.Tensor:
        if self.cfg.schedule.reuse_noise:  # the blog's quirk: the same 100 vectors every step
            return reused
        return torch.randn(reused.shape, device=self.device, generator=self.rng)

    def d_step(self) -> torch.Tensor:
        x = self.real[torch.randint(len(self.real), (self.batch,), device=self.device, generator=self.rng)]
        z = self.noise(self.d_noise)
        with self.autocast:
            with torch.no_grad():
                fake = self.g_fwd(z)
            logits_real, logits_fake = self.d_fwd(x), self.d_fwd(fake)
        loss = self.loss_fn(logits_real, self.ones) + self.loss_fn(logits_fake, self.zeros)  # summed, as the blog
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.detach()

    def g_step(self) -> torch.Tensor:
        z = self.noise(self.g_noise)
        with self.autocast:
            logits = self.d_fwd(self.g_fwd(z))
        loss = self.loss_fn(logits, self.ones)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return loss.detach()

    def iteration(self, g_steps: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """d_steps D steps, then g_steps G steps (fewer when the budget ends mid-iteration)."""
        sch = self.cfg.schedule
        self.d_net.requires_grad_(True)
        d_losses = [self.d_step() for _ in range(sch.d_steps)]
        self.d_net.requires_grad_(False)  # G steps need no D weight gradients: skip that work
        g_losses = [self.g_step() for _ in range(sch.g_steps if g_steps is None else g_steps)]
        return d_losses, g_losses

    def state_dict(self) -> dict:
        return {"g": self.g_net.state_dict(), "d": self.d_net.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "rng": self.rng.get_state(),
                "d_noise": self.d_noise.cpu(), "g_noise": self.g_noise.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.g_net.load_state_dict(state["g"])
        self.d_net.load_state_dict(state["d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.rng.set_state(state["rng"])
        self.d_noise, self.g_noise = state["d_noise"].to(self.device), state["g_noise"].to(self.device)


@dataclass
class Progress:
    """A run's counters in every budget unit; what stats.jsonl, checkpoints and summary.json record."""

    cfg: RunConfig
    d_flops: float  # model FLOPs of one D step, one G step (count_flops)
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

    def checkpoint(self, steps: GanSteps) -> dict:
        return {"config": self.cfg.to_dict(), **steps.state_dict(), "g_step": self.g_step, "d_step": self.d_step,
                "wall_s": self.wall_s}


def crossed(every: int, before: int, now: int) -> bool:
    """Whether a step counter passed a multiple of ``every`` (0 = never) going from ``before`` to ``now``."""
    return every > 0 and now // every > before // every


def check_finite(d_vals: torch.Tensor, g_vals: torch.Tensor, at_tick: Progress, cfg: RunConfig) -> None:
    """Raise Diverged naming the first non-finite loss since the last tick, in G steps and D steps. Counted from
    the tick (ticks fall between iterations): a resumed run's earlier iterations may have been cut short."""
    sch = cfg.schedule
    bad_d, bad_g = (~torch.isfinite(d_vals)).nonzero(), (~torch.isfinite(g_vals)).nonzero()
    # the first in time: an iteration runs its D steps, then its G steps
    d_iteration = int(bad_d[0]) // sch.d_steps if len(bad_d) else None
    g_iteration = int(bad_g[0]) // sch.g_steps if len(bad_g) else None
    if d_iteration is not None and (g_iteration is None or d_iteration <= g_iteration):
        k = int(bad_d[0])  # the k-th D step since the tick, after the G steps of the iterations before its own
        raise Diverged(at_tick.g_step + d_iteration * sch.g_steps, at_tick.d_step + k + 1, "discriminator loss")
    if g_iteration is not None:
        k = int(bad_g[0])  # the k-th G step since the tick, after the D steps of its own iteration
        raise Diverged(at_tick.g_step + k + 1, at_tick.d_step + (g_iteration + 1) * sch.d_steps, "generator loss")


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
    # ---- set-up: device, data, run folder, models, counters (a resumed run continues its checkpoint)
    device = devices.resolve(cfg.device.device)
    split = split or data.load(cfg.data)
    folder = RunFolder(out_dir)
    ckpt = folder.checkpoint_to_resume(cfg, resume)
    devices.check_fits("batch size", cfg.schedule.batch_size, bytes_per_image(cfg.model), device, "--batch-size")
    steps = GanSteps(cfg, data.training_images(split, cfg.data), device)
    fixed_noise = sampling.noise(N_SAMPLES_PNG, cfg.model.latent_dim, cfg.seed + 2, device)
    progress = Progress(cfg, *count_flops(cfg), str(device))
    if ckpt is not None:
        steps.load_state_dict(ckpt)
        progress.g_step, progress.d_step, progress.wall_s = ckpt["g_step"], ckpt["d_step"], ckpt["wall_s"]
    folder.start(cfg, progress.g_step if ckpt is not None else None)  # locks the folder until the end
    try:
        return _run(cfg, steps, progress, folder, ckpt, fixed_noise, device, on_log, on_eval)
    finally:
        folder.unlock()


def _run(cfg: RunConfig, steps: GanSteps, progress: Progress, folder: RunFolder, ckpt: dict | None,
         fixed_noise: torch.Tensor, device: torch.device, on_log, on_eval) -> TrainResult:
    """train() once its folder is locked: step 0, the loop, the end."""
    result = TrainResult(cfg, folder.path, 0, 0, 0, 0.0, 0.0, generator=steps.g_net)
    evaluating = on_eval is not None and cfg.eval_every > 0
    if evaluating and ckpt is None:  # step 0: the untrained generator, what "did it learn?" is measured against
        evaluate_at(on_eval, EvalPoint(0, 0, 0.0, steps.g_net, cfg, device, folder.path), folder, result)

    # ---- the loop: iterations stay queued on the device between logging ticks
    g_losses: list[torch.Tensor] = []
    d_losses: list[torch.Tensor] = []
    at_tick = dataclasses.replace(progress)
    t_tick = time.perf_counter()
    t_start = t_tick - progress.wall_s
    intervals = (cfg.log_every, cfg.eval_every if evaluating else 0, cfg.sample_every, cfg.checkpoint_every)
    try:
        while progress.g_step < cfg.steps:
            before = progress.g_step
            d_new, g_new = steps.iteration(min(cfg.schedule.g_steps, cfg.steps - progress.g_step))
            d_losses += d_new
            g_losses += g_new
            progress.d_step += len(d_new)
            progress.g_step += len(g_new)
            end = progress.g_step == cfg.steps
            # a tick whenever any interval is due, not only the log's: a checkpoint asked for every 2 steps
            # must be written every 2 steps (and only after the losses since the last tick proved finite)
            if not (end or any(crossed(every, before, progress.g_step) for every in intervals)):
                continue

            # ---- logging tick. note: the loop's host sync point; everything above stays queued on the device.
            d_vals, g_vals = torch.stack(d_losses).cpu(), torch.stack(g_losses).cpu()
            now = time.perf_counter()
            progress.wall_s = now - t_start
            check_finite(d_vals, g_vals, at_tick, cfg)
            if not _finite_weights(steps.g_net, steps.d_net):
                raise Diverged(progress.g_step, progress.d_step, "a weight")
            dt = max(now - t_tick, 1e-9)
            b = cfg.schedule.batch_size
            record = {
                "g_step": progress.g_step, "d_step": progress.d_step, "real_images": progress.real_images,
                "wall_s": round(progress.wall_s, 4), "flops": progress.flops,
                "loss_d": float(d_vals.mean()), "loss_g": float(g_vals.mean()),
                "g_images_per_s": (progress.g_step - at_tick.g_step) * b / dt,
                "real_images_per_s": (progress.d_step - at_tick.d_step) * b / dt,
            }
            g_losses.clear()
            d_losses.clear()
            folder.append(STATS, record)
            result.last = record
            if on_log is not None:
                on_log(record)

            # ---- intervals that fire at this tick: evaluation, samples, checkpoint
            if evaluating and (crossed(cfg.eval_every, at_tick.g_step, progress.g_step) or end):
                evaluate_at(on_eval, EvalPoint(progress.g_step, progress.d_step, progress.wall_s, steps.g_net, cfg,
                                               device, folder.path), folder, result)
            if crossed(cfg.sample_every, at_tick.g_step, progress.g_step) and not end:
                save_samples(folder, steps.g_net, fixed_noise, cfg.model.head)
            if crossed(cfg.checkpoint_every, at_tick.g_step, progress.g_step) and not end:
                folder.save_checkpoint(progress.checkpoint(steps))
            at_tick = dataclasses.replace(progress)
            t_tick = time.perf_counter()
            t_start += t_tick - now  # evaluation, sampling and checkpoint writes are not training time
    except Diverged as e:
        folder.write_json(SUMMARY, progress.summary("diverged", reason=f"{e.what} not finite at {e.where}"))
        raise

    # ---- the end: samples, the final checkpoint, the summary
    summary = progress.summary("finished")
    save_samples(folder, steps.g_net, fixed_noise, cfg.model.head)
    folder.save_checkpoint(progress.checkpoint(steps))
    folder.write_json(SUMMARY, summary)
    result.g_steps, result.d_steps, result.real_images = progress.g_step, progress.d_step, progress.real_images
    result.wall_s, result.flops = progress.wall_s, progress.flops
    return result


def load_run(run_dir: str | os.PathLike) -> tuple[RunConfig, nn.Module]:
    """(config, generator in eval mode on the CPU) from a run folder's config.json and checkpoint.pt."""
    folder = RunFolder(run_dir)
    cfg = folder.config()
    g, _ = build_models(cfg)
    g.load_state_dict(folder.checkpoint()["g"])
    return cfg, g.eval()
