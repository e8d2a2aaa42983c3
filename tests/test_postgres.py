"""Two workers on one study in a real PostgreSQL server on loopback (Debian's postgresql package)."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ablations.studies import REGISTRY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        pytest.skip("no PostgreSQL server here (Debian package postgresql; .ci/run installs it)")
    bindir = Path(initdb[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    as_postgres = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres")
    run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "start",
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_one_study_through_postgresql(tmp_path, postgres_url):
    # two commands (two hosts), each its one worker in its own process: spawned workers are tested on sqlite and
    # journal storages (test_trial_queue), and here they would only add their start-up
    cmd = [sys.executable, "-m", "ablations.run", "--study", "step_ratio", "--seeds", "2", "--budget", "smoke",
           "--storage", postgres_url, "--runs", str(tmp_path / "runs"), "--no-report", "--device", "cpu",
           "--workers", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers on two cores
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=400)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name="step_ratio-dcgan-cpu-smoke", storage=postgres_url)
    done = [(t.user_attrs["arm"], t.params["seed"]) for t in study.get_trials(states=(TrialState.COMPLETE,))
            if not t.user_attrs.get("duplicate")]
    assert sorted(done) == sorted((a.label, s) for a in REGISTRY["step_ratio"].arms for s in range(2))


def test_the_workers_of_a_2_gpu_host_take_whole_arms_on_their_own_gpu_and_another_host_builds_the_page(
        tmp_path, postgres_url, monkeypatch):
    """A faked 2-GPU host's two workers (threads here, sharing the ask lock as run_workers' processes do) share a
    study through PostgreSQL and an artifact store: each trains whole arms, its seeds packed, on its own GPU, and
    a page built from another, empty runs folder has every sample grid and curve."""
    import threading

    import torch

    from ablations import run, trial_queue
    from ablations import trial as trial_module
    from ablations.settings import make_context, open_study, share_artifacts, write_record
    from ablations.workers import worker_settings
    from gan_core import devices
    from reports import load, sections
    from tests.study_helpers import fake_gpus, pair_study

    monkeypatch.setitem(REGISTRY, "pair", pair_study())
    fake_gpus(monkeypatch, 2)

    settings = run.settings_from_args(run.parser().parse_args([
        "--study", "pair", "--seeds", "2", "--budget", "smoke", "--storage", postgres_url, "--study-name", "gpus",
        "--runs", str(tmp_path / "runs"), "--artifacts", str(tmp_path / "store"), "--heartbeat", "1", "--no-report"]))
    assert (settings.workers, settings.pack) == (2, 2)  # one worker per GPU, seeds packed
    fake_gpus(monkeypatch, 0)  # training: torch's own checks (the optimizers' graph capture) see the CPU it is
    real_resolve, pinned = devices.resolve, []
    monkeypatch.setattr(devices, "resolve",  # the GPUs' work, done by this CPU
                        lambda name: torch.device("cpu") if str(name).startswith("cuda") else real_resolve(name))
    monkeypatch.setattr(devices, "pin", pinned.append)
    both_started, real_train = threading.Barrier(2, timeout=120), trial_module.train_seeds

    def train_seeds(*args, **kwargs):  # each worker waits for the other to have taken its arm
        both_started.wait()
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trial_module, "train_seeds", train_seeds)
    workers = worker_settings(settings)
    contexts = [make_context(w) for w in workers]
    study = open_study(settings)
    write_record(settings, contexts[0], study)
    assert trial_queue.enqueue_missing(study, REGISTRY[settings.study], settings.seeds, by_arm=settings.pack > 1) == 4
    share_artifacts(study, settings)
    errors, asks = [], threading.Lock()

    def work(k):
        try:
            trial_queue.work(workers[k], threads=1, ctx=contexts[k], asks=asks)  # one thread each, as spawned workers
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=400)
    assert not errors and sorted(pinned) == ["cuda:0", "cuda:1"]
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    on = {}
    for t in trials:  # whole arms per worker, their seeds in one pass, each trial's config naming its GPU
        assert t.user_attrs["spent"]["seeds_in_pass"] == [0, 1]
        on.setdefault(t.user_attrs["arm"], set()).add(t.user_attrs["config"]["device"]["device"])
    assert sorted(map(sorted, on.values())) == [["cuda:0"], ["cuda:1"]]

    (data,) = [s for s in load.load_studies(postgres_url, tmp_path / "elsewhere") if s.name == "gpus"]
    assert data.complete["samples"].notna().all() and len(data.complete) == 4
    assert set(data.curves["trial"]) == set(data.complete["number"])
    assert all("image" in grid for grid in sections.sample_grids(data, data.arms))
