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
    cmd = [sys.executable, "-m", "ablations.run", "--study", "step_ratio", "--seeds", "2", "--budget", "smoke",
           "--storage", postgres_url, "--runs", str(tmp_path / "runs"), "--no-report", "--device", "cpu"]
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
