"""`python -m ablations.run --study NAME`: run a study with Optuna, then print its table and build the report.

Grid studies enqueue every arm x seed once; workers (local processes, or the same command on other
hosts with the same --storage) pop queued trials until none is left. Re-running the command
resumes: finished trials are kept and only missing arm x seed pairs are queued. A worker killed
mid-trial leaves a trial whose heartbeat goes stale; Optuna fails it and queues a retry, which
resumes from the run folder's checkpoint.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ablations.progress import StudyProgress
from ablations.settings import PROG, Settings, make_context, open_study, share_artifacts, study_identity, write_record
from ablations.trial_queue import TUNED, enqueue_missing
from ablations.workers import default_workers, run_workers
from gan_core import cli
from gan_core.errors import ConfigError, UnknownName, UserError
from gan_core.training.config import PRESETS, SOURCES, RunConfig


def parser() -> argparse.ArgumentParser:
    from ablations.budgets import BUDGETS
    from gan_core.storage import DEFAULT_URL

    p = cli.ArgumentParser(prog=PROG, description="Run an ablation study (Optuna) and write reports/summary.html.")
    p.add_argument("--study", help="which study; --list shows them")
    p.add_argument("--list", action="store_true", help="list the studies with their arms and the budgets")
    p.add_argument("--base", help=f"preset every arm starts from: {', '.join(PRESETS)} (default: the study's for "
                                  "the budget, see --list)")
    p.add_argument("--arch", metavar="MODULE:FUNCTION", help="train every arm with your own (G, D) builder instead "
                                                             "of the base's family (see python -m gan_core.train)")
    p.add_argument("--budget", default="auto", help=f"auto (quick on CPU, standard on CUDA), {', '.join(BUDGETS)}")
    p.add_argument("--seeds", type=int, help="seeds per arm (default: the budget's, 5 except smoke)")
    p.add_argument("--workers", type=int, help="local worker processes (default: one single-threaded worker per "
                                                "CPU core up to 8; on CUDA one per GPU of --device, N spread "
                                                "round-robin over them)")
    p.add_argument("--pack-seeds", action=argparse.BooleanOptionalAction, default=None,
                   help="train an arm's seeds in one pass, a packed network (default: on CUDA, where it fills the "
                        "GPU; off on the CPU, where it is slower)")
    p.add_argument("--storage", default=DEFAULT_URL,
                   help="Optuna storage: sqlite:///FILE, postgresql://..., journal:FILE")
    p.add_argument("--study-name", help="Optuna study name (default: STUDY-BASE-BUDGET)")
    p.add_argument("--runs", default="runs", help="folder for the trials' run folders")
    p.add_argument("--artifacts", metavar="PATH",
                   help="also put what the page and a retry need from each trial (samples, curves, checkpoints) in "
                        "this Optuna artifact store, a folder every host sees; for hosts that share only --storage "
                        "(default: none, run folders stay local)")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda (every visible GPU: CUDA_VISIBLE_DEVICES), cuda:N, or GPUs cuda:0,cuda:2; "
                        "each worker is pinned to one of them")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="train under bf16 autocast (default: on a CPU with bf16 instructions, avx512_bf16 or AMX, "
                        "where the main job took 1.22x (AMD EPYC) to 1.47x (Intel Xeon) less time with the same "
                        "main-job answer; fp32 on other CPUs and on CUDA: README)")
    p.add_argument("--data", choices=SOURCES, help="data source (default: the base preset's, embedded)")
    p.add_argument("--data-root", help="folder of the mnist or folder data source")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between trial heartbeats (RDB storages)")
    p.add_argument("--report", default="reports/summary.html", help="where the HTML report goes")
    p.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    p.add_argument("--dry-run", action="store_true", help="print the plan (arms, seeds, budget) and exit")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar over the study's G steps (default: on when stderr is a terminal)")
    return p


def listing() -> str:
    from ablations.budgets import BUDGETS
    from ablations.studies import REGISTRY

    lines = ["studies:"]
    for s in REGISTRY.values():
        arms = ", ".join(a.label for a in s.arms) if s.is_grid else "searched by TPE with pruning"
        lines.append(f"  {s.name:<12} {s.knob}: {arms}")
        if s.tuning:
            lines.append(f"  {'':<12} {s.tuning.text()}: " + ", ".join(c.label for c in s.tuning.candidates))
        bases = ", ".join(f"{b} {base.preset}" + (f" x{base.shrink:g}" if base.shrink != 1 else "")
                          + (f" batch {base.batch_size}" if base.batch_size else "")
                          for b, base in s.bases.items())
        lines.append(f"  {'':<12} base per budget (channels x shrink, never below 8): {bases}")
    lines.append("budgets (unit: generator steps per trial):")
    for b in BUDGETS.values():
        lines.append(f"  {b.name:<9} {b.g_steps:>6} G steps, {b.seeds} seed(s): {b.note}")
    lines.append("  auto      quick on a CPU, standard on CUDA")
    return "\n".join(lines)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate every input before anything is written."""
    from ablations import budgets
    from ablations.studies import REGISTRY, RENAMED
    from gan_core import devices, files

    if not args.study:
        raise UserError(f"--study is required; choose one of: {', '.join(REGISTRY)} (or --list)")
    if args.study in RENAMED:
        raise UserError(f"study {args.study!r} is now {RENAMED[args.study]!r}: run --study {RENAMED[args.study]}")
    if args.study not in REGISTRY:
        raise UnknownName("study", args.study, REGISTRY)
    gpus = [str(d) for d in devices.worker_devices(args.device) if d.type == "cuda"]  # bad names refused here
    device = devices.resolve(gpus[0] if gpus else args.device)
    budget = budgets.resolve(args.budget, cuda=device.type == "cuda")
    study_base = REGISTRY[args.study].base(budget.name)
    base_name = args.base or study_base.preset
    if REGISTRY[args.study].restores and base_name != study_base.preset:
        raise UserError(f"{args.study} restores the blog's own choices into its preset {study_base.preset!r}; "
                        f"another base ({base_name!r}) would restore that base's settings instead: drop --base")
    own_base = base_name == study_base.preset  # its batch and its reason belong to the study's own base only
    base = base_config(args, base_name, study_base, own_base, gpus, device)
    seeds = budget.seeds if args.seeds is None else args.seeds
    if seeds < 1:
        raise UserError(f"--seeds must be an integer >= 1, got {seeds}")
    check_trials(REGISTRY[args.study], seeds)
    workers = check_workers(args.workers, args.storage, device, len(gpus))
    if args.heartbeat <= 0:
        raise UserError(f"--heartbeat must be > 0 seconds, got {args.heartbeat}")
    pack_seeds = device.type == "cuda" and REGISTRY[args.study].is_grid if args.pack_seeds is None else args.pack_seeds
    if pack_seeds and not REGISTRY[args.study].is_grid:
        raise UserError(f"--pack-seeds needs a grid study; {args.study} is searched (each trial its own config)")
    files.check_writable(args.runs, "the trials' run folders (--runs)")
    if args.artifacts:
        files.check_writable(args.artifacts, "the artifact store (--artifacts)")
    if not args.no_report:
        files.check_writable_file(args.report, "the report (--report)")
    return Settings(args.study, base_name, base, study_base.why if own_base else "", budget.name, seeds,
                    args.storage, args.heartbeat, args.study_name or study_name(args, base_name, budget.name),
                    args.runs, workers, seeds if pack_seeds else 1,
                    tuple(gpus[k % len(gpus)] for k in range(workers)) if gpus else (),
                    os.path.abspath(args.artifacts) if args.artifacts else None)


def base_config(args: argparse.Namespace, base_name: str, study_base, own_base: bool, gpus: list[str],
                device) -> RunConfig:
    """The config every arm starts from: the preset with the budget's shrink, the study's batch (its own base
    only), its precision (--amp, else bf16 where ``device`` computes it natively) and the data and builder asked
    for."""
    from ablations.studies import REGISTRY
    from gan_core import devices
    from gan_core.training.config import override, preset

    # on CUDA each worker's trials record its own GPU (the config of worker 0 here); the CPU's is as given
    changes = {"device.device": gpus[0] if gpus else args.device, "model.shrink": study_base.shrink,
               "device.amp": devices.native_bf16(device) if args.amp is None else args.amp}
    if study_base.batch_size is not None and own_base:
        changes["schedule.batch_size"] = study_base.batch_size
    if args.data:
        changes["data.source"] = args.data
    if args.data_root:
        changes["data.root"] = args.data_root
    if args.arch:
        changes["model.arch"] = args.arch
    base = override(preset(base_name), changes)
    if args.arch:
        base = plugged_base(base, REGISTRY[args.study])
    return base


def study_name(args: argparse.Namespace, base_name: str, budget: str) -> str:
    """STUDY-BASE-BUDGET, and the builder's path when --arch plugs one in (its trials are another experiment)."""
    arch = f"-{args.arch.replace(':', '.')}" if args.arch else ""
    return f"{args.study}-{base_name}-{budget}{arch}"


def plugged_base(base: RunConfig, study) -> RunConfig:
    """The base with a user's builder: the knobs the study's arms vary must be ones the builder takes; its source
    hash is recorded and its shapes are checked, before any trial."""
    import optuna

    from gan_core.training import plugin_arch
    from gan_core.training.config import override

    keys = [k for arm in study.trained_arms for k in arm.changes]
    if not study.is_grid:  # a searched study's knobs: the keys its space returns for one throwaway trial
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
        try:
            keys = list(study.space(optuna.create_study().ask()))
        finally:
            optuna.logging.set_verbosity(level)
    who = f"the {study.name} study's {'arms' if study.is_grid else 'trials'}"
    if "model.arch" in keys:
        raise ConfigError(f"{who} change the network itself (model.arch), so --arch cannot replace it; run --arch "
                          "with another study")
    plugin_arch.check_knobs(base.model.arch, keys, who)
    if "shrink" not in plugin_arch.accepted_knobs(base.model.arch):  # the budget cannot shrink it: say so, not x1/8
        base = override(base, {"model.shrink": 1.0})
    base = plugin_arch.with_source_hash(base)
    plugin_arch.check_shapes(base.model)
    return base


MAX_TRIALS = 10_000  # a study's queue: at ~10 ms a storage write and ~5 s a smoke trial, 14 hours on a core
WORKER_BYTES = 500e6  # memory of one worker process, at least (torch, the data, a model; measured 0.5-0.9 GB)


def check_trials(spec, seeds: int) -> None:
    """Refuse a grid that cannot finish: its arm x seed trials are queued before the first trains."""
    if spec.is_grid and len(spec.arms) * seeds + spec.tuning_trials > MAX_TRIALS:
        raise UserError(f"--seeds {seeds:,} makes {len(spec.arms) * seeds:,} trials ({len(spec.arms)} arms x {seeds:,} "
                        f"seeds), more than the {MAX_TRIALS:,} a study may queue; use --seeds "
                        f"{(MAX_TRIALS - spec.tuning_trials) // len(spec.arms):,} or less")
    if spec.tuning and seeds > min(spec.tuning.seeds):  # the verdict must never see a tuning seed
        raise UserError(f"--seeds {seeds:,} would reach the tuning seeds ({min(spec.tuning.seeds):,} on); use --seeds "
                        f"{min(spec.tuning.seeds):,} or less")


def check_workers(asked: int | None, url: str, device, gpus: int) -> int:
    """The number of local worker processes: the default, or ``asked`` if this machine can hold them and the
    storage can be shared between processes."""
    from gan_core import devices, storage

    in_memory = storage.parse(url).in_memory
    if in_memory and asked is not None and asked > 1:
        # each spawned worker would open a database of its own, empty: they would train nothing
        raise UserError(f"storage {url!r} lives in this process's memory, which worker processes cannot share; "
                        "use --workers 1, or a file storage (sqlite:///FILE) for several")
    workers = (1 if in_memory else default_workers(device, gpus)) if asked is None else asked
    if workers < 1:
        raise UserError(f"--workers must be an integer >= 1, got {workers}")
    if workers > 1:
        devices.check_fits("--workers", workers, WORKER_BYTES, devices.resolve("cpu"), "--workers")
    return workers


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv, prog=PROG)


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print(listing())
        return 0
    settings = settings_from_args(args)
    import optuna

    from ablations.budgets import BUDGETS

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created": we print our own lines
    from ablations.studies import REGISTRY

    spec, budget = REGISTRY[settings.study], BUDGETS[settings.budget]
    shrink = settings.base.model.shrink
    plan = plan_text(settings, spec, budget)
    if args.dry_run:
        print(plan)
        return 0
    ctx = make_context(settings)  # loads the data: a missing data set fails here, before any storage write
    study = open_study(settings, study_identity(settings, ctx))  # a study that is not this run's: refused here
    write_record(settings, ctx, study)
    queued = enqueue_missing(study, spec, settings.seeds, by_arm=settings.pack > 1) if spec.is_grid else 0
    print(f"{plan}\n{queued} trial(s) queued now; storage {settings.storage}, study {study.study_name}",
          flush=True)
    if note := share_artifacts(study, settings):
        print(note, flush=True)
    workers = settings.workers
    planned = len(spec.arms) * settings.seeds + spec.tuning_trials if spec.is_grid else budget.joint_trials
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        with StudyProgress(study, planned, budget.g_steps, show):
            crashed = run_workers(settings, ctx, study)
        if crashed:  # finished trials are safe in the storage; the same command resumes the rest
            print(f"{len(crashed)} of {workers} workers failed (exit codes {crashed}); "
                  "rerun the same command to resume", file=sys.stderr)
            return 1
    except KeyboardInterrupt as e:
        print("interrupted: finished trials are kept; rerun the same command to resume", file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    from reports.terminal import summary_table

    print(summary_table(study, settings.runs, study.user_attrs.get("floor")))
    if tuned := study.user_attrs.get(TUNED):
        print("tuned on seed(s) " + ", ".join(map(str, spec.tuning.seeds)) + ": "
              + ", ".join(f"{arm} = {candidate}" for arm, candidate in tuned.items()))
    if shrink != 1:
        print(f"note: the budget shrank every model's channels by {shrink:g}, never below 8 channels")
    if not args.no_report:
        print(build_report(settings, args.report))
    return 0


def plan_text(settings: Settings, spec, budget) -> str:
    """What the command will run: printed by --dry-run, and first by a run."""
    size = f"{len(spec.arms)} arms x {settings.seeds} seeds" if spec.is_grid else f"{budget.joint_trials} trials"
    shrink = settings.base.model.shrink
    arch = settings.base.model.arch
    return (f"{spec.name}: {size}, base {settings.base_name}"
            + (f" built by --arch {arch} (study {settings.study_name})" if ":" in arch else "")
            + (f" with channels x{shrink:g} (never below 8)" if shrink != 1 else "")
            + f", batch {budget.batch_size or settings.base.schedule.batch_size}, {settings.base.device.precision}"
            + f", budget {budget.name} ({budget.note})"
            + (f"\n{spec.tuning.text()} ({spec.tuning_trials} trials, before the verdict's)" if spec.tuning else "")
            + (f"\nbase: {settings.base_why}" if settings.base_why else ""))


def build_report(settings: Settings, out: str) -> str:
    from ablations.studies import catalogue
    from gan_core import storage
    from reports.build import build

    if storage.parse(settings.storage).in_memory:
        return (f"report: not built ({settings.storage} ends with this command, so nothing is left for a report to "
                "read; use sqlite:///FILE to keep a study)")
    try:
        path = build(storage=settings.storage, runs=settings.runs, out=out, catalogue=catalogue(),
                     artifacts=settings.artifacts)
    except UserError as e:  # the study itself finished: a report problem must not turn that into a failure
        return f"report: not built ({e})"
    return f"report: {path}"


if __name__ == "__main__":
    raise SystemExit(main())
