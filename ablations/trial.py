"""One Optuna trial = one RunConfig x seed: train it, evaluate it, record everything in the trial.

A trial's run folder is fixed by its study, arm and seed, so a trial retried after its worker died
resumes from the checkpoint it left instead of starting over (or, when that checkpoint is damaged, trains
again from scratch and says so).
"""

from __future__ import annotations

import gc
import platform
import re
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import optuna
import torch

from ablations.budgets import Budget
from ablations.studies import Study
from gan_core import devices
from gan_core.errors import ConfigError, Diverged, UserError, first_line, os_fault
from gan_core.judging.evaluation import (
    FIRST_JUDGE_ONLY,
    Evaluator,
    Reference,
    evaluate_generator,
    judge_generator,
    save_judged,
)
from gan_core.judging.metrics import MetricNames
from gan_core.judging.protocol import PROTOCOL_KEY
from gan_core.training import packing
from gan_core.training.accounting import channel_lists, flops_at, g_steps_for
from gan_core.training.config import RunConfig, override
from gan_core.training.data import Split, training_images
from gan_core.training.loop import seed_folder, train_seeds
from gan_core.training.run_folder import CHECKPOINT, EVALS, DamagedCheckpoint, FolderInUse, RunFolder
from reports import artifacts, record
from reports.record import Outcome

FOLDER_WAIT_S = 1.0  # between looks at a run folder that another worker is training into


@dataclass
class Context:
    spec: Study  # the study's spec (ablations.studies); an Optuna study is a trial's .study
    budget: Budget
    base: RunConfig
    split: Split
    reference: Reference  # held-out features for the final metrics, prepared once per worker
    intermediate: Evaluator  # smaller-n metrics during training (anytime curves, pruning)
    runs_dir: Path  # runs/<study name>/
    names: MetricNames  # the final metrics' names, at the final sample count (fid1k, kid1k_mean...)
    artifacts: object | None = None  # an Optuna artifact store (reports.artifacts), or None: run folders stay local

    @property
    def objective(self) -> str:
        """The metric minimised, e.g. "fid1k"."""
        return self.names.fid


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


@cache
def provenance() -> dict:
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=here).stdout.strip() or "unknown"
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=5, cwd=here).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "unknown", None
    import torch_fidelity

    return {"git_commit": commit, "git_dirty": dirty, "python": platform.python_version(), "torch": torch.__version__,
            "optuna": optuna.__version__, "torch_fidelity": torch_fidelity.__version__,
            "host": platform.node()}


def trial_config(ctx: Context, trial: optuna.trial.BaseTrial) -> tuple[RunConfig, str]:
    """(config, arm label) of a trial: the base, the study's changes, the budget, the seed.

    Grid trials carry their seed as a queued parameter. A searched trial's seed is not something
    for TPE to tune: it is the number of the trial it started as (its "seed" user attr, which Optuna
    copies into a retry), so that a retry trains the same run and resumes its run folder.
    """
    changes = ctx.spec.space(trial)
    if ctx.spec.is_grid:
        seed, arm = trial.suggest_int("seed", 0, 1_000_000), trial.params["arm"]
    else:
        seed = trial.user_attrs.get("seed", trial.number)
        record.write_trial(trial, {"seed": seed})
        arm = f"trial {seed}"
    cfg = _budgeted(ctx, override(ctx.base, changes), seed)
    if ctx.spec.is_grid:  # trained on to the reference's compute too, evaluated at both points (equal_points)
        points = equal_points(ctx, cfg)
        cfg = override(cfg, {"steps": max(points), "eval_at": list(points)})
    return cfg, arm


def _budgeted(ctx: Context, cfg: RunConfig, seed: int) -> RunConfig:
    b = ctx.budget
    return override(cfg, {
        "steps": b.g_steps, "seed": seed,
        "schedule.batch_size": b.batch_size or cfg.schedule.batch_size,
        "eval_every": b.eval_every, "log_every": max(1, b.g_steps // 20),
        "checkpoint_every": max(1, b.g_steps // 4), "sample_every": 0,
    })


def reference_flops(ctx: Context) -> float:
    """The model FLOPs the study's compute reference spends in the budget's G steps: its base, or the arm its record
    names as the reference of its verdict (leave-one-out: "all fixed"). What "equal compute" gives every arm."""
    label = ctx.spec.special.get("reference")
    ref = _budgeted(ctx, override(ctx.base, ctx.spec.arm(label).changes if label else {}), 0)
    return flops_at(ref, ctx.budget.g_steps, len(training_images(ctx.split, ref.data)))


def equal_points(ctx: Context, cfg: RunConfig) -> tuple[int, int]:
    """(G steps at equal G steps, G steps at equal compute) of a grid arm: the budget's G steps, and the first
    iteration's end at which the arm has spent the reference's FLOPs (before the budget for an arm dearer per G
    step, after it for a cheaper one, which trains on)."""
    n = len(training_images(ctx.split, cfg.data))
    return ctx.budget.g_steps, g_steps_for(cfg, reference_flops(ctx), n)


def objective(ctx: Context, trial: optuna.Trial) -> float:
    """One trial trained alone, what study.optimize runs: a pass of one seed (run_pass)."""
    outcome = []
    run_pass(ctx, [trial], lambda _trial, result: outcome.append(result))
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


@dataclass
class Planned:
    """A trial about to train: its config (with its seed), arm and run folder."""

    trial: optuna.Trial
    cfg: RunConfig
    arm: str
    run_dir: Path
    uploads: artifacts.Uploads | None = None  # its snapshots to the artifact store, when the study has one


def plan(ctx: Context, trial: optuna.Trial) -> Planned:
    """A trial's config and run folder, recorded in its user attrs; TrialPruned for a trial with nothing to do."""
    if ctx.spec.is_grid and "arm" not in trial.user_attrs:  # queued trials carry their arm (see enqueue_missing)
        # Another worker took the last queued trial between our check and our ask: nothing to do.
        record.set_aside(trial, "spare")
        raise optuna.TrialPruned("no queued arm x seed left")
    cfg, arm = trial_config(ctx, trial)
    run_dir = seed_folder(ctx.runs_dir / slug(arm), cfg.seed)
    if ctx.spec.is_grid and _duplicate(trial, arm, cfg.seed):
        record.set_aside(trial, "duplicate")
        raise optuna.TrialPruned(f"{arm} seed {cfg.seed} already ran in another trial")
    record.write_trial(trial, {"arm": arm, "config": cfg.to_dict(), "run_dir": str(run_dir),
                               "provenance": provenance()})
    if ctx.artifacts is None:
        return Planned(trial, cfg, arm, run_dir)
    _resume_from_artifacts(ctx, trial, arm, cfg.seed, run_dir)
    return Planned(trial, cfg, arm, run_dir, artifacts.Uploads(ctx.artifacts, trial, run_dir))


def _resume_from_artifacts(ctx: Context, trial: optuna.Trial, arm: str, seed: int, run_dir: Path) -> None:
    """A trial whose run folder holds no checkpoint on this host (another host trained it until its worker died)
    continues from the furthest snapshot of its arm and seed in the artifact store: its checkpoint and the logs up
    to it. A host with a checkpoint of its own resumes that one, even if another host got further."""
    folder = RunFolder(run_dir)
    if folder.exists(CHECKPOINT):
        return
    snapshot = artifacts.latest(trial.study.get_trials(deepcopy=False), arm, seed)
    if snapshot is None or CHECKPOINT not in snapshot["files"]:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        folder.lock()  # no local worker is training into it while its files arrive
    except FolderInUse:  # one is: training waits for it (_train_when_free)
        return
    try:
        if not folder.exists(CHECKPOINT):
            artifacts.fetch(ctx.artifacts, snapshot, run_dir)
    finally:
        folder.unlock()


def _step0_keys(ctx: Context) -> tuple[str, ...]:
    final = ctx.names
    return final.fid, final.kid, final.precision, final.recall, final.modes


def on_eval_for(ctx: Context, planned: Planned):
    """The trial's evaluation during training: intermediate metrics, the final count at step 0, pruning."""
    trial, cfg = planned.trial, planned.cfg
    kid_key = MetricNames.for_count(ctx.budget.eval_n_intermediate).kid

    def on_eval(point):
        metrics = ctx.intermediate(point)
        # the untrained generator, at the final count too: what "did it learn?" compares with. Where the final count is
        # the anytime count (smoke), the anytime metrics are those already: same first judge, same noise seed
        if point.g_step == 0 and ctx.budget.eval_n != ctx.budget.eval_n_intermediate:
            full = evaluate_generator(point.generator, cfg.model.head, ctx.split, ctx.budget.eval_n,
                                      reference=ctx.reference, judges=FIRST_JUDGE_ONLY)
            metrics.update({k: full[k] for k in _step0_keys(ctx)})
        elif point.g_step in cfg.eval_at and point.g_step < cfg.steps:  # judged like the end (finish): kept in
            full, _ = judge_generator(point.generator, cfg.model.head, ctx.reference, ctx.budget.eval_n,  # evals.jsonl
                                      trained_on=training_images(ctx.split, cfg.data))
            # its numbers: the judges' names are the final judgement's protocol's (an evals.jsonl line holds no others)
            metrics.update({k: v for k, v in full.items() if k != PROTOCOL_KEY and not isinstance(v, str)})
        if not ctx.spec.is_grid:  # only the searched study prunes; a grid arm always runs to the end
            trial.report(metrics[kid_key], point.g_step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at G step {point.g_step} ({kid_key} {metrics[kid_key]:.4f})")
        return metrics

    return on_eval


def finish(ctx: Context, planned: Planned, result) -> float:
    """A trained trial's final metrics (the memorization check against its own training digits included) and its
    neighbours.png, in its run folder, and the metrics in its user attrs; returns the objective."""
    trial, cfg, run_dir = planned.trial, planned.cfg, planned.run_dir
    trained_on = training_images(ctx.split, cfg.data)  # this arm's: a study may vary train_limit
    metrics, images = judge_generator(result.generator, cfg.model.head, ctx.reference, ctx.budget.eval_n,
                                      trained_on=trained_on)
    save_judged(RunFolder(run_dir), metrics, images, trained_on)
    if planned.uploads is not None:  # before the trial is told complete: a complete trial's files are all there
        planned.uploads.snapshot(result.g_steps)
    evals = {r.get("g_step"): r for r in RunFolder(run_dir).read_jsonl(EVALS)}

    def judged_at(g_step: int) -> dict:  # the final judgement's metrics as they were at an earlier eval_at step
        if g_step == result.g_steps:
            return metrics
        if ctx.objective not in evals.get(g_step, {}):  # its folder was trained to there by a version before eval_at
            raise UserError(f"{run_dir} holds no final-count evaluation at G step {g_step:,} (trained by an older "
                            "version); delete the folder to train it again")
        # the numbers as they were there; the protocol and the judges' names (text) are the final judgement's own
        return {k: evals[g_step][k] if k in evals[g_step] and not isinstance(v, str | dict) else v
                for k, v in metrics.items()}

    at_budget = judged_at(ctx.budget.g_steps)
    judged = {"metrics": at_budget}
    if ctx.spec.is_grid:
        flops_steps = equal_points(ctx, cfg)[1]
        judged["metrics_equal_flops"] = judged_at(flops_steps)
        judged["equal_flops"] = {
            "g_steps": flops_steps, "flops": flops_at(cfg, flops_steps, len(trained_on)),
            "reference_flops": reference_flops(ctx), "reference": ctx.spec.special.get("reference") or "the base"}
    step0 = evals.get(0, {})
    device = next(result.generator.parameters()).device
    record.write_trial(trial, {  # the trial's result, in one write
        **judged, "metrics_step0": {k: step0[k] for k in _step0_keys(ctx) if k in step0},
        "channels": channel_lists(cfg),
        "spent": {  # what the trial spent, in every unit (the study's "budget" is its spec)
            "g_steps": result.g_steps, "d_steps": result.d_steps, "real_images": result.real_images,
            "wall_s": round(result.wall_s, 3), "flops": result.flops,
            "g_images_per_s": result.g_steps * cfg.schedule.batch_size / max(result.wall_s, 1e-9),
            "device": str(device), "device_name": devices.name(device),
            "seeds_in_pass": result.seeds_in_pass,  # trained together: wall_s and images/s are the whole pass's
        }})
    return at_budget[ctx.objective]


def run_pass(ctx: Context, trials: list[optuna.Trial], on_outcome: Callable[[optuna.Trial, object], None]) -> None:
    """Trials of one arm, each its own seed, trained in one pass (gan_core.training.loop.train_seeds) where the
    arm's optimizers allow it, else one by one. Each trial's outcome goes to ``on_outcome`` as soon as it is known: its
    objective value, or the exception that ended it (optuna.TrialPruned for a trial with nothing to do), its reason
    in its user attrs. An interrupt marks only the trials without an outcome yet."""
    pending = list(trials)

    def done(trial: optuna.Trial, outcome) -> None:
        pending.remove(trial)
        on_outcome(trial, outcome)

    with _interrupts_recorded(pending):
        planned = []
        for trial in trials:
            try:
                planned.append(plan(ctx, trial))
            except Exception as e:  # TrialPruned: nothing to do; anything else: the storage failed this trial
                _record(trial, e)
                done(trial, e)
        try:
            if planned:
                packing.check_packable(planned[0].cfg)
            groups = [planned]
        except ConfigError:
            groups = [[p] for p in planned]
        for group in filter(None, groups):
            _train_group(ctx, group, done)


def _train_group(ctx: Context, group: list[Planned], done: Callable[[optuna.Trial, object], None]) -> None:
    on_eval = {p.cfg.seed: on_eval_for(ctx, p) for p in group}
    uploads = {p.cfg.seed: p.uploads for p in group if p.uploads is not None}
    failed = None
    try:
        results = _train_when_free(group, lambda: train_seeds(
            group[0].cfg, [p.cfg.seed for p in group], [p.run_dir for p in group],
            on_eval=lambda point: on_eval[point.cfg.seed](point),
            on_checkpoint=lambda cfg, g_step: uploads[cfg.seed].snapshot(g_step) if uploads else None,
            resume=True, split=ctx.split))
    except Exception as e:
        failed = e
    if failed is not None and len(group) > 1 and isinstance(failed, (torch.OutOfMemoryError, UserError)):
        # A pack the device cannot hold (or its memory estimate refused): its members one by one, each from the
        # checkpoint the pass left (a member's checkpoint is a solo run's). The error's traceback still holds the
        # pass's networks and optimizer state: let go of them first.
        del failed
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for p in group:
            _train_group(ctx, [p], done)
        return
    if failed is not None:  # the whole pass failed: each of its trials, with the same reason
        for p in group:
            _record(p.trial, failed)
            done(p.trial, failed)
        return
    for p, result in zip(group, results, strict=True):
        try:
            with _failures_recorded(p.trial):
                if isinstance(result, Diverged):
                    raise result
                value = finish(ctx, p, result)
        except Exception as e:
            done(p.trial, e)
            continue
        done(p.trial, value)


@contextmanager
def _interrupts_recorded(trials: list[optuna.Trial]):
    try:
        yield
    except KeyboardInterrupt as e:  # Ctrl-C, or ablations.workers' Stopped (SIGINT or SIGTERM)
        name = signal.Signals(getattr(e, "signum", signal.SIGINT)).name
        for trial in trials:
            record.fail(trial, Outcome.INTERRUPTED, f"stopped by {name}; rerun the command to resume it")
        raise


@contextmanager
def _failures_recorded(trial: optuna.Trial):
    try:
        yield
    except optuna.TrialPruned:
        raise
    except Exception as e:
        _record(trial, e)
        raise


def _record(trial: optuna.Trial, e: Exception) -> None:
    """A failed trial's kind and reason in its user attrs (the report and the table show them)."""
    if isinstance(e, Diverged):
        record.fail(trial, Outcome.DIVERGED, str(e))
    elif isinstance(e, torch.OutOfMemoryError):
        record.fail(trial, Outcome.OUT_OF_MEMORY, first_line(e))
    elif not isinstance(e, optuna.TrialPruned):  # a bug or a fault: recorded with the trial, the study goes on
        record.fail(trial, Outcome.ERROR, os_fault(e) or f"{type(e).__name__}: {e}")


def _train_when_free(group: list[Planned], start):
    """start() (a train_seeds call that resumes the group's run folders), until it runs.

    On SQLite two workers can pop the same queued trial (the row is not locked), and both then train the same arm x
    seed into the same folder: the second finds the folder locked. It waits for the first to finish and resumes its
    final checkpoint (nothing left to train), so both report the same result (the second report is refused by
    Optuna, which ``work`` expects), instead of failing a trial that finished.

    A checkpoint that cannot be read (cut short, or failing its checksum) is set aside and its trial trains again
    from scratch, its record saying why (user attr "restarted"): a damaged file costs a retrain, not an arm x seed
    missing from every rerun."""
    restarts = 0
    while True:
        try:
            return start()
        except FolderInUse:
            time.sleep(FOLDER_WAIT_S)
            continue
        except DamagedCheckpoint as e:
            damaged = e  # handled below, outside this block: a torch error met there must not chain to it
        owner = next((p for p in group if Path(p.run_dir) == damaged.path.parent), None)
        restarts += 1
        if owner is None or restarts > 2 * len(group):  # not ours, or damaged again and again: a fault
            raise damaged
        try:
            reason = RunFolder(owner.run_dir).discard_damaged_checkpoint()
        except FolderInUse:  # another worker is training it: its checkpoint will be whole
            time.sleep(FOLDER_WAIT_S)
            continue
        if reason is not None:
            record.write_trial(owner.trial, {"restarted": reason})


def _duplicate(trial: optuna.Trial, arm: str, seed: int) -> bool:
    """Another trial of the same arm and seed finished, or started before this one (workers raced to
    queue the same pair). The earlier trial runs; only the later one steps aside."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    for other in map(record.TrialRecord.of, trial.study.get_trials(deepcopy=False, states=states)):
        earlier = other.outcome is Outcome.COMPLETE or other.number < trial.number
        if other.number != trial.number and earlier and other.key == (arm, seed) \
                and other.outcome is not Outcome.BOOKKEEPING:
            return True
    return False
