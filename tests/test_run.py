"""ablations.run, the CLI: every study end to end at the smoke budget, reruns, listing, refusals, the end table,
and the study as optuna-dashboard opens it."""

import json
import os
import shutil

import optuna
import pytest
from optuna.trial import TrialState

from ablations import run
from ablations.studies import REGISTRY
from gan_core.training.accounting import channel_lists
from gan_core.training.config import RunConfig, override
from tests.study_helpers import fake_gpus, grid_keys, in_process, load, settings_of


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_study_runs_end_to_end_at_the_smoke_budget(smoke_run, capsys, name):
    tmp_path, out = smoke_run(name)
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


def _sweep_of_3() -> dict:
    """The optimizer study's tuning record as its 3-value sweep (1/3x-3x) wrote it."""
    from ablations.studies import OPTIMIZER_TUNING

    tuning = OPTIMIZER_TUNING.description()
    tuning["families"] = [{**f, "candidates": f["candidates"][:3], "values": f["values"][:3]}
                          for f in tuning["families"]]
    return tuning


# An optimizer study whose new trials would carry "arm" choices other than its own: once it holds trials, Optuna
# refuses every one of them, and its page would mix two designs. The study as it was before its tuning phase, and as
# its 3-value sweep recorded it (today's verdict arms, other tuning candidates).
@pytest.mark.parametrize("old, message", [
    (lambda: {"arms": ["Adadelta lr=1e-3", "Adadelta lr=1.0", "Adam 2e-4"]},
     "holds another experiment: its arms is ['Adadelta lr=1e-3', 'Adadelta lr=1.0'"),
    (lambda: {"arms": [a.label for a in REGISTRY["optimizer"].arms], "tuning": _sweep_of_3()},
     "holds another experiment: its tuning is '3 learning rate values a family (Adadelta tuned: 0.333333-3)', "
     "this run's '5 learning rate values a family (Adadelta tuned: 0.333333-27)'"),
], ids=["before tuning", "3-value sweep"])
def test_a_study_run_with_other_arms_is_refused_in_one_line(tmp_path, capsys, old, message):
    from reports import record

    study = optuna.create_study(study_name="optimizer-dcgan-cpu-smoke", storage=f"sqlite:///{tmp_path}/s.db")
    record.write_study(study, {"study": "optimizer", **old()})
    # --no-amp: a study from before the precision was recorded is fp32, which a CPU with bf16 would refuse first
    assert run.main(["--study", "optimizer", *in_process(tmp_path), "--no-amp"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not load(tmp_path, "optimizer-dcgan-cpu-smoke").trials  # nothing queued


def test_rerun_resumes_and_adds_seeds_without_rerunning(tmp_path, smoke_run):
    shutil.copy(smoke_run("width")[0] / "s.db", tmp_path / "s.db")  # one seed run; its run folders stay there
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


def test_a_study_where_every_trial_failed_says_so(tmp_path, capsys, monkeypatch):
    from ablations import trial as trial_module

    def train_seeds(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(trial_module, "train_seeds", train_seeds)
    assert run.main(["--study", "width", *in_process(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "every trial of this study failed" in out and out.count("1 error") == 4  # one row per arm


def test_a_finished_study_opens_in_optuna_dashboard(tmp_path, smoke_run):
    """The README's `optuna-dashboard sqlite:///runs/ablations.db`: the dashboard's own WSGI app reads the study."""
    import json
    from wsgiref.util import setup_testing_defaults

    import optuna_dashboard

    shutil.copy(smoke_run("width")[0] / "s.db", tmp_path / "s.db")  # the dashboard may write tables of its own
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


@pytest.mark.parametrize("native, extra, precision", [
    (True, [], "bf16 autocast"), (False, [], "fp32"), (False, ["--amp"], "bf16 autocast"), (True, ["--no-amp"], "fp32"),
])
def test_a_study_trains_in_bf16_where_the_cpu_has_it_unless_told_and_its_plan_says_which(tmp_path, capsys, monkeypatch,
                                                                                         native, extra, precision):
    from gan_core import devices

    monkeypatch.setattr(devices, "native_bf16", lambda device: native and device.type == "cpu")
    assert settings_of(tmp_path, "--device", "cpu", *extra).base.device.precision == precision
    assert run.main(["--study", "step_ratio", "--device", "cpu", *extra, "--dry-run"]) == 0
    assert f", batch 32, {precision}, budget quick" in capsys.readouterr().out


def test_a_study_on_gpus_trains_in_fp32_even_where_the_host_cpu_has_bf16(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert settings_of(tmp_path, "--device", "cpu").base.device.precision == "bf16 autocast"  # the host's CPU has it
    fake_gpus(monkeypatch, 2)
    for device in ("auto", "cuda", "cuda:1", "cuda:0,cuda:1"):  # the precision follows the GPUs, not the CPU
        assert settings_of(tmp_path, "--device", device).base.device.precision == "fp32", device
