"""ablations.workers: worker processes under a kill, Ctrl-C and the parent's signals, one per GPU, and a stop
signal held until the worker is out of the storage's code."""

import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from optuna.trial import TrialState

from ablations import trial_queue, workers
from ablations.studies import REGISTRY
from gan_core import devices
from tests.study_helpers import cli, fake_gpus, grid_keys, kill_when, load, rerun, settings_of, states, study_args


def test_a_worker_killed_mid_trial_is_retried_and_nothing_finished_is_rerun(tmp_path, capsys):
    db = tmp_path / "s.db"
    p = subprocess.Popen(cli(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(p, lambda s: s.count("COMPLETE") >= 2 and "RUNNING" in s, db,
              "a running trial after two finished ones")
    done_before = {t.number: t.datetime_complete for t in load(tmp_path, "step_ratio-dcgan-cpu-smoke").trials
                   if t.state == TrialState.COMPLETE}
    assert load(tmp_path, "step_ratio-dcgan-cpu-smoke").get_trials(states=(TrialState.RUNNING,))  # left behind
    out = rerun(cli(tmp_path), capsys)
    study = load(tmp_path, "step_ratio-dcgan-cpu-smoke")
    keys = grid_keys(study)
    assert sorted(keys) == sorted((a.label, 0) for a in REGISTRY["step_ratio"].arms)
    for t in study.trials:
        if t.number in done_before:
            assert t.datetime_complete == done_before[t.number]
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1  # the killed one, failed by its stale heartbeat and retried
    table = out[out.index("arm "):]
    assert "worker lost" not in table and "error" not in table  # its retry finished: no failure to count
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE


def test_ctrl_c_marks_the_trial_and_a_rerun_finishes_the_study(tmp_path, capsys):
    db = tmp_path / "s.db"
    p = subprocess.Popen(cli(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (db.exists() and "RUNNING" in states(db)):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    study = load(tmp_path, "step_ratio-dcgan-cpu-smoke")
    interrupted = study.get_trials(states=(TrialState.FAIL,))
    assert [t.user_attrs["fail_kind"] for t in interrupted] == ["interrupted"]
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the storage is consistent
    rerun(cli(tmp_path), capsys)
    assert sorted(grid_keys(load(tmp_path, "step_ratio-dcgan-cpu-smoke"))) == \
        sorted((a.label, 0) for a in REGISTRY["step_ratio"].arms)


def _workers(pid: int) -> list[int]:
    """The spawned worker processes of ``pid`` (not multiprocessing's resource tracker, also its child)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:  # a zombie still answers kill(0): read its state instead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_to_the_parent_stops_every_worker_and_marks_their_trials(tmp_path, sig):
    db = tmp_path / "s.db"
    p = subprocess.Popen([sys.executable, "-m", "ablations.run", "--study", "step_ratio", "--seeds", "3",
                          "--workers", "2", "--heartbeat", "1", *study_args(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (db.exists() and states(db).count("RUNNING") == 2):
        time.sleep(0.05)
    workers = _workers(p.pid)
    assert len(workers) == 2, "the study never had two workers mid-trial"
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    if sig == signal.SIGTERM:  # the parent waits for its workers, then exits as a SIGTERM-ed process does
        assert p.returncode == 128 + signal.SIGTERM, err
        assert "rerun the same command to resume" in err and "Traceback" not in err
    deadline = time.time() + 30  # after kill -9 of the parent, the kernel SIGTERMs the workers (PR_SET_PDEATHSIG)
    while time.time() < deadline and any(map(_alive, workers)):
        time.sleep(0.1)
    assert not any(map(_alive, workers)), "a worker outlived its parent"
    study = load(tmp_path, "step_ratio-dcgan-cpu-smoke")
    assert not study.get_trials(states=(TrialState.RUNNING,))  # every running trial was marked
    failed = study.get_trials(states=(TrialState.FAIL,))
    # a worker that was mid-trial marks it; one caught between two trials (Optuna had just created the next)
    # leaves that one failed by Optuna itself, with no reason of ours: never RUNNING, and queued again on a rerun
    marked = [t for t in failed if "fail_kind" in t.user_attrs]
    assert 1 <= len(marked) <= 2 and len(failed) <= 3, [(t.number, t.user_attrs) for t in failed]
    assert all(t.user_attrs["fail_kind"] == "interrupted" and "stopped by SIGTERM" in t.user_attrs["fail_reason"]
               for t in marked)


def test_sqlalchemys_cursor_cleanup_after_an_interrupt_prints_no_traceback(capfd):
    import logging

    import ablations.storage  # noqa: F401 - importing it quiets the pool's logger

    try:
        raise RuntimeError("Cannot operate on a closed database.")
    except RuntimeError:  # what the pool logs when Ctrl-C interrupted a query (seen in a Ctrl-C test run)
        logging.getLogger("sqlalchemy.pool.impl.QueuePool").error("Error closing cursor", exc_info=True)
    assert "Traceback" not in capfd.readouterr().err


def test_packing_is_on_for_a_grid_study_on_cuda_and_off_on_the_cpu(tmp_path, monkeypatch):
    settings = partial(settings_of, tmp_path)
    assert settings().pack == 1
    assert settings("--pack-seeds", "--seeds", "3").pack == 3
    fake_gpus(monkeypatch, 1)
    assert settings("--seeds", "4", "--device", "auto").pack == 4
    assert settings("--no-pack-seeds", "--device", "auto").pack == 1
    assert settings(study="joint").pack == 1  # a searched study: every trial its own config


def test_cuda_starts_one_worker_per_visible_gpu_each_with_its_own_device(tmp_path, monkeypatch):
    settings = partial(settings_of, tmp_path, "--device", "auto")
    cpu = settings()
    assert cpu.devices == () and cpu.base.device.device == "auto" and cpu.workers == workers.default_workers(
        torch.device("cpu"), 0)  # the CPU: as before
    fake_gpus(monkeypatch, 2)
    s = settings("--seeds", "3")
    assert (s.workers, s.devices, s.pack) == (2, ("cuda:0", "cuda:1"), 3)
    assert [w.base.device.device for w in workers.worker_settings(s)] == ["cuda:0", "cuda:1"]
    assert settings("--workers", "3").devices == ("cuda:0", "cuda:1", "cuda:0")  # --workers: round-robin
    assert settings("--device", "cuda:1").devices == ("cuda:1",)
    assert settings("--device", "cuda:1,cuda:0", "--workers", "1").devices == ("cuda:1",)
    assert settings("--device", "cuda").devices == ("cuda:0", "cuda:1")
    fake_gpus(monkeypatch, 1)  # CUDA_VISIBLE_DEVICES=1: torch sees one GPU, cuda:0
    assert settings().devices == ("cuda:0",)

    fake_gpus(monkeypatch, 2)  # several workers: each process gets its own settings ...
    started = []

    class Process:
        def __init__(self, target, args):
            started.append(args)
            self.pid, self.exitcode = None, 0

        start = join = lambda self: None

    monkeypatch.setattr(workers.multiprocessing, "get_context",
                        lambda method: SimpleNamespace(Process=Process, Lock=threading.Lock))
    assert workers.run_workers(s, None, None) == []
    assert [(w.base.device.device, w.devices) for w, _threads, _asks in started] == [("cuda:0", ("cuda:0",)),
                                                                                    ("cuda:1", ("cuda:1",))]
    assert started[0][2] is started[1][2]  # one ask lock for the host's workers
    pinned = []  # ... and pins its process to its GPU first thing

    def pin(name):
        pinned.append(name)
        raise KeyboardInterrupt

    monkeypatch.setattr(devices, "pin", pin)
    with pytest.raises(KeyboardInterrupt):
        trial_queue.work(started[1][0])
    assert pinned == ["cuda:1"]


def test_a_stop_signal_waits_until_the_worker_is_out_of_the_storages_code():
    """A Stopped raised inside SQLAlchemy can corrupt its pool or be swallowed by its GC callbacks: it is deferred."""
    namespace = {}
    exec(compile("def query(stop):\n    stop()\n    return 'finished'\n", "/site-packages/sqlalchemy/fake.py", "exec"),
         namespace)
    previous = signal.getsignal(signal.SIGALRM)
    try:
        stop = lambda: workers._stop_outside_storage(  # noqa: E731 (the caller's frame)
            signal.SIGTERM, sys._getframe(1))
        assert namespace["query"](stop) == "finished"  # not raised inside the storage's code
        with pytest.raises(workers.Stopped) as e:  # but as soon as the worker is out of it
            time.sleep(2)
        assert e.value.signum == signal.SIGTERM
        with pytest.raises(workers.Stopped):  # outside the storage: at once
            workers._stop_outside_storage(signal.SIGTERM, sys._getframe())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
