"""ablations.trial_queue: the tuning phase's choice, every arm x seed queued once across workers, and an arm's
seeds trained in one pass (work_pass) with their heartbeats."""

import json
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ablations import run, trial_queue
from ablations.studies import REGISTRY
from gan_core.training.run_folder import RunFolder
from tests.study_helpers import cli, grid_keys, in_process, kill_when, load, rerun, study_args


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
    # a family whose every candidate diverged keeps its usual value (the second one swept)
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



def test_an_idle_worker_sees_the_last_trial_of_another_worker_finish_within_a_second(tmp_path, monkeypatch):
    """A study ends when its last worker sees the other workers' trials finished: an idle worker looks again at
    least every second, whatever the heartbeat (at heartbeat / 2, the default 30 s ended every multi-worker study
    15 s after its last trial)."""
    from ablations.settings import make_context, open_study

    settings = run.settings_from_args(run.parser().parse_args(["--study", "step_ratio", *in_process(tmp_path)]))
    assert settings.heartbeat == 30  # the default
    study = open_study(settings)
    others = study.ask()  # another worker's trial, still running; nothing is queued
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        study.tell(others, 1.0)  # the other worker finishes it

    monkeypatch.setattr(trial_queue.time, "sleep", sleep)
    trial_queue.work(settings, threads=1, ctx=make_context(settings), study=study)
    assert naps == [1.0]  # one look a second later, and the worker is done

def test_packed_seeds_are_trials_of_their_own_and_a_pack_too_big_trains_one_by_one(tmp_path, monkeypatch, capsys):
    """Packing's arithmetic is tested in tests/test_packing.py; here, the study around it. The 1/8 arm's pack
    "runs out of memory": its seeds train one by one, from where the pass left them."""

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


def test_a_killed_pass_retries_its_members_from_their_checkpoints(tmp_path, capsys):
    db = tmp_path / "s.db"
    args = cli(tmp_path, "--pack-seeds", "--study-name", "packed", seeds="2")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "runs" / "packed"
    kill_when(p, lambda s: s.count("RUNNING") == 2 and len(list(checkpoints.glob("*/seed*/checkpoint.pt"))) == 2,
              db, "a pass running with both members checkpointed")

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
