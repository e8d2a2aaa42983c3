"""`python -m ablations.run --study NAME`: run a study with Optuna, then print its table and build the report.

Grid studies enqueue every arm x seed once; workers (local processes, or the same command on other
hosts with the same --storage) pop queued trials until none is left. Re-running the command
resumes: finished trials are kept and only missing arm x seed pairs are queued. A worker killed
mid-trial leaves a trial whose heartbeat goes stale; Optuna fails it and queues a retry, which
resumes from the run folder's checkpoint.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gan_core import cli
from gan_core.errors import UnknownName, UserError, first_line, mask_passwords
from gan_core.training.config import PRESETS, SOURCES, RunConfig

PROG = "python -m ablations.run"


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
        bases = ", ".join(f"{b} {base.preset}" + (f" x{base.shrink:g}" if base.shrink != 1 else "")
                          + (f" batch {base.batch_size}" if base.batch_size else "")
                          for b, base in s.bases.items())
        lines.append(f"  {'':<12} base per budget (channels x shrink, never below 8): {bases}")
    lines.append("budgets (unit: generator steps per trial):")
    for b in BUDGETS.values():
        lines.append(f"  {b.name:<9} {b.g_steps:>6} G steps, {b.seeds} seed(s): {b.note}")
    lines.append("  auto      quick on a CPU, standard on CUDA")
    return "\n".join(lines)


@dataclass(frozen=True)
class Settings:
    """One study run's settings, validated; a spawned worker process receives them pickled."""

    study: str  # registry name
    base_name: str  # the preset every arm starts from
    base: RunConfig  # with the budget's shrink (model.shrink)
    base_why: str  # why the study starts from this base, when it is not the blog's setting
    budget: str  # budget name
    seeds: int
    storage: str
    heartbeat: float  # seconds between trial heartbeats
    study_name: str
    runs: str
    workers: int
    pack: int = 1  # seeds trained in one pass (1: one seed per pass)
    devices: tuple[str, ...] = ()  # CUDA: worker k's GPU (cuda:N), round-robin over --device; CPU: () (the base's)
    artifacts: str | None = None  # the artifact store's folder (reports.artifacts), or None


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate every input before anything is written."""
    from ablations import budgets
    from ablations.studies import REGISTRY, RENAMED
    from gan_core import devices, files
    from gan_core.training.config import override, preset

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
    own_base = base_name == study_base.preset  # its batch and its reason belong to the study's own base only
    # on CUDA each worker's trials record its own GPU (the config of worker 0 here); the CPU's is as given
    changes = {"device.device": gpus[0] if gpus else args.device, "model.shrink": study_base.shrink}
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

    keys = [k for arm in study.arms for k in arm.changes]
    if not study.is_grid:  # a searched study's knobs: the keys its space returns for one throwaway trial
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
        try:
            keys = list(study.space(optuna.create_study().ask()))
        finally:
            optuna.logging.set_verbosity(level)
    plugin_arch.check_knobs(base.model.arch, keys, f"the {study.name} study's {'arms' if study.is_grid else 'trials'}")
    if "shrink" not in plugin_arch.accepted_knobs(base.model.arch):  # the budget cannot shrink it: say so, not x1/8
        base = override(base, {"model.shrink": 1.0})
    base = plugin_arch.with_source_hash(base)
    plugin_arch.check_shapes(base.model)
    return base


MAX_TRIALS = 10_000  # a study's queue: at ~10 ms a storage write and ~5 s a smoke trial, 14 hours on a core
WORKER_BYTES = 500e6  # memory of one worker process, at least (torch, the data, a model; measured 0.5-0.9 GB)


def check_trials(spec, seeds: int) -> None:
    """Refuse a grid that cannot finish: its arm x seed trials are queued before the first trains."""
    if spec.is_grid and len(spec.arms) * seeds > MAX_TRIALS:
        raise UserError(f"--seeds {seeds:,} makes {len(spec.arms) * seeds:,} trials ({len(spec.arms)} arms x {seeds:,} "
                        f"seeds), more than the {MAX_TRIALS:,} a study may queue; use --seeds "
                        f"{MAX_TRIALS // len(spec.arms):,} or less")


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


def default_workers(device, gpus: int) -> int:
    """CUDA: one process per GPU (processes on one GPU time-slice it: ten workers on one H200 were no faster
    together than one), each packing its arm's seeds. CPU: one single-threaded worker per core, up to 8: small
    models keep one core busy each, while two threads per process lose to each other (measured on 2 cores: a
    1:1 DCGAN G step took 75 ms with one thread and 770 ms with two, a second process running)."""
    return gpus if device.type == "cuda" else max(1, min(os.cpu_count() or 1, 8))


def worker_settings(settings: Settings) -> list[Settings]:
    """Each worker's settings: on CUDA its base on its own GPU (what its trials' configs record), else the same."""
    from dataclasses import replace

    from gan_core.training.config import override

    if not settings.devices:
        return [settings] * settings.workers
    return [replace(settings, base=override(settings.base, {"device.device": d}), devices=(d,))
            for d in settings.devices]


def open_study(settings: Settings, identity: dict | None = None):
    """The settings' study, created if new. With ``identity`` (what makes a study this command's: study_identity),
    a new study is marked with it and an existing one must carry it (check_study); without it (a worker started by
    a command that checked), the study is opened as it is."""
    import optuna

    from ablations.storage import open_storage
    from ablations.studies import REGISTRY

    spec = REGISTRY[settings.study]
    storage = open_storage(settings.storage, settings.heartbeat)
    if spec.is_grid:  # every arm x seed runs to the end: no sampling, no pruning
        sampler, pruner = optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    else:
        from ablations.budgets import BUDGETS

        b = BUDGETS[settings.budget]
        sampler = optuna.samplers.TPESampler(seed=0)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=b.eval_every)
    where = dict(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
    try:
        try:
            study = optuna.create_study(**where, direction="minimize", load_if_exists=identity is None)
            created = identity is not None
        except optuna.exceptions.DuplicatedStudyError:
            study, created = optuna.load_study(**where), False
        if created:  # first, so that a second command started with it finds the study marked as ours
            for key, value in identity.items():
                study.set_user_attr(key, value)
    except Exception as e:  # noqa: BLE001 - a storage that cannot hold the study: one line for the user
        raise UserError(f"cannot open study in {mask_passwords(settings.storage)!r}: {first_line(e)}") from None
    if identity is not None and not created:
        check_study(study, identity, settings)
    return study


IDENTITY_WAIT_S = 1.0  # how long a study without its identity may be one another command created an instant ago


def study_identity(settings: Settings, ctx) -> dict:
    """The study user attrs that make results comparable: a study that holds other values is another experiment."""
    from ablations.budgets import BUDGETS

    return {"study": settings.study, "base": settings.base_name, "budget": BUDGETS[settings.budget].to_dict(),
            "objective": ctx.objective, "data": ctx.base.data.source,
            "split": [len(ctx.split.train), len(ctx.split.heldout)], "extractor": ctx.reference.extractor_name}


def check_study(study, identity: dict, settings: Settings) -> None:
    """Refuse, before anything is trained or written, a study that is not this command's: of another kind, base,
    budget, objective, data or judge, with several objectives or another direction, not created by ablations.run,
    or holding attrs of the wrong type (reports.load's schema)."""
    import optuna

    from reports.load import STUDY_ATTRS, TRIAL_ATTRS, checked_attrs

    what = f"study {settings.study_name!r} in {mask_passwords(settings.storage)!r}"
    way_out = "give this run another --study-name"
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MINIMIZE:
        directions = ", ".join(d.name.lower() for d in study.directions)
        raise UserError(f"{what} is a study to {directions} ({len(study.directions)} objective(s)); {PROG} "
                        f"minimises one, {identity['objective']}: {way_out}")
    waited = 0.0
    while "study" not in study.user_attrs and waited < IDENTITY_WAIT_S and not study.get_trials(deepcopy=False):
        time.sleep(0.1)  # another command may have created it an instant ago and be writing its identity
        waited += 0.1
    try:
        attrs = checked_attrs(study.user_attrs, STUDY_ATTRS, f"study {settings.study_name!r}")
        for t in study.get_trials(deepcopy=False):
            checked_attrs(t.user_attrs, TRIAL_ATTRS, f"study {settings.study_name!r} trial #{t.number}")
    except UserError as e:
        raise UserError(f"{e}; {way_out}") from None
    if "study" not in attrs:
        raise UserError(f"{what} was not created by {PROG} (it has no 'study' user attr); {way_out}")
    for key, ours in identity.items():
        theirs = attrs.get(key, ours)  # a key an older version did not record: nothing to compare
        if isinstance(ours, dict) and theirs.get("name") == ours.get("name"):  # a budget redefined since
            # its note is prose; its seeds are the default --seeds, which a run may change
            diff = [k for k in ours if k not in ("note", "seeds") and theirs.get(k) != ours[k]]
            if diff:
                raise UserError(f"{what} holds another experiment: its {key} {ours['name']!r} differs in "
                                + ", ".join(f"{k} ({theirs.get(k)!r} there, {ours[k]!r} here)" for k in diff)
                                + f"; {way_out}")
        elif theirs != ours:
            shown = (theirs.get("name"), ours.get("name")) if isinstance(ours, dict) else (theirs, ours)
            raise UserError(f"{what} holds another experiment: its {key} is {shown[0]!r}, this run's {shown[1]!r}; "
                            f"{way_out} (or run the one it holds)")


def make_context(settings: Settings):
    from ablations.budgets import BUDGETS
    from ablations.studies import REGISTRY
    from ablations.trial import Context
    from gan_core import devices
    from gan_core.judging.evaluation import Evaluator, Reference, default_n
    from gan_core.judging.metrics import MetricNames
    from gan_core.training import data
    from gan_core.training.config import override
    from reports import artifacts

    base = settings.base
    budget = BUDGETS[settings.budget]
    spec = REGISTRY[settings.study]
    split = data.load(base.data)
    for changes in [{}, *(a.changes for a in spec.arms)]:  # a train limit past the data fails now, not every trial
        data.training_images(split, override(base, changes).data)
    reference = Reference(split, device=devices.resolve(base.device.device))
    n = budget.eval_n or default_n(split)
    return Context(spec, budget, base, split, reference,
                   Evaluator(n=budget.eval_n_intermediate, split=split, reference=reference),
                   Path(settings.runs) / settings.study_name, MetricNames.for_count(n).fid,
                   artifacts.open_store(settings.artifacts, create=True) if settings.artifacts else None)


def trial_key(t) -> tuple | None:
    """(arm, seed) of a grid trial: set as user attrs when queued, copied by Optuna into retries."""
    a = t.user_attrs
    return (a["arm"], a["seed"]) if "arm" in a and "seed" in a else None


def enqueue_missing(study, spec, seeds: int, by_arm: bool = False) -> int:
    """Queue every arm x seed that is neither done, running, queued nor finally failed. Returns how many.

    Seed by seed, so that every arm has a result early; arm by arm (``by_arm``) when the seeds of an arm train
    in one pass, so that a worker's next asks are one arm's seeds."""
    from optuna.trial import TrialState

    from ablations.trial import FINAL_FAILURES

    taken = set()
    for t in study.get_trials(deepcopy=False):
        key = trial_key(t)
        if key is None or t.user_attrs.get("spare") or t.user_attrs.get("duplicate"):
            continue
        if t.state != TrialState.FAIL or t.user_attrs.get("fail_kind") in FINAL_FAILURES:
            taken.add(key)
    queued = 0
    pairs = [(arm, seed) for seed in range(seeds) for arm in spec.arms]
    if by_arm:
        pairs.sort(key=lambda pair: spec.arms.index(pair[0]))  # stable: each arm's seeds stay in order
    for arm, seed in pairs:
        if (arm.label, seed) not in taken:
            study.enqueue_trial({"arm": arm.label, "seed": seed}, user_attrs={"arm": arm.label, "seed": seed})
            queued += 1
    return queued


def work(settings: Settings, threads: int | None = None, ctx=None, study=None, asks=None) -> None:
    """A worker: run queued trials (grid) or new ones (searched) until the study is done.

    ``ctx`` and ``study`` are passed in-process; a worker process builds its own. ``asks``: a lock the workers of
    one host share (run_workers), held while a worker asks for a pass's trials (see asking).
    """
    import optuna
    import torch
    from optuna.trial import TrialState

    from ablations.trial import objective
    from gan_core import devices

    if threads:
        torch.set_num_threads(threads)
    devices.pin(settings.base.device.device)  # a library's bare 'cuda' (torch-fidelity's) is this worker's GPU
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print one line per trial ourselves
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # work_pass asks for trials itself and keeps their heartbeats as study.optimize does; Optuna warns at every ask
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    study = study or open_study(settings)
    ctx = ctx or make_context(settings)
    poll = max(0.5, settings.heartbeat / 2)
    # How long an idle worker waits for running trials: long enough for a dead worker's trial to go
    # stale (3 heartbeats) and be queued again. Live trials of other workers are theirs to finish.
    patience = 3 * settings.heartbeat + 2 * poll
    idle_since = None
    while True:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, then queued again
        trials = study.get_trials(deepcopy=False)
        if ctx.study.is_grid:
            if not any(t.state == TrialState.WAITING for t in trials):
                running = sum(t.state == TrialState.RUNNING for t in trials)
                idle_since = idle_since or time.monotonic()
                if running and time.monotonic() - idle_since < patience:
                    time.sleep(poll)
                    continue
                if running:
                    print(f"{running} trial(s) still running in other workers; this worker is done", flush=True)
                return
            idle_since = None
        elif sum(t.state != TrialState.WAITING for t in trials) >= ctx.budget.joint_trials:  # running ones count
            return
        try:
            if settings.pack > 1:
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                work_pass(study, ctx, min(settings.pack, waiting), asks)
            else:
                study.optimize(partial(objective, ctx), n_trials=1, catch=(Exception,), callbacks=[_print_trial])
        except ValueError as e:
            # On SQLite two workers can pop the same queued trial (the pop is not atomic there); the
            # one that finishes second cannot record it again. The trial is done: go on.
            if "Cannot tell a" not in str(e):
                raise


def work_pass(study, ctx, n: int, asks=None) -> None:
    """Ask for n queued trials and train each arm's among them in one pass (ablations.trial.run_pass), each trial
    told as soon as its outcome is known: what study.optimize does for one trial, heartbeats included, for several
    at once. A trial that ends without an outcome (an interrupt, a fault) is told failed, as optimize does."""
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread  # Optuna's own, as study.optimize uses it
    from optuna.trial import TrialState

    from ablations.trial import run_pass

    trials, beats, told = [], {}, set()

    def tell(trial, outcome) -> None:
        beats.pop(trial.number).join()  # as optimize: the heartbeat stops before the trial is told
        told.add(trial.number)
        if isinstance(outcome, optuna.TrialPruned):
            state = {"state": TrialState.PRUNED}
        elif outcome is None or isinstance(outcome, BaseException):
            state = {"state": TrialState.FAIL}
        else:
            state = {"values": outcome}
        try:
            _print_trial(study, study.tell(trial, **state))
        except ValueError as e:  # SQLite's double pop, as in work(): the other worker told it
            if "Cannot tell a" not in str(e):
                raise

    try:
        with asking(asks):
            for _ in range(n):  # one at a time: no trial of ours is ever RUNNING without a heartbeat
                trial = study.ask()
                trials.append(trial)
                beats[trial.number] = get_heartbeat_thread(trial._trial_id, study._storage)
                beats[trial.number].start()
        by_arm: dict = {}
        for trial in trials:
            by_arm.setdefault(trial.user_attrs.get("arm"), []).append(trial)
        for group in by_arm.values():
            run_pass(ctx, group, tell)
    finally:
        errors = []
        for trial in trials:
            if trial.number not in told:
                try:
                    tell(trial, None)
                except Exception as e:  # the others must still be told; the first error is raised below
                    errors.append(e)
        if errors and sys.exc_info()[0] is None:
            raise errors[0]


ASK_LOCK_S = 30.0


@contextmanager
def asking(lock):
    """Hold the host's ask lock while asking for a pass's trials: queued trials come arm by arm, and workers that
    ask at the same moment (every GPU's, as a study starts) would otherwise interleave their asks and each get
    one seed of every arm, packing nothing (seen: two workers, two arms, four passes of one seed). Workers on
    other hosts can still interleave with these: their passes are then smaller, never wrong. Asks take
    milliseconds: a lock held longer than ASK_LOCK_S is a dead worker's (kill -9), and is passed over."""
    held = lock is not None and lock.acquire(timeout=ASK_LOCK_S)
    try:
        yield
    finally:
        if held:
            lock.release()


def _print_trial(study, trial) -> None:
    attrs = trial.user_attrs
    if attrs.get("spare") or attrs.get("duplicate"):
        return
    what = f"{study.study_name} #{trial.number} {attrs.get('arm', '?')} seed {attrs.get('seed', '?')}"
    if trial.state.name == "COMPLETE":
        wall = attrs.get("budget", {}).get("wall_s", 0)
        print(f"{what}: {trial.value:.2f} ({wall:.0f} s training)", flush=True)
    else:
        print(f"{what}: {trial.state.name.lower()} ({attrs.get('fail_reason', 'see the trial')})", flush=True)


class StudyProgress:
    """A tqdm bar over the study's generator steps, refreshed every few seconds from what every worker (local or
    not) leaves behind: finished trials count in full, running ones by the last line of their stats.jsonl."""

    def __init__(self, study, planned: int, g_steps: int, enabled: bool):
        from tqdm import tqdm

        self.study, self.planned, self.g_steps = study, planned, g_steps
        self.bar = tqdm(total=planned * g_steps, unit="G step", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True, smoothing=0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if not self.bar.disable:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        self.bar.close()

    def _loop(self) -> None:
        while not self.stop.wait(2.0):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a progress bar never stops a study (a storage hiccup: try again)
                continue

    def poll(self) -> None:
        from optuna.trial import TrialState

        from gan_core.training.run_folder import STATS, RunFolder

        done, running = set(), []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("spare") or t.user_attrs.get("duplicate"):
                continue
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                    t.state == TrialState.FAIL and t.user_attrs.get("fail_kind")):
                done.add(trial_key(t) or t.number)
            elif t.state == TrialState.RUNNING:
                running.append(t)
        steps, notes = len(done) * self.g_steps, []
        for t in running:
            last = (RunFolder(t.user_attrs["run_dir"]).read_jsonl(STATS) or [{}])[-1] \
                if t.user_attrs.get("run_dir") else {}
            steps += last.get("g_step", 0)
            notes.append(f"{t.user_attrs.get('arm', '?')} seed {t.user_attrs.get('seed', '?')} "
                         f"{last.get('g_step', 0)}/{self.g_steps} ({last.get('g_images_per_s', 0):,.0f} img/s)")
        self.bar.n = min(steps, self.bar.total)
        self.bar.set_description(f"{min(len(done), self.planned)}/{self.planned} trials", refresh=False)
        self.bar.set_postfix_str("; ".join(notes), refresh=False)
        self.bar.refresh()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM: the running trials are marked interrupted (ablations.trial), then the command exits with
    128 + the signal's number, as a shell expects of a process a signal stopped."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


# Code that a Stopped must not interrupt: the storage's database layers. Raised there, the exception can leave
# SQLAlchemy's connection pool half-updated (seen: the heartbeat thread then failed with "Should not reach"), or
# land in one of its weakref callbacks, run by the garbage collector, where Python swallows it with a traceback
# on stderr and the stop is lost (seen: sqlalchemy/event/registry.py _collection_gced).
STORAGE_CODE = ("/sqlalchemy/", "/optuna/storages/", "/alembic/")
STOP_RETRY_S = 0.02


def _stop_once(signum: int, frame) -> None:
    """Raise Stopped at the first stop signal and ignore the next ones: Ctrl-C reaches a worker twice (from the
    terminal and forwarded by the parent), and the second must not cut short marking its trial interrupted."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _stop_outside_storage(signum, frame)


def _stop_outside_storage(signum: int, frame) -> None:
    """Raise Stopped, unless the main thread is inside the storage's code (STORAGE_CODE): then look again a moment
    later (SIGALRM), until it is out."""
    f = frame
    while f is not None:
        if any(part in f.f_code.co_filename for part in STORAGE_CODE):
            signal.signal(signal.SIGALRM, lambda _s, later: _stop_outside_storage(signum, later))
            signal.setitimer(signal.ITIMER_REAL, STOP_RETRY_S)
            return
        f = f.f_back
    raise Stopped(signum)


def run_workers(settings: Settings, ctx, study) -> list[int]:
    """Run the study's workers to the end: in this process for one, spawned processes (one thread each, see
    default_workers) for more. Returns the exit codes of the workers that failed. SIGINT or SIGTERM stops every
    worker, and Stopped is raised only once all have marked their trials and exited: none is left orphaned."""
    each = worker_settings(settings)
    if settings.workers == 1:
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}  # _stop_once changes both
        signal.signal(signal.SIGTERM, _stop_once)  # SIGINT raises KeyboardInterrupt by itself
        try:
            work(each[0], ctx=ctx, study=study)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return []
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    mp = multiprocessing.get_context("spawn")
    asks = mp.Lock()
    procs = [mp.Process(target=_worker_process, args=(s, threads, asks)) for s in each]
    received: list[int] = []

    def forward(signum: int | None = None, _frame=None) -> None:
        if signum is not None:
            received.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        for p in procs:
            p.start()
        if received:  # a signal while they were starting: the workers started after it must stop too
            forward()
        for p in procs:
            p.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise Stopped(received[0])
    return [p.exitcode for p in procs if p.exitcode != 0]


def _worker_process(settings: Settings, threads: int, asks) -> None:
    try:
        for s in STOP_SIGNALS:
            signal.signal(s, _stop_once)
        _die_with_parent()
        work(settings, threads, asks=asks)
    except KeyboardInterrupt:
        pass


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies, even by kill -9 (whose SIGTERM handler never runs), so that
    no worker trains on for a study nobody waits for. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl: nobody will signal us
        raise Stopped(signal.SIGTERM)


def summary_table(study, ctx, floor: dict | None) -> str:
    """Per arm: seeds finished, objective and KID mean +- standard deviation, failures."""
    from optuna.trial import TrialState

    from gan_core.judging.metrics import MetricNames

    kid_key = MetricNames.from_fid(ctx.objective).kid
    rows: dict[str, dict] = {}
    order = [a.label for a in ctx.study.arms]
    trials = [t for t in study.get_trials(deepcopy=False)
              if not (t.user_attrs.get("spare") or t.user_attrs.get("duplicate")) and "arm" in t.user_attrs]
    finished = {trial_key(t) for t in trials if t.state == TrialState.COMPLETE}
    for t in trials:
        row = rows.setdefault(t.user_attrs["arm"], {"fid": [], "kid": [], "failed": []})
        if t.state == TrialState.COMPLETE:
            row["fid"].append(t.user_attrs["metrics"][ctx.objective])
            row["kid"].append(t.user_attrs["metrics"][kid_key])
        elif t.state == TrialState.FAIL and trial_key(t) not in finished:  # one that finished later was a retry
            # no fail_kind: Optuna failed it, its worker's heartbeat having gone stale (killed, or its host lost)
            row["failed"].append(t.user_attrs.get("fail_kind", "worker lost"))
        elif t.state == TrialState.PRUNED:
            row["failed"].append("pruned")

    def spread(xs):
        if not xs:
            return "-"
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.4g} +- {sd:.2g}"

    w = max([len("real-data floor"), *map(len, rows)])  # the widest arm label sets the first column
    header = f"{'arm':<{w}} {'seeds':>5}  {ctx.objective + ' (mean +- sd)':<22} {kid_key + ' (mean +- sd)':<26} failed"
    lines = [header, "-" * len(header)]
    for arm in sorted(rows, key=lambda a: order.index(a) if a in order else len(order)):
        r = rows[arm]
        failed = ", ".join(f"{r['failed'].count(k)} {k}" for k in sorted(set(r["failed"]))) or "-"
        lines.append(f"{arm:<{w}} {len(r['fid']):>5}  {spread(r['fid']):<22} {spread(r['kid']):<26} {failed}")
    if floor:
        lines.append(f"{'real-data floor':<{w}} {'':>5}  {floor[ctx.objective]:<22.4g} {floor[kid_key]:<26.4g}")
    complete = sum(len(r["fid"]) for r in rows.values())
    if rows and complete == 0:
        lines.append("every trial of this study failed: see the reasons above and in the run folders")
    return "\n".join(lines)


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
    size = f"{len(spec.arms)} arms x {settings.seeds} seeds" if spec.is_grid else f"{budget.joint_trials} trials"
    shrink = settings.base.model.shrink
    arch = settings.base.model.arch
    plan = (f"{spec.name}: {size}, base {settings.base_name}"
            + (f" built by --arch {arch} (study {settings.study_name})" if ":" in arch else "")
            + (f" with channels x{shrink:g} (never below 8)" if shrink != 1 else "")
            + f", batch {budget.batch_size or settings.base.schedule.batch_size}"
            + f", budget {budget.name} ({budget.note})"
            + (f"\nbase: {settings.base_why}" if settings.base_why else ""))
    if args.dry_run:
        print(plan)
        return 0
    ctx = make_context(settings)  # loads the data: a missing data set fails here, before any storage write
    study = open_study(settings, study_identity(settings, ctx))  # a study that is not this run's: refused here
    queued = prepare_study(settings, ctx, study)
    print(f"{plan}\n{queued} trial(s) queued now; storage {settings.storage}, study {study.study_name}",
          flush=True)
    if note := share_artifacts(study, settings):
        print(note, flush=True)
    workers = settings.workers
    planned = len(spec.arms) * settings.seeds if spec.is_grid else budget.joint_trials
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
    print(summary_table(study, ctx, study.user_attrs.get("floor")))
    if shrink != 1:
        print(f"note: the budget shrank every model's channels by {shrink:g}, never below 8 channels")
    if not args.no_report:
        print(build_report(settings, args.report))
    return 0


def prepare_study(settings: Settings, ctx, study) -> int:
    """What every run of the command does to its study before the workers start: the study's record (what the
    report shows), and the arm x seed pairs still missing queued. Returns how many were queued."""
    from ablations.budgets import BUDGETS
    from ablations.studies import REGISTRY, catalogue

    spec, budget = REGISTRY[settings.study], BUDGETS[settings.budget]
    if study.user_attrs.get("study") is None:  # opened without its identity (a test's, a worker's open_study)
        for key, value in study_identity(settings, ctx).items():
            study.set_user_attr(key, value)
    description = {**spec.description(), "catalogue": catalogue(), "base_arm": base_arm(spec, settings.base),
                   "base_why": settings.base_why, "shrink": settings.base.model.shrink}
    for key, value in description.items():
        study.set_user_attr(key, value)
    study.set_user_attr("seeds", max(settings.seeds, study.user_attrs.get("seeds", 0)))
    if "floor" not in study.user_attrs:
        study.set_user_attr("floor", ctx.reference.floor(budget.eval_n))
    return enqueue_missing(study, spec, settings.seeds, by_arm=settings.pack > 1) if spec.is_grid else 0


def base_arm(spec, base) -> str | None:
    """The arm that trains the base itself (its changes change nothing): the one that must learn for the study
    to answer anything. None when every arm changes the base (optimizer on dcgan-cpu: no arm has its lr)."""
    from gan_core.training.config import override

    return next((a.label for a in spec.arms if override(base, a.changes) == base), None)


def share_artifacts(study, settings: Settings) -> str | None:
    """Record the study's artifact store (the report's default), or say what a server storage without one lacks:
    workers on other hosts cannot see this host's run folders."""
    from gan_core import storage
    from reports import artifacts

    if settings.artifacts:
        study.set_user_attr(artifacts.STORE, settings.artifacts)
        return None
    if storage.parse(settings.storage).kind == "rdb":
        return ("note: run folders stay on the host that trained them: a page built elsewhere lacks their sample "
                "grids and curves, and a retry elsewhere starts over; give every host --artifacts PATH, a folder "
                "they all see")
    return None


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
