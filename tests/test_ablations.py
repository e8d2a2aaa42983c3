import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ablations import run, trial_queue, workers
from ablations.studies import REGISTRY
from gan_core import devices
from gan_core.training import accounting, data
from gan_core.training.accounting import channel_lists
from gan_core.training.config import RunConfig, override
from gan_core.training.run_folder import RunFolder


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


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_study_runs_end_to_end_at_the_smoke_budget(tmp_path, capsys, name):
    assert run.main(["--study", name, *in_process(tmp_path)]) == 0
    out = capsys.readouterr().out
    spec = REGISTRY[name]
    base = spec.base("smoke").preset
    study = load(tmp_path, f"{name}-{base}-smoke")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if spec.is_grid:
        tuning = [(c.label, s) for f in spec.tuning.families for c in f.candidates for s in spec.tuning.seeds] \
            if spec.tuning else []
        assert sorted(grid_keys(study)) == sorted([(a.label, 0) for a in spec.arms] + tuning)
        for arm in spec.arms:
            assert arm.label in out  # the terminal table has a row per arm
    else:
        assert len(study.trials) == 3
    assert "real-data floor" in out and f"shrank every model's channels by {spec.base('smoke').shrink:g}" in out
    t = complete[0]
    assert {"config", "metrics", "spent", "provenance", "run_dir", "metrics_step0", "channels"} <= set(t.user_attrs)
    # the untrained generator at the final sample count, all five of its metrics (at smoke they are the anytime ones)
    assert set(t.user_attrs["metrics_step0"]) == {"fid100", "kid100_mean", "precision100", "recall100", "modes100"}
    assert t.user_attrs["metrics_step0"]["fid100"] > 0
    cfg = RunConfig.from_dict(t.user_attrs["config"])  # the smoke budget's shrinking stops at 8 channels:
    asked = channel_lists(override(cfg, {"model.shrink": 1.0}))
    for net in ("G", "D"):
        assert all(min(a, 8) <= s for a, s in zip(asked[net], t.user_attrs["channels"][net], strict=True))
    assert t.user_attrs["spent"]["flops"] > 0 and t.value == t.user_attrs["metrics"]["fid100"]
    if spec.is_grid:  # trained to the budget's 4 G steps and to the reference's compute, whichever is later
        at_flops = t.user_attrs["equal_flops"]["g_steps"]
        assert t.user_attrs["spent"]["g_steps"] == max(4, at_flops)
        assert t.user_attrs["metrics_equal_flops"]["fid100"] > 0
    else:
        assert t.user_attrs["spent"]["g_steps"] == 4
    assert (tmp_path / "runs" / f"{name}-{base}-smoke").is_dir()
    run_dir = t.user_attrs["run_dir"]
    for f in ("config.json", "stats.jsonl", "samples.png", "checkpoint.pt", "metrics.json", "evals.jsonl",
              "neighbours.png"):
        assert os.path.exists(os.path.join(run_dir, f)), f
    for trial in complete:  # the memorization check, against each arm's own training digits (train_limit varies)
        cfg = RunConfig.from_dict(trial.user_attrs["config"])
        assert trial.user_attrs["metrics"]["n_train"] == (cfg.data.train_limit or 4000)
        assert 0 <= trial.user_attrs["metrics"]["copy100"] <= 1 and "copy100" not in trial.user_attrs["metrics_step0"]
    # the final evaluation under both judges; the evaluations during training (anytime curves) the first judge's only
    assert t.user_attrs["metrics"]["fid100_lenet"] > 0 and t.user_attrs["metrics"]["extractor_lenet"].startswith(
        "mnist-lenet-")
    evals = [json.loads(line) for line in open(os.path.join(run_dir, "evals.jsonl"))]
    judged_on_the_way = RunConfig.from_dict(t.user_attrs["config"]).eval_at  # final-count judgements (equal_points)
    assert evals and not [k for r in evals if r["g_step"] not in judged_on_the_way for k in r if k.endswith("_lenet")]
    if name == "step_ratio":
        check_step_ratio_changes_only_the_schedule(complete)
    if spec.tuning:
        check_tuning_came_first_and_its_winners_were_judged(study, spec)
        before = {t.number: (t.state, t.datetime_complete) for t in study.trials}
        assert run.main(["--study", name, *in_process(tmp_path)]) == 0
        assert "0 trial(s) queued now" in capsys.readouterr().out
        rerun = load(tmp_path, f"{name}-{base}-smoke")
        assert {t.number: (t.state, t.datetime_complete) for t in rerun.trials} == before  # a rerun changes nothing
        assert rerun.user_attrs["tuned"] == study.user_attrs["tuned"]


def check_tuning_came_first_and_its_winners_were_judged(study, spec):
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    tuning = [t for t in trials if t.user_attrs.get("phase") == "tuning"]
    verdict = [t for t in trials if t not in tuning]
    assert len(tuning) == sum(len(f.candidates) for f in spec.tuning.families) * len(spec.tuning.seeds)
    assert {t.params["seed"] for t in tuning} == set(spec.tuning.seeds) and {t.params["seed"] for t in verdict} == {0}
    assert max(t.number for t in tuning) < min(t.number for t in verdict)  # queued only once the tuning was over
    assert max(t.datetime_complete for t in tuning) <= min(t.datetime_start for t in verdict)
    fid = {t.user_attrs["arm"]: t.value for t in tuning}
    by_arm = {t.user_attrs["arm"]: t for t in verdict}
    assert sorted(by_arm) == sorted(a.label for a in spec.arms)
    for family in spec.tuning.families:
        best = min(family.candidates, key=lambda c: fid[c.label])  # one tuning seed: its FID decides
        assert study.user_attrs["tuned"][family.label] == best.label
        judged = by_arm[family.label]
        assert judged.user_attrs["candidate"] == best.label
        cfg = judged.user_attrs["config"]
        assert (cfg["g_optim"]["lr"], cfg["d_optim"]["lr"]) == (best.changes["g_optim.lr"], best.changes["d_optim.lr"])
        assert cfg["g_optim"]["name"] == best.changes["g_optim.name"]


def test_a_study_run_with_other_arms_is_refused_in_one_line(tmp_path, capsys):
    # the optimizer study as it was before its tuning phase: every new trial's arm choices would differ from its own
    old = optuna.create_study(study_name="optimizer-dcgan-cpu-smoke", storage=f"sqlite:///{tmp_path}/s.db")
    old.set_user_attr("study", "optimizer")
    old.set_user_attr("arms", ["Adadelta lr=1e-3", "Adadelta lr=1.0", "Adam 2e-4"])
    assert run.main(["--study", "optimizer", *in_process(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds another experiment: its arms is ['Adadelta lr=1e-3', 'Adadelta lr=1.0'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not load(tmp_path, "optimizer-dcgan-cpu-smoke").trials  # nothing queued


def tuning_study(fids: dict, states: dict | None = None):
    """An in-memory optimizer study holding one tuning trial per candidate: its FID, or a state from ``states``."""
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import create_trial

    spec = REGISTRY["optimizer"]
    study = optuna.create_study()
    labels = [a.label for a in spec.trained_arms]
    for f in spec.tuning.families:
        for c in f.candidates:
            state = (states or {}).get(c.label, TrialState.COMPLETE)
            attrs = {"arm": c.label, "seed": spec.tuning.seeds[0], "phase": "tuning", "family": f.label}
            if state == TrialState.FAIL:
                attrs["fail_kind"] = "diverged"
            study.add_trial(create_trial(
                state=state, value=fids[c.label] if state == TrialState.COMPLETE else None,
                params={"arm": c.label, "seed": spec.tuning.seeds[0]}, user_attrs=attrs,
                distributions={"arm": CategoricalDistribution(labels), "seed": IntDistribution(0, 1_000_000)}))
    return spec, study


def test_each_family_wins_with_its_own_lowest_tuning_fid_and_a_diverged_one_counts_as_worst():
    spec = REGISTRY["optimizer"]
    # each family's best is at another position of its sweep, and every other family has a lower FID than it
    # somewhere: a choice of the highest FID, of the wrong family's candidate or of a fixed position fails here
    fids, want = {}, {}
    for i, f in enumerate(spec.tuning.families):
        best = i % len(f.candidates)
        for j, c in enumerate(f.candidates):
            fids[c.label] = 10.0 * (i + 1) + (0.0 if j == best else 5.0 + j)
        want[f.label] = f.candidates[best].label
    spec, study = tuning_study(fids)
    assert trial_queue.tuning_choice(study, spec) == want
    # a diverged candidate, had it finished with this FID, would have been best: it counts as worst instead
    adam = spec.tuning.family("Adam tuned")
    fids[adam.candidates[2].label] = 1.0
    spec, study = tuning_study(fids, {adam.candidates[2].label: TrialState.FAIL})
    assert trial_queue.tuning_choice(study, spec)["Adam tuned"] == want["Adam tuned"]
    # a family whose every candidate diverged keeps its usual value (the middle one)
    failed = {c.label: TrialState.FAIL for c in adam.candidates}
    spec, study = tuning_study(fids, failed)
    assert trial_queue.tuning_choice(study, spec)["Adam tuned"] == adam.candidates[1].label == "Adam lr=2e-4"


def test_no_choice_and_no_verdict_trial_while_a_tuning_trial_is_unfinished():
    spec = REGISTRY["optimizer"]
    fids = {c.label: 50.0 for f in spec.tuning.families for c in f.candidates}
    spec, study = tuning_study(fids, {"RMSprop lr=2e-4": TrialState.RUNNING})
    assert trial_queue.tuning_choice(study, spec) is None
    assert trial_queue.queue_next_phase(study, spec, 5) == 0 and "tuned" not in study.user_attrs
    spec, study = tuning_study(fids)
    assert trial_queue.queue_next_phase(study, spec, 5) == len(spec.arms) * 5
    assert trial_queue.queue_next_phase(study, spec, 5) == 0  # once queued, never again
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert {t.user_attrs["candidate"] for t in waiting if "candidate" in t.user_attrs} == {
        f.candidates[1].label for f in spec.tuning.families}  # every FID equal: a tie goes to the usual value


def check_step_ratio_changes_only_the_schedule(trials):
    configs = {t.user_attrs["arm"]: t.user_attrs["config"] for t in trials}
    assert configs["1:5"]["schedule"]["d_steps"] == 1 and configs["1:5"]["schedule"]["g_steps"] == 5
    assert configs["5:1"]["schedule"]["d_steps"] == 5 and configs["5:1"]["schedule"]["g_steps"] == 1
    budgets = {t.user_attrs["arm"]: t.user_attrs["spent"] for t in trials}
    assert budgets["5:1"]["d_steps"] == 20  # 4 G steps (its equal-compute point came on the way, at 2)
    assert budgets["1:5"]["g_steps"] == 7 and budgets["1:5"]["d_steps"] == 2  # on to the 1:1 base's compute
    for cfg in configs.values():  # everything else is the study's base (the DCGAN member), shrunk by the budget
        assert cfg["model"] == configs["1:5"]["model"] and cfg["g_optim"] == configs["1:5"]["g_optim"]
        assert cfg["model"]["width"] == 0.125 and cfg["model"]["shrink"] == 1 / 8
        assert cfg["model"]["arch"] == "dcgan" and cfg["data"]["train_limit"] is None


def test_rerun_resumes_and_adds_seeds_without_rerunning(tmp_path):
    assert run.main(["--study", "width", *in_process(tmp_path)]) == 0
    before = {t.number: t.datetime_complete for t in load(tmp_path, "width-dcgan-cpu-smoke").trials}
    assert run.main(["--study", "width", "--seeds", "2", *in_process(tmp_path)]) == 0
    study = load(tmp_path, "width-dcgan-cpu-smoke")
    keys = grid_keys(study)
    assert len(keys) == len(set(keys)) == 8  # 4 arms x 2 seeds, each once
    for t in study.trials:
        if t.number in before:
            assert t.datetime_complete == before[t.number]  # finished trials were not re-run


def test_list_shows_studies_arms_and_budgets(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, spec in REGISTRY.items():
        assert name in out
        for arm in spec.arms:
            assert arm.label in out
    assert "quick" in out and "G steps" in out


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


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_two_workers_complete_a_grid_without_duplicates(tmp_path, storage):
    url = f"sqlite:///{tmp_path}/w.db" if storage == "sqlite" else f"journal:{tmp_path}/w.log"
    p = subprocess.run([sys.executable, "-m", "ablations.run", "--study", "width", "--seeds", "1",
                        "--workers", "2", *study_args(tmp_path), "--storage", url],
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr
    storage_obj = url if storage == "sqlite" else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(f"{tmp_path}/w.log"))
    study = optuna.load_study(study_name="width-dcgan-cpu-smoke", storage=storage_obj)
    keys = grid_keys(study)
    assert sorted(keys) == sorted((a.label, 0) for a in REGISTRY["width"].arms)


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


def test_a_diverged_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path, capsys, monkeypatch):
    from ablations import trial as trial_module
    from gan_core.errors import Diverged

    real_train = trial_module.train_seeds

    def train_seeds(cfg, *args, **kwargs):
        if cfg.schedule.d_steps == 5:  # the 5:1 arm "diverges"
            raise Diverged(3, 3, "generator loss")
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(trial_module, "train_seeds", train_seeds)
    assert run.main(["--study", "step_ratio", *in_process(tmp_path)]) == 0
    study = load(tmp_path, "step_ratio-dcgan-cpu-smoke")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert [(t.user_attrs["arm"], t.user_attrs["fail_kind"]) for t in failed] == [("5:1", "diverged")]
    assert "diverged at G step 3, D step 3" in failed[0].user_attrs["fail_reason"]
    assert len(grid_keys(study)) == 4
    out = capsys.readouterr().out
    assert "1 diverged" in out
    # a rerun does not repeat a divergence: it is a result, not an accident
    assert run.main(["--study", "step_ratio", *in_process(tmp_path)]) == 0
    assert len(load(tmp_path, "step_ratio-dcgan-cpu-smoke").trials) == 5


def test_a_study_where_every_trial_failed_says_so(tmp_path, capsys, monkeypatch):
    from ablations import trial as trial_module

    def train_seeds(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(trial_module, "train_seeds", train_seeds)
    assert run.main(["--study", "width", *in_process(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "every trial of this study failed" in out and out.count("1 error") == 4  # one row per arm


def test_the_progress_bar_counts_finished_trials_in_full_and_running_ones_by_their_stats(tmp_path):
    from optuna.trial import create_trial

    from ablations.progress import StudyProgress

    study = optuna.create_study(study_name="p", storage=f"sqlite:///{tmp_path}/p.db")
    study.add_trial(create_trial(value=1.0, user_attrs={"arm": "1:1", "seed": 0}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"arm": "1:5", "seed": 0, "fail_kind": "diverged"}))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"spare": True}))  # bookkeeping: not counted
    running = study.ask()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stats.jsonl").write_text('{"g_step": 20, "g_images_per_s": 50}\n'
                                         '{"g_step": 40, "g_images_per_s": 123}\n')
    for key, value in {"arm": "5:1", "seed": 1, "run_dir": str(run_dir)}.items():
        running.set_user_attr(key, value)
    progress = StudyProgress(study, planned=4, g_steps=100, enabled=True)
    progress.poll()
    assert progress.bar.n == 240  # two finished trials in full, the running one at its last logged G step
    assert progress.bar.desc.startswith("2/4 trials") and "5:1 seed 1 40/100 (123 img/s)" in progress.bar.postfix
    progress.bar.close()


def _open_storage(url: str) -> str:
    from ablations.storage import open_storage

    try:
        open_storage(url, heartbeat_s=1)
    except Exception as e:  # noqa: BLE001 - the test reports whatever a racing opener saw
        return f"{type(e).__name__}: {e}"
    return "ok"


def test_two_processes_creating_one_new_sqlite_storage_both_succeed(tmp_path):
    """Seen: 3 of 9 tries, one copy exited with "UNIQUE constraint failed: alembic_version.version_num"."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for i in range(10):
            url = f"sqlite:///{tmp_path}/race{i}.db"
            assert pool.map(_open_storage, [url, url]) == ["ok", "ok"], i


def test_a_finished_study_opens_in_optuna_dashboard(tmp_path):
    """The README's `optuna-dashboard sqlite:///runs/ablations.db`: the dashboard's own WSGI app reads the study."""
    import json
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard

    assert run.main(["--study", "width", *in_process(tmp_path)]) == 0
    app = optuna_dashboard.wsgi(f"sqlite:///{tmp_path}/s.db")

    def get(path: str) -> dict:
        env: dict = {}
        setup_testing_defaults(env)
        env["PATH_INFO"] = path
        status: list[str] = []
        body = b"".join(app(env, lambda s, headers, exc_info=None: status.append(s)))
        assert status == ["200 OK"], (path, status, body[:200])
        return json.loads(body)

    summaries = get("/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in summaries if s["study_name"] == "width-dcgan-cpu-smoke")
    detail = get(f"/api/studies/{study_id}")
    trials = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trials) == 4
    assert {a["value"] for t in trials for a in t["user_attrs"] if a["key"] == "arm"} == {"1/8", "1/4", "1/2", "1"}


@pytest.mark.parametrize("study, preset, shrink, batch", [
    ("step_ratio", "dcgan-cpu", 1.0, 32),
    ("depth", "dcgan-cpu", 0.5, 32),  # its deep arms cost up to 3.6x a step: half the channels keep 20 minutes
    ("width", "dcgan-cpu", 0.25, 32),
    ("blog_quirks", "blog", 1 / 16, 32),  # the blog's model, its batch cut from 100 for the CPU
    ("joint", "blog", 1 / 16, 100),  # the blog's batch: blog_quirks' cut is its own
])
def test_each_study_has_its_own_base_at_quick_and_says_it(capsys, study, preset, shrink, batch):
    assert run.main(["--study", study, "--budget", "quick", "--device", "cpu", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert plan.startswith(f"{study}: ") and f"base {preset}" in plan and f", batch {batch}," in plan
    assert (f"channels x{shrink:g}" in plan) == (shrink != 1)
    base = REGISTRY[study].base("quick")
    assert (base.preset, base.shrink, base.batch_size or batch) == (preset, shrink, batch)


def test_sqlalchemys_cursor_cleanup_after_an_interrupt_prints_no_traceback(capfd):
    import logging

    import ablations.storage  # noqa: F401 - importing it quiets the pool's logger

    try:
        raise RuntimeError("Cannot operate on a closed database.")
    except RuntimeError:  # what the pool logs when Ctrl-C interrupted a query (seen in a Ctrl-C test run)
        logging.getLogger("sqlalchemy.pool.impl.QueuePool").error("Error closing cursor", exc_info=True)
    assert "Traceback" not in capfd.readouterr().err


def test_a_trial_whose_run_folder_another_worker_is_training_waits_for_it_instead_of_failing(tmp_path):
    """On SQLite two workers can pop the same queued trial; the second finds the run folder locked (seen in CI:
    the 5:1 trial failed with "is being written by another run"). It must wait, then report the same result."""
    import threading

    from gan_core.training.run_folder import RunFolder

    folder = RunFolder(tmp_path / "runs" / "step_ratio-dcgan-cpu-smoke" / "5_1" / "seed0")
    folder.path.mkdir(parents=True)
    folder.lock()  # the other worker, busy with the same arm x seed for a while
    release = threading.Timer(3.0, folder.unlock)
    release.start()
    try:
        assert run.main(["--study", "step_ratio", *in_process(tmp_path)]) == 0
    finally:
        release.cancel()
        folder.unlock()
    study = load(tmp_path, "step_ratio-dcgan-cpu-smoke")
    assert not study.get_trials(states=(TrialState.FAIL,))
    assert sorted(grid_keys(study)) == sorted((a.label, 0) for a in REGISTRY["step_ratio"].arms)


def test_a_trial_whose_checkpoint_is_damaged_trains_again_from_scratch_and_says_so(tmp_path, monkeypatch, split):
    """Seen: a truncated checkpoint failed every retry ("checkpoint.pt cannot be read") and every rerun, so that arm x
    seed stayed missing; 64 flipped bytes were resumed from without a word (fid100 270.99 against 269.79). Two
    trials of a pack, as a killed worker left them: checkpointed at G step 1, then one checkpoint cut short and
    the other's tensor bytes flipped. (The study around a pass is tested above; its evaluation is left out here.)"""
    from types import SimpleNamespace

    import torch

    from ablations import trial as trial_module
    from gan_core.training import loop
    from gan_core.training.run_folder import CHECKPOINT
    from tests.conftest import flip_tensor_bytes, tiny_config

    cfg = tiny_config(steps=2, checkpoint_every=1)
    dirs = [tmp_path / "arm" / f"seed{s}" for s in (0, 1)]
    loop.train_seeds(override(cfg, {"steps": 1}), [0, 1], dirs, split=split)
    truncated, flipped = (d / CHECKPOINT for d in dirs)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    flip_tensor_bytes(flipped)
    study = optuna.create_study()
    group = [trial_module.Planned(study.ask(), override(cfg, {"seed": s}), "arm", d) for s, d in enumerate(dirs)]
    monkeypatch.setattr(trial_module, "finish", lambda ctx, planned, result: result.g_steps)
    told = {}
    ctx = SimpleNamespace(split=split, budget=SimpleNamespace(eval_n_intermediate=100))
    trial_module._train_group(ctx, group, lambda trial, outcome: told.update({trial.number: outcome}))
    assert told == {p.trial.number: 2 for p in group}  # both finished, none failed
    reasons = [p.trial.user_attrs["restarted"] for p in group]
    assert all(r.startswith(f"{d / CHECKPOINT} cannot be read (") and r.count("cannot be read") == 1
               for r, d in zip(reasons, dirs, strict=True)), reasons
    assert "does not match its checksum" in reasons[1]
    assert all((d / f"{CHECKPOINT}.damaged").is_file() for d in dirs)
    fresh = [tmp_path / "fresh" / d.name for d in dirs]  # a pass that never met the damage
    loop.train_seeds(cfg, [0, 1], fresh, split=split)
    for d, f in zip(dirs, fresh, strict=True):
        got, want = (torch.load(x / CHECKPOINT, weights_only=False)["g"] for x in (d, f))
        assert all(torch.equal(got[k], want[k]) for k in want), d


# ---- an arm's seeds in one pass (--pack-seeds; the default on CUDA)


def test_packed_seeds_are_trials_of_their_own_and_a_pack_too_big_trains_one_by_one(tmp_path, monkeypatch, capsys):
    """Packing's arithmetic is tested in tests/test_packing.py; here, the study around it. The 1/8 arm's pack
    "runs out of memory": its seeds train one by one, from where the pass left them."""
    import torch

    from ablations import trial as trial_module

    real, passes = trial_module.train_seeds, []

    def train_seeds(cfg, seeds, *args, **kwargs):
        passes.append((cfg.model.width, len(seeds)))
        if cfg.model.width == 1 / 8 and len(seeds) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(cfg, seeds, *args, **kwargs)

    monkeypatch.setattr(trial_module, "train_seeds", train_seeds)
    assert run.main(["--study", "width", "--seeds", "2", "--pack-seeds", *in_process(tmp_path)]) == 0
    capsys.readouterr()
    study = load(tmp_path, "width-dcgan-cpu-smoke")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 8  # 4 arms x 2 seeds, each its own trial, told separately
    assert len(passes) == 3 + 3 and passes.count((1 / 8, 1)) == 2  # 3 packs of 2; the too-big one, then 2 alone
    for t in complete:
        together = [0, 1] if t.user_attrs["arm"] != "1/8" else [t.params["seed"]]
        assert t.user_attrs["spent"]["seeds_in_pass"] == together, t.user_attrs["arm"]
        summary = RunFolder(t.user_attrs["run_dir"]).read_json("summary.json")
        assert summary.get("seeds_in_pass", [t.params["seed"]]) == together
    by_seed = {}
    for t in complete:  # each seed its own result: the two seeds of an arm differ
        by_seed.setdefault(t.user_attrs["arm"], set()).add(t.value)
    assert all(len(values) == 2 for values in by_seed.values())


def settings_of(tmp_path, *extra, study="step_ratio"):
    return run.settings_from_args(run.parser().parse_args(["--study", study, *study_args(tmp_path), *extra]))


def fake_gpus(monkeypatch, count: int) -> None:
    """This machine has no GPU: torch says it has ``count`` (what it says under CUDA_VISIBLE_DEVICES)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


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


def test_a_killed_pass_retries_its_members_from_their_checkpoints(tmp_path, capsys):
    db = tmp_path / "s.db"
    args = cli(tmp_path, "--pack-seeds", "--study-name", "packed", seeds="2")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "runs" / "packed"
    kill_when(p, lambda s: s.count("RUNNING") == 2 and len(list(checkpoints.glob("*/seed*/checkpoint.pt"))) == 2,
              db, "a pass running with both members checkpointed")
    import torch

    arm_dir = next(checkpoints.iterdir())
    stats_before = {d.name: (d / "stats.jsonl").read_text().splitlines() for d in arm_dir.iterdir()}
    checkpointed = {d.name: torch.load(d / "checkpoint.pt", weights_only=False)["g_step"] for d in arm_dir.iterdir()}
    rerun(args, capsys)
    study = optuna.load_study(study_name="packed", storage=f"sqlite:///{db}")
    assert sorted(grid_keys(study)) == sorted((a.label, s) for a in REGISTRY["step_ratio"].arms for s in (0, 1))
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 2  # the killed pass's two trials, retried
    for seed_dir in arm_dir.iterdir():  # resumed: what was logged before the kill is still the run's beginning
        after = (seed_dir / "stats.jsonl").read_text().splitlines()
        step = checkpointed[seed_dir.name]
        kept = [line for line in stats_before[seed_dir.name] if json.loads(line)["g_step"] <= step]
        assert kept and after[:len(kept)] == kept, seed_dir



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


# ---- hosts that share only the study storage (--artifacts)


def pair_study():
    """A 2-arm grid (the width study's two cheapest arms): what a test of several hosts needs, at half the cost. Its
    compute reference is its base, so that no arm trains on past the budget: each trains its 4 G steps."""
    import dataclasses

    width = REGISTRY["width"]
    return dataclasses.replace(width, name="pair", arms=width.arms[:2], blog_arm=width.arms[0].label, special={})


def host_that_dies_mid_trial() -> None:
    """``python -c`` entry of a study process that hangs after uploading its first trial's G-step-2 snapshot, so
    that the test kills it mid-trial, a snapshot in the store (its own run folder then lies on a lost host)."""
    from reports import artifacts

    REGISTRY["pair"] = pair_study()
    upload = artifacts.Uploads.snapshot

    def snapshot(self, g_step):
        upload(self, g_step)
        if g_step == 2:  # said once the snapshot is whole: the test's poll of the storage would see its user attr
            Path(os.environ["SNAPSHOT_DONE"]).touch()  # before the replaced checkpoint is removed from the store
            time.sleep(600)

    artifacts.Uploads.snapshot = snapshot
    raise SystemExit(run.main(sys.argv[1:]))


def snapshot_steps(db: Path) -> list[int]:
    try:
        with sqlite3.connect(db) as con:
            return [json.loads(v)["g_step"] for (v,) in
                    con.execute("select value_json from trial_user_attributes where key = 'artifacts'")]
    except sqlite3.OperationalError:  # no tables yet
        return []


def test_hosts_sharing_only_the_storage_resume_each_others_trials_and_build_a_complete_page(tmp_path, capsys,
                                                                                             monkeypatch):
    from reports import load as report
    from reports import sections

    monkeypatch.setitem(REGISTRY, "pair", pair_study())
    db = tmp_path / "s.db"
    host = ["--study", "pair", "--seeds", "1", "--heartbeat", "1", "--artifacts", str(tmp_path / "store"),
            *in_process(tmp_path)]
    root = Path(__file__).resolve().parents[1]
    entry = (f"import sys; sys.path.insert(0, {str(root)!r}); "
             "from tests.test_ablations import host_that_dies_mid_trial; host_that_dies_mid_trial()")
    done = tmp_path / "snapshot-done"
    a = subprocess.Popen([sys.executable, "-c", entry, *host, "--runs", str(tmp_path / "a")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, "SNAPSHOT_DONE": str(done)})
    kill_when(a, lambda _states: done.exists(), db, "a whole snapshot at G step 2")
    assert 2 in snapshot_steps(db)
    capsys.readouterr()
    assert run.main([*host, "--runs", str(tmp_path / "b")]) == 0  # host B: its own, empty run folders
    study = load(tmp_path, "pair-dcgan-cpu-smoke")
    assert sorted(grid_keys(study)) == [("1/4", 0), ("1/8", 0)]
    (lost,) = study.get_trials(states=(TrialState.FAIL,))
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == lost.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_dir"].startswith(str(tmp_path / "b"))
    # resumed from A's G-step-2 checkpoint: A's first two log lines (their wall times too) begin B's run
    logged_a = (Path(lost.user_attrs["run_dir"]) / "stats.jsonl").read_text().splitlines()
    logged_b = (Path(retry.user_attrs["run_dir"]) / "stats.jsonl").read_text().splitlines()
    assert len(logged_a) == 2 and logged_b[:2] == logged_a and len(logged_b) == 4
    store = tmp_path / "store"  # a checkpoint that a newer snapshot of its trial replaced is gone from the store
    uploaded = {m.artifact_id for t in study.trials for m in optuna.artifacts.get_all_artifact_meta(
        t, storage=study._storage) if m.filename == "checkpoint.pt"}
    kept = {t.user_attrs["artifacts"]["files"]["checkpoint.pt"] for t in study.trials if "artifacts" in t.user_attrs}
    assert len(uploaded) == 8 and {i for i in uploaded if (store / i).is_file()} == kept and len(kept) == 3

    (data,) = report.load_studies(f"sqlite:///{db}", tmp_path / "c")  # a third host: no run folder at all
    assert data.complete["samples"].notna().all()
    assert set(data.curves["trial"]) == set(data.complete["number"])
    assert all("image" in grid for grid in sections.sample_grids(data, data.arms)), sections.sample_grids(data,
                                                                                                       data.arms)


def test_every_grid_arm_is_judged_at_equal_g_steps_and_at_the_references_compute(tmp_path):
    """step_ratio at smoke: 5:1 costs more per G step than the 1:1 base (judged at its equal-FLOPs step on the way
    to the budget), 1:5 less (trains on past it); each is judged at both points, and the judgement at the budget's
    G steps is the one a run of exactly that many steps gives (the iteration ends there)."""
    assert run.main(["--study", "step_ratio", *in_process(tmp_path)]) == 0
    study = load(tmp_path, "step_ratio-dcgan-cpu-smoke")
    trials = {t.user_attrs["arm"]: t for t in study.get_trials(states=(TrialState.COMPLETE,))}
    reference = trials["1:1"].user_attrs["spent"]["flops"]  # the base's FLOPs in the budget's 4 G steps
    for arm, t in trials.items():
        cfg, eq = RunConfig.from_dict(t.user_attrs["config"]), t.user_attrs["equal_flops"]
        n = len(data.training_images(data.load(cfg.data), cfg.data))
        assert eq["reference_flops"] == pytest.approx(reference) and eq["flops"] >= reference
        assert accounting.flops_at(cfg, eq["g_steps"] - 1, n) < reference  # the first G step that has had it
        evals = {r["g_step"]: r for r in RunFolder(t.user_attrs["run_dir"]).read_jsonl("evals.jsonl")}
        for g_step, attr in ((4, "metrics"), (eq["g_steps"], "metrics_equal_flops")):
            final = evals[g_step] if g_step < cfg.steps else RunFolder(t.user_attrs["run_dir"]).read_json(
                "metrics.json")
            assert t.user_attrs[attr]["fid100"] == final["fid100"], (arm, attr)
    assert trials["5:1"].user_attrs["equal_flops"]["g_steps"] < 4 < trials["1:5"].user_attrs["equal_flops"]["g_steps"]
    assert trials["1:5"].user_attrs["spent"]["g_steps"] == trials["1:5"].user_attrs["equal_flops"]["g_steps"]
    assert trials["1:1"].user_attrs["metrics"] == trials["1:1"].user_attrs["metrics_equal_flops"]
