"""The training loop: one frozen RunConfig in, one run folder out.

An iteration is ``d_steps`` discriminator steps, then ``g_steps`` generator steps (the blog's 1:5 is
one D step, then five G steps). The budget is counted in generator steps. Real batches are drawn by
random index from one tensor already on the device; losses stay on the device and are read only at
logging ticks, which are the loop's only host syncs.

Run folder: config.json (before training), stats.jsonl (a line per tick), evals.jsonl (a line per
on_eval result), samples.png (fixed noise, eval mode), checkpoint.pt and summary.json (atomic).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan_core import data, devices, files, models, sampling
from gan_core.config import ModelConfig, OptimizerConfig, RunConfig
from gan_core.errors import Diverged, UserError

CHECKPOINT = "checkpoint.pt"
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
    m = cfg.model
    return models.build(m.arch, m.depth, m.width, m.channels, m.head, m.latent_dim)


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


def count_flops(cfg: RunConfig) -> tuple[float, float]:
    """Model FLOPs (forward + backward) of one D step and one G step, counted once on the meta device."""
    return _count_flops(cfg.model, cfg.schedule.batch_size)


@cache  # a study counts the same model many times
def _count_flops(m: ModelConfig, b: int) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        g, d = models.build(m.arch, m.depth, m.width, m.channels, m.head, m.latent_dim)
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


def _truncate_jsonl(path: Path, max_g_step: int) -> None:
    """On resume, drop lines logged after the checkpoint: the resumed run logs them again."""
    if path.exists():
        keep = [r for r in files.read_jsonl(path) if r.get("g_step", 0) <= max_g_step]
        files.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _save_samples(path: Path, generator: nn.Module, z: torch.Tensor, head: str) -> None:
    import torchvision

    was_training = generator.training
    generator.eval()  # the blog sampled in training mode; eval mode shows what G has learned
    with torch.no_grad():
        images = sampling.to_uint8(generator(z), head).float() / 255.0
    generator.train(was_training)
    files.atomic_write(path, lambda p: torchvision.utils.save_image(images, p, nrow=8, format="png"))


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
    device = devices.resolve(cfg.device.device)
    split = split or data.load(cfg.data)
    sch, m = cfg.schedule, cfg.model
    out = Path(out_dir) if out_dir is not None else None
    ckpt = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False) \
        if resume and out is not None and (out / CHECKPOINT).exists() else None
    if ckpt is not None:
        _check_resumable(RunConfig.from_dict(ckpt["config"]), cfg)
    elif out is not None and (out / CHECKPOINT).exists():
        raise UserError(f"{out} already holds a run; resume it (--resume) or choose another output folder")

    steps = GanSteps(cfg, data.training_images(split, cfg.data), device)
    g_net, d_net, b = steps.g_net, steps.d_net, cfg.schedule.batch_size
    fixed_noise = sampling.noise(N_SAMPLES_PNG, m.latent_dim, cfg.seed + 2, device)
    d_flops, g_flops = count_flops(cfg)

    g_step = d_step = 0
    wall_s = 0.0
    if ckpt is not None:
        steps.load_state_dict(ckpt)
        g_step, d_step, wall_s = ckpt["g_step"], ckpt["d_step"], ckpt["wall_s"]
        for name in ("stats.jsonl", "evals.jsonl"):
            _truncate_jsonl(out / name, g_step)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt is None:  # a fresh start: logs of an earlier attempt that never checkpointed are stale
            for name in ("stats.jsonl", "evals.jsonl", "summary.json"):
                (out / name).unlink(missing_ok=True)
        files.write_text(out / "config.json", cfg.to_json() + "\n")

    def checkpoint() -> None:
        if out is None:
            return
        files.torch_save(out / CHECKPOINT, {
            "config": cfg.to_dict(), **steps.state_dict(), "g_step": g_step, "d_step": d_step, "wall_s": wall_s,
        })

    def summary(status: str, **extra) -> dict:
        return {
            "status": status, "g_steps": g_step, "d_steps": d_step, "real_images": d_step * b,
            "wall_s": wall_s, "flops": d_step * d_flops + g_step * g_flops,
            "flops_per_g_step": g_flops, "flops_per_d_step": d_flops,
            "device": str(device), "torch": torch.__version__, **extra,
        }

    def crossed(every: int, before: int) -> bool:
        return every > 0 and g_step // every > before // every

    def check_finite(vals: torch.Tensor, first: int, name: str) -> None:
        bad = (~torch.isfinite(vals)).nonzero()
        if len(bad) == 0:
            return
        if name == "generator loss":
            step, what = first + int(bad[0]) + 1, name
        else:  # a D step runs after (its iteration) x g_steps generator steps
            d_index = first + int(bad[0]) + 1
            step = min((d_index - 1) // sch.d_steps * sch.g_steps, cfg.steps)
            what = f"{name} (D step {d_index})"
        _record_divergence(out, summary("diverged", reason=f"{what} not finite at step {step}"))
        raise Diverged(step, what)

    result = TrainResult(cfg, out, 0, 0, 0, 0.0, 0.0, generator=g_net)
    g_losses: list[torch.Tensor] = []
    d_losses: list[torch.Tensor] = []
    g_at_tick, d_at_tick, t_tick = g_step, d_step, time.perf_counter()
    t_start = time.perf_counter() - wall_s
    while g_step < cfg.steps:
        before = g_step
        d_new, g_new = steps.iteration(min(sch.g_steps, cfg.steps - g_step))
        d_losses += d_new
        g_losses += g_new
        d_step += len(d_new)
        g_step += len(g_new)
        end = g_step == cfg.steps
        if not (crossed(cfg.log_every, before) or end):
            continue
        # note: this is the loop's host sync point; everything above stays queued on the device.
        g_vals = torch.stack(g_losses).cpu()
        d_vals = torch.stack(d_losses).cpu()
        now = time.perf_counter()
        wall_s = now - t_start
        check_finite(d_vals, d_at_tick, "discriminator loss")
        check_finite(g_vals, g_at_tick, "generator loss")
        if not _finite_weights(g_net, d_net):
            _record_divergence(out, summary("diverged", reason=f"weights not finite at step {g_step}"))
            raise Diverged(g_step, "a weight")
        dt = max(now - t_tick, 1e-9)
        record = {
            "g_step": g_step, "d_step": d_step, "real_images": d_step * b, "wall_s": round(wall_s, 4),
            "flops": d_step * d_flops + g_step * g_flops,
            "loss_d": float(d_vals.mean()), "loss_g": float(g_vals.mean()),
            "g_images_per_s": (g_step - g_at_tick) * b / dt, "real_images_per_s": (d_step - d_at_tick) * b / dt,
        }
        g_losses.clear()
        d_losses.clear()
        if out is not None:
            with open(out / "stats.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        result.last = record
        if on_log is not None:
            on_log(record)
        if on_eval is not None and cfg.eval_every > 0 and (crossed(cfg.eval_every, g_at_tick) or end):
            metrics = on_eval(EvalPoint(g_step, d_step, wall_s, g_net, cfg, device, out))
            if metrics:
                row = {"g_step": g_step, "d_step": d_step, "wall_s": round(wall_s, 4), **metrics}
                result.evals.append(row)
                if out is not None:
                    with open(out / "evals.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
        if out is not None and crossed(cfg.sample_every, g_at_tick) and not end:
            _save_samples(out / "samples.png", g_net, fixed_noise, m.head)
        if crossed(cfg.checkpoint_every, g_at_tick) and not end:
            checkpoint()
        g_at_tick, d_at_tick = g_step, d_step
        t_tick = time.perf_counter()
        t_start += t_tick - now  # evaluation, sampling and checkpoint writes are not training time

    s = summary("finished")
    if out is not None:
        _save_samples(out / "samples.png", g_net, fixed_noise, m.head)
        checkpoint()
        files.write_json(out / "summary.json", s)
    result.g_steps, result.d_steps, result.real_images = g_step, d_step, s["real_images"]
    result.wall_s, result.flops = wall_s, s["flops"]
    return result


def _record_divergence(out: Path | None, info: dict) -> None:
    if out is not None:
        files.write_json(out / "summary.json", info)


def _check_resumable(saved: RunConfig, cfg: RunConfig) -> None:
    """A resumed run must be the same experiment; only the budget and the logging cadence may change."""
    free = {"steps", "log_every", "sample_every", "checkpoint_every", "eval_every"}
    a, b = saved.to_dict(), cfg.to_dict()
    diff = sorted(k for k in a if k not in free and a[k] != b[k])
    if diff:
        raise UserError(f"cannot resume: the checkpoint's config differs in {', '.join(diff)}; "
                        "use the same settings or another output folder")


def load_run(run_dir: str | os.PathLike) -> tuple[RunConfig, nn.Module]:
    """(config, generator in eval mode on the CPU) from a run folder's config.json and checkpoint.pt."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a run folder (no config.json)")
    if not (run_dir / CHECKPOINT).exists():
        raise UserError(f"{run_dir} has no {CHECKPOINT} yet; train it first")
    cfg = RunConfig.from_json((run_dir / "config.json").read_text())
    g, _ = build_models(cfg)
    g.load_state_dict(torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)["g"])
    return cfg, g.eval()


if __name__ == "__main__":
    from gan_core.train_cli import main

    raise SystemExit(main())
