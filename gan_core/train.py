"""`python -m gan_core.train`: flags for every RunConfig field on top of a preset.

Thin: it builds one RunConfig, validates it (and the data) before anything is written, then calls
gan_core.training.loop.train. ``--dry-run`` prints the final config as JSON and exits.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from gan_core import cli
from gan_core.errors import ConfigError, Diverged
from gan_core.training.config import (
    ARCHS,
    COMPILE_MODES,
    HEADS,
    LOSSES,
    MAX_SEED,
    ORDERS,
    PRESETS,
    SOURCES,
    OptimizerConfig,
    override,
    parse_ratio,
    preset,
)
from gan_core.training.run_folder import CHECKPOINT

PROG = "python -m gan_core.train"

# flag -> (config key, argparse options). Keys are dotted RunConfig paths.
FLAGS = {
    "--arch": ("model.arch", {"metavar": "|".join(ARCHS) + "|MODULE:FUNCTION"}),  # a builder: plugin_arch
    "--depth": ("model.depth", {"type": int}),
    "--width": ("model.width", {"type": float}),
    "--channels": ("model.channels", {"type": int, "choices": (1, 3)}),
    "--head": ("model.head", {"choices": HEADS}),
    "--latent-dim": ("model.latent_dim", {"type": int}),
    "--batch-size": ("schedule.batch_size", {"type": int}),
    "--loss": ("schedule.loss", {"choices": LOSSES}),
    "--reuse-noise": ("schedule.reuse_noise", {"action": argparse.BooleanOptionalAction}),
    "--order": ("schedule.order", {"metavar": "|".join(ORDERS)}),  # checked by the config: one line, the valid ones
    "--data": ("data.source", {"choices": SOURCES}),
    "--data-root": ("data.root", {}),
    "--download": ("data.download", {"action": argparse.BooleanOptionalAction}),
    "--heldout-per-class": ("data.heldout_per_class", {"type": int}),
    "--device": ("device.device", {}),
    "--amp": ("device.amp", {"action": argparse.BooleanOptionalAction}),
    "--channels-last": ("device.channels_last", {"action": argparse.BooleanOptionalAction}),
    "--compile": ("device.compile", {"choices": COMPILE_MODES}),
    "--cudnn-benchmark": ("device.cudnn_benchmark", {"action": argparse.BooleanOptionalAction}),
    "--steps": ("steps", {"type": int}),
    "--seed": ("seed", {"type": int}),
    "--log-every": ("log_every", {"type": int}),
    "--sample-every": ("sample_every", {"type": int}),
    "--checkpoint-every": ("checkpoint_every", {"type": int}),
    "--eval-every": ("eval_every", {"type": int}),
}


def parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description="Train one GAN and write a run folder.")
    p.add_argument("--preset", default="default", help=f"starting point: {', '.join(PRESETS)} (blog = the blog)")
    p.add_argument("--out", help="run folder (default: runs/train/<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--seeds", help="train several seeds in one pass, e.g. 0,1,2: one run folder each, "
                                   "OUT/seed0, OUT/seed1, ... (instead of --seed)")
    p.add_argument("--dry-run", action="store_true", help="print the final config as JSON and exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on when stderr is a terminal)")
    p.add_argument("--ratio", help="D:G steps per iteration, e.g. 1:5 (the blog) or 1:1")
    p.add_argument("--train-limit", help="use the first N train images, or 'all' (the blog: 900)")
    for net in ("", "g-", "d-"):
        which = {"": "both networks", "g-": "the generator", "d-": "the discriminator"}[net]
        p.add_argument(f"--{net}optim", help=f"torch.optim class for {which}, e.g. Adam, Adadelta, RMSprop, SGD")
        p.add_argument(f"--{net}lr", type=float, help=f"learning rate of {which}")
        p.add_argument(f"--{net}optim-args", help=f"extra optimizer arguments for {which} as JSON, "
                                                  'e.g. \'{"betas": [0.5, 0.999]}\'')
    for flag, (key, opts) in FLAGS.items():
        p.add_argument(flag, dest=key, default=None, help=f"sets {key}", **opts)
    return p


def _optimizer(base: OptimizerConfig, name, lr, args) -> OptimizerConfig:
    """A changed optimizer name drops the preset's extra arguments (Adam's betas mean nothing to SGD)."""
    kwargs = base.kwargs if name is None or name.lower() == base.name.lower() else {}
    if args is not None:
        try:
            kwargs = json.loads(args)
        except json.JSONDecodeError:
            raise ConfigError(f"optimizer arguments must be a JSON object, got {args!r}") from None
    return OptimizerConfig(name or base.name, lr if lr is not None else base.lr, kwargs)


def config_from_args(args: argparse.Namespace):
    cfg = preset(args.preset)
    changes = {key: getattr(args, key) for key, _ in FLAGS.values() if getattr(args, key) is not None}
    if args.ratio is not None:
        changes["schedule.d_steps"], changes["schedule.g_steps"] = parse_ratio(args.ratio)
    if args.train_limit is not None:
        if args.train_limit == "all":
            changes["data.train_limit"] = None
        elif args.train_limit.isdigit() and int(args.train_limit) > 0:
            changes["data.train_limit"] = int(args.train_limit)
        else:
            raise ConfigError(f"--train-limit must be a positive integer or 'all', got {args.train_limit!r}")
    for net in ("g", "d"):
        base = getattr(cfg, f"{net}_optim")
        name = getattr(args, f"{net}_optim") or args.optim
        lr = getattr(args, f"{net}_lr") if getattr(args, f"{net}_lr") is not None else args.lr
        extra = getattr(args, f"{net}_optim_args") or args.optim_args
        if name is not None or lr is not None or extra is not None:
            changes[f"{net}_optim"] = _optimizer(base, name, lr, extra)
    cfg = override(cfg, changes)
    if ":" in cfg.model.arch:  # a user's builder: its knobs, its source hash and its shapes, before any work
        from gan_core.training import plugin_arch

        plugin_arch.check_knobs(cfg.model.arch, [k for k in changes if k != "model.arch"], "the flags")
        cfg = plugin_arch.with_source_hash(cfg)
        plugin_arch.check_shapes(cfg.model)
    return cfg


def parse_seeds(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not all(re.fullmatch(r"[0-9]+", p) for p in parts) or len(set(map(int, parts))) != len(parts) \
            or max(map(int, parts)) > MAX_SEED:
        raise ConfigError(f"--seeds must be distinct integers from 0 to {MAX_SEED:,} separated by commas, e.g. 0,1,2; "
                          f"got {text!r}")
    return [int(p) for p in parts]


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, prog=PROG)


def _main(argv: list[str] | None) -> int:
    from gan_core import devices
    from gan_core.training import data, loop

    args = parser().parse_args(argv)
    cfg = config_from_args(args)
    seeds = _seeds(args, cfg)
    if args.dry_run:
        print(cfg.to_json())
        return 0
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR (the run folder to continue)")
    device = devices.resolve(cfg.device.device)
    split = data.load(cfg.data)  # missing data fails here, before the run folder exists
    out = Path(args.out or f"runs/train/{time.strftime('%Y%m%d-%H%M%S')}")
    folders = [out] if seeds is None else [loop.seed_folder(out, s) for s in seeds]
    if args.resume and not any((f / CHECKPOINT).is_file() for f in folders):  # refused, not silently a fresh start
        where = out if seeds is None else f"{out}/seed*"
        raise ConfigError(f"nothing to resume: {where} has no {CHECKPOINT}; drop --resume to start a new run there")
    note = loop.graph_fallback(cfg, device)
    if note:
        print(note, file=sys.stderr)
    bar, on_log = _progress_bar(args, cfg)
    try:
        outcomes = loop.train_seeds(cfg, seeds or [cfg.seed], folders, on_log=on_log, resume=args.resume,
                                    split=split)
    finally:
        if bar is not None:
            bar.close()
    return _report(cfg, folders, outcomes, several=seeds is not None)


def _seeds(args, cfg) -> list[int] | None:
    """--seeds as a list (None without it), refused with --seed or for a config that cannot train packed."""
    from gan_core.training import packing

    if args.seeds is None:
        return None
    if args.seed is not None:
        raise ConfigError("give --seed or --seeds, not both")
    seeds = parse_seeds(args.seeds)
    if len(seeds) > 1:
        packing.check_packable(cfg)
    return seeds


def _progress_bar(args, cfg):
    """(a tqdm bar over the run's G steps, the on_log that updates it), by default when stderr is a terminal;
    (None, None) without one."""
    if not (args.progress if args.progress is not None else sys.stderr.isatty()):
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, unit="G step", file=sys.stderr)

    def on_log(record: dict) -> None:
        bar.n = record["g_step"]
        loss_d = "-" if record["loss_d"] is None else f"{record['loss_d']:.3f}"  # None: no D step since the tick
        bar.set_postfix(img_s=f"{record['g_images_per_s']:.0f}", loss_d=loss_d, loss_g=f"{record['loss_g']:.3f}")
        bar.refresh()

    return bar, on_log


def _report(cfg, folders: list[Path], outcomes: list, several: bool) -> int:
    """A line per run folder; a diverged run is an error (exit 1 for some seeds of several, raised for one)."""
    diverged = []
    for folder, result in zip(folders, outcomes, strict=True):
        if isinstance(result, Diverged):
            diverged.append(f"{folder}: {result}")
            continue
        print(f"{folder}: {result.g_steps} G steps, {result.d_steps} D steps in {result.wall_s:.1f} s "
              f"({result.g_steps * cfg.schedule.batch_size / max(result.wall_s, 1e-9):.0f} generated images/s)")
    if diverged:
        if not several:
            raise outcomes[0]
        sys.stderr.write("".join(f"{PROG}: error: {line}\n" for line in diverged))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
