"""`python -m benchmarks.gpu_checks --device cuda`: the checks of issue 12 that only a GPU can settle, as one JSON.

- ``graphs``: the project loop with torch.compile's CUDA-graph mode (``--compile reduce-overhead``) against eager,
  same seed, N iterations: the loss of every step, the largest relative difference (first iteration and over all),
  and the seconds per iteration of each (after a warm-up that includes compilation and graph recording).
- ``packed``: K members trained as one network against their solo runs, one iteration from the same seeds: the
  largest relative difference of a member's loss, and seconds per iteration of the pass and of K solo ones.

On a CPU it runs too (graphs fall back to eager, with the one line train prints), which is how its logic is
tested without a GPU. A GAN amplifies rounding: only the first iteration is expected to agree to float tolerance;
the later ones are reported, not judged (see ``passed``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from gan_core import devices
from gan_core.training import data
from gan_core.training.config import override, preset
from gan_core.training.loop import GanSteps, graph_fallback

FIRST_ITERATION_RTOL = 1e-3  # float32 reassociation (cuDNN algorithms, fused kernels), as tests/test_packing.py


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trajectory(cfg, images, device, iterations: int, seeds=()) -> tuple[torch.Tensor, float]:
    """([iterations, d_steps + g_steps, K] losses, best seconds per iteration after a 3-iteration warm-up), from a
    fresh GanSteps; the warm-up iterations are a second GanSteps of the same seed, so the losses start at step 1."""
    warm = GanSteps(cfg, images, device, seeds)
    for _ in range(3):
        warm.iteration()
    steps = GanSteps(cfg, images, device, seeds)
    losses, best = [], float("inf")
    for _ in range(iterations):
        t0 = time.perf_counter()
        timeline = steps.iteration()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        losses.append(torch.stack([loss for _, loss in timeline]))  # D steps, then G steps
    return torch.stack(losses).float().cpu(), best


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).nan_to_num(float("inf"))


def check_graphs(cfg, images, device, iterations: int) -> dict:
    eager, eager_s = _trajectory(cfg, images, device, iterations)
    graphed_cfg = override(cfg, {"device.compile": "reduce-overhead"})
    graphed, graphed_s = _trajectory(graphed_cfg, images, device, iterations)
    rel = _rel(graphed, eager)
    first, finite = float(rel[0].max()), bool(torch.isfinite(graphed).all())
    return {"model": cfg.model.arch, "batch": cfg.schedule.batch_size, "iterations": iterations,
            "fallback": graph_fallback(graphed_cfg, device), "first_iteration_max_rel": first,
            "all_iterations_max_rel": float(rel.max()), "finite": finite,
            "eager_s_per_iteration": eager_s, "graphed_s_per_iteration": graphed_s,
            "speedup": eager_s / graphed_s, "passed": first <= FIRST_ITERATION_RTOL and finite}


def check_packed(cfg, images, device, k: int) -> dict:
    packed, packed_s = _trajectory(cfg, images, device, 1, range(k))
    solo = [_trajectory(override(cfg, {"seed": s}), images, device, 1) for s in range(k)]
    solo_losses = torch.stack([losses[..., 0] for losses, _ in solo], -1)
    solo_s = sum(s for _, s in solo)
    first = float(_rel(packed, solo_losses).max())
    return {"model": cfg.model.arch, "width": cfg.model.width, "k": k, "first_iteration_max_rel": first,
            "packed_s_per_iteration": packed_s, "solo_s_per_iteration_sum": solo_s, "speedup": solo_s / packed_s,
            "passed": first <= FIRST_ITERATION_RTOL}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_checks", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--width", type=float, default=None, help="the model's width (default: the preset's)")
    args = p.parse_args(argv)
    device = devices.resolve(args.device)
    changes = {"device.device": str(device)} | ({"model.width": args.width} if args.width else {})
    cfg = override(preset("dcgan"), changes)
    images = data.training_images(data.load(cfg.data), cfg.data)
    report = {"device": str(device), "device_name": devices.name(device), "torch": torch.__version__,
              "graphs": check_graphs(cfg, images, device, args.iterations),
              "packed": check_packed(cfg, images, device, args.k)}
    print(json.dumps(report, indent=1))
    return 0 if report["graphs"]["passed"] and report["packed"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
