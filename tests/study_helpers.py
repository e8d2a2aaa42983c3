"""What the study tests share: the smoke-budget command lines, reading a study back, killing a study
process at the right moment, fake GPUs, a two-arm study."""

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ablations import run
from ablations.studies import REGISTRY


def study_args(tmp_path, *extra):
    return ["--budget", "smoke", "--storage", f"sqlite:///{tmp_path}/s.db", "--runs", str(tmp_path / "runs"),
            "--no-report", "--device", "cpu", *extra]


def in_process(tmp_path, *extra):
    """study_args with one worker in this process: spawning the default per-core workers costs seconds a test."""
    return [*study_args(tmp_path, *extra), "--workers", "1"]


def load(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/s.db")


def grid_keys(study, state=TrialState.COMPLETE):
    return [(t.user_attrs["arm"], t.params["seed"]) for t in study.get_trials(states=(state,))
            if not t.user_attrs.get("spare") and not t.user_attrs.get("duplicate")]


def cli(tmp_path, *extra, study="step_ratio", seeds="1"):
    """The CLI with its one worker in the process that the test signals (several workers: test_two_workers)."""
    return [sys.executable, "-m", "ablations.run", "--study", study, "--seeds", seeds, "--heartbeat", "1",
            *in_process(tmp_path), *extra]


def states(db):
    """Trial states, with RUNNING only for trials whose heartbeat is recorded (really mid-trial)."""
    try:
        with sqlite3.connect(db) as con:
            beating = {r[0] for r in con.execute("select trial_id from trial_heartbeats")}
            return [s if s != "RUNNING" or i in beating else "STARTING"
                    for i, s in con.execute("select trial_id, state from trials")]
    except sqlite3.OperationalError:  # the study is still creating its tables
        return []


def rerun(args: list[str], capsys) -> str:
    """The killed or stopped command once more, in this process (a subprocess costs seconds of start-up): stdout."""
    capsys.readouterr()
    assert run.main(args[3:]) == 0  # args: python -m ablations.run ...
    return capsys.readouterr().out


def kill_when(p: subprocess.Popen, ready, db: Path, what: str) -> None:
    """kill -9 the study process as soon as ``ready(states(db))``; fail the test if that never comes."""
    deadline = time.time() + 240
    while time.time() < deadline:
        if db.exists() and ready(states(db)):
            p.send_signal(signal.SIGKILL)
            p.wait()
            return
        time.sleep(0.02)
    p.kill()
    pytest.fail(f"the study never had {what}")


def settings_of(tmp_path, *extra, study="step_ratio"):
    return run.settings_from_args(run.parser().parse_args(["--study", study, *study_args(tmp_path), *extra]))


def fake_gpus(monkeypatch, count: int) -> None:
    """This machine has no GPU: torch says it has ``count`` (what it says under CUDA_VISIBLE_DEVICES)."""

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def pair_study():
    """A 2-arm grid (the width study's two cheapest arms): what a test of several hosts needs, at half the cost. Its
    compute reference is its base, so that no arm trains on past the budget: each trains its 4 G steps."""
    import dataclasses

    width = REGISTRY["width"]
    return dataclasses.replace(width, name="pair", arms=width.arms[:2], blog_arm=width.arms[0].label, special={})
