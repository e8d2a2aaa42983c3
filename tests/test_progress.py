"""ablations.progress: the study's progress bar."""


import optuna
from optuna.trial import TrialState


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
