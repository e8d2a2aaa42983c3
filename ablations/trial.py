"""One Optuna trial = one RunConfig x seed: train it, evaluate it, record everything in the trial.

A trial's run folder is fixed by its study, arm and seed, so a trial retried after its worker died
resumes from the checkpoint it left instead of starting over.
"""

from __future__ import annotations

import platform
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import optuna
import torch

from ablations.budgets import Budget
from ablations.studies import Study
from gan_core import devices
from gan_core.errors import Diverged, first_line
from gan_core.judging.evaluation import Evaluator, Reference, evaluate_generator
from gan_core.judging.metrics import MetricNames
from gan_core.training.config import RunConfig, override
from gan_core.training.data import Split
from gan_core.training.loop import channel_lists, train
from gan_core.training.run_folder import EVALS, METRICS, FolderInUse, RunFolder

FOLDER_WAIT_S = 1.0  # between looks at a run folder that another worker is training into

FINAL_FAILURES = ("diverged", "out of memory")  # results, not accidents: a rerun does not repeat them


@dataclass
class Context:
    study: Study
    budget: Budget
    base: RunConfig
    split: Split
    reference: Reference  # held-out features for the final metrics, prepared once per worker
    intermediate: Evaluator  # smaller-n metrics during training (anytime curves, pruning)
    runs_dir: Path  # runs/<study name>/
    objective: str  # the metric minimised, e.g. "fid1k"


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
    for TPE to tune: it is the number of the trial it started as (kept in a user attr, which Optuna
    copies into a retry), so that a retry trains the same run and resumes its run folder.
    """
    changes = ctx.study.space(trial)
    if ctx.study.is_grid:
        seed, arm = trial.suggest_int("seed", 0, 1_000_000), trial.params["arm"]
    else:
        seed = trial.user_attrs.get("origin", trial.number)
        trial.set_user_attr("origin", seed)
        trial.set_user_attr("seed", seed)
        arm = f"trial {seed}"
    b = ctx.budget
    cfg = override(ctx.base, changes)
    cfg = override(cfg, {
        "steps": b.g_steps, "seed": seed,
        "schedule.batch_size": b.batch_size or cfg.schedule.batch_size,
        "eval_every": b.eval_every, "log_every": max(1, b.g_steps // 20),
        "checkpoint_every": max(1, b.g_steps // 4), "sample_every": 0,
    })
    return cfg, arm


def objective(ctx: Context, trial: optuna.Trial) -> float:
    try:
        return _objective(ctx, trial)
    except KeyboardInterrupt as e:  # Ctrl-C, or ablations.run's Stopped (SIGINT or SIGTERM)
        name = signal.Signals(getattr(e, "signum", signal.SIGINT)).name
        _fail(trial, "interrupted", f"stopped by {name}; rerun the command to resume it")
        raise


def _objective(ctx: Context, trial: optuna.Trial) -> float:
    if ctx.study.is_grid and "arm" not in trial.user_attrs:  # queued trials carry their arm (see enqueue_missing)
        # Another worker took the last queued trial between our check and our ask: nothing to do.
        trial.set_user_attr("spare", True)
        raise optuna.TrialPruned("no queued arm x seed left")
    cfg, arm = trial_config(ctx, trial)
    run_dir = ctx.runs_dir / slug(arm) / f"seed{cfg.seed}"
    if ctx.study.is_grid and _duplicate(trial, arm, cfg.seed):
        trial.set_user_attr("duplicate", True)
        raise optuna.TrialPruned(f"{arm} seed {cfg.seed} already ran in another trial")
    trial.set_user_attr("arm", arm)
    trial.set_user_attr("config", cfg.to_dict())
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("provenance", provenance())
    kid_key = MetricNames.for_count(ctx.budget.eval_n_intermediate).kid
    final = MetricNames.from_fid(ctx.objective)
    step0_keys = (final.fid, final.kid, final.precision, final.recall, final.modes)

    def on_eval(point):
        metrics = ctx.intermediate(point)
        if point.g_step == 0:  # the untrained generator, at the final count too: what "did it learn?" compares with
            full = evaluate_generator(point.generator, cfg.model.head, ctx.split, ctx.budget.eval_n,
                                      reference=ctx.reference)
            metrics.update({k: full[k] for k in step0_keys})
        if not ctx.study.is_grid:  # only the searched study prunes; a grid arm always runs to the end
            trial.report(metrics[kid_key], point.g_step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at G step {point.g_step} ({kid_key} {metrics[kid_key]:.4f})")
        return metrics

    try:
        result = _train_when_free(cfg, run_dir, on_eval, ctx.split)
        metrics = evaluate_generator(result.generator, cfg.model.head, ctx.split, ctx.budget.eval_n,
                                     reference=ctx.reference)
    except Diverged as e:
        _fail(trial, "diverged", str(e))
        raise
    except torch.OutOfMemoryError as e:
        _fail(trial, "out of memory", first_line(e))
        raise
    except optuna.TrialPruned:
        raise
    except Exception as e:  # a bug or a fault: recorded with the trial, the study goes on
        _fail(trial, "error", f"{type(e).__name__}: {e}")
        raise
    RunFolder(run_dir).write_json(METRICS, metrics)
    trial.set_user_attr("metrics", metrics)
    step0 = next((r for r in RunFolder(run_dir).read_jsonl(EVALS) if r.get("g_step") == 0), {})
    trial.set_user_attr("metrics_step0", {k: step0[k] for k in step0_keys if k in step0})
    trial.set_user_attr("channels", channel_lists(cfg))
    device = next(result.generator.parameters()).device
    trial.set_user_attr("budget", {
        "g_steps": result.g_steps, "d_steps": result.d_steps, "real_images": result.real_images,
        "wall_s": round(result.wall_s, 3), "flops": result.flops,
        "g_images_per_s": result.g_steps * cfg.schedule.batch_size / max(result.wall_s, 1e-9),
        "device": str(device),
        "device_name": devices.name(device),
    })
    return metrics[ctx.objective]


def _train_when_free(cfg: RunConfig, run_dir: Path, on_eval, split: Split):
    """train(), resuming. On SQLite two workers can pop the same queued trial (the row is not locked), and both
    then train the same arm x seed into the same folder: the second finds the folder locked. It waits for the
    first to finish and resumes its final checkpoint (nothing left to train), so both report the same result
    (the second report is refused by Optuna, which ``work`` expects), instead of failing a trial that finished."""
    while True:
        try:
            return train(cfg, run_dir, on_eval=on_eval, resume=True, split=split)
        except FolderInUse:
            time.sleep(FOLDER_WAIT_S)


def _fail(trial: optuna.Trial, kind: str, reason: str) -> None:
    trial.set_user_attr("fail_kind", kind)
    trial.set_user_attr("fail_reason", reason)


def _duplicate(trial: optuna.Trial, arm: str, seed: int) -> bool:
    """Another trial of the same arm and seed finished, or started before this one (workers raced to
    queue the same pair). The earlier trial runs; only the later one steps aside."""
    for other in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.RUNNING)):
        earlier = other.state == optuna.trial.TrialState.COMPLETE or other.number < trial.number
        if other.number != trial.number and earlier and other.user_attrs.get("arm") == arm \
                and other.user_attrs.get("seed") == seed and not other.user_attrs.get("duplicate"):
            return True
    return False
