"""reports.load: what the report reads (storages, run folders, benchmark JSON)."""

import json

from reports import load


def test_benchmark_json_with_missing_keys_is_read(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"benchmarks": [
        {"name": "a", "group": None, "stats": None},  # --benchmark-disable leaves no stats
        {"name": "b", "stats": {"min": 0.5}, "extra_info": {"g_images_per_s": 10.0, "config": {"x": 1}}},
    ]}))
    frame = load.load_benchmarks([p])
    assert list(frame["name"]) == ["a", "b"] and frame.loc[1, "stat_min"] == 0.5
    assert frame.loc[1, "g_images_per_s"] == 10.0 and "config" not in frame  # nested values stay out of the table


def test_anytime_curves_use_the_intermediate_metric_not_the_step_0_extra():
    """The step-0 row also holds the final count's FID (fid1k, for "did it learn?"): the curves must still plot the
    intermediate one, recorded at every point (seen: a curve of one point, step 0). Its count is the budget's."""
    import pandas as pd

    from reports import load

    frame = pd.DataFrame([{"g_step": 0, "fid200": 400.0, "kid200_mean": 9.0, "fid1k": 380.0},
                          {"g_step": 450, "fid200": 50.0, "kid200_mean": 1.0}, {"g_step": 900, "fid200": 9.0}])
    budget = {"name": "quick", "g_steps": 900, "eval_n": 1000, "eval_n_intermediate": 200, "seeds": 5}
    study = load.StudyData("s", "step_ratio", {"budget": budget}, ["minimize"], load.MetricNames.for_count(1000),
                           pd.DataFrame(), frame, study=None)
    names = study.curve_names
    assert (names.fid, names.kid) == ("fid200", "kid200_mean")
    assert load.StudyData("s", None, {}, ["minimize"], None, pd.DataFrame(), frame, study=None).curve_names is None


def test_a_trial_that_trained_again_from_scratch_says_why_in_its_record(tmp_path):
    from optuna.trial import create_trial

    from reports.load import trial_row
    from reports.record import TrialRecord

    reason = "runs/x/seed0/checkpoint.pt cannot be read (its content does not match its checksum); it is corrupt"
    t = create_trial(value=1.0, user_attrs={"arm": "1:5", "seed": 0, "restarted": reason})
    assert trial_row(TrialRecord.of(t), None, tmp_path, "s")["restarted"] == reason
    assert trial_row(TrialRecord.of(create_trial(value=1.0)), None, tmp_path, "s")["restarted"] is None


def test_a_study_recorded_before_the_blog_arm_was_named_so_still_marks_the_blogs_arm():
    """Studies recorded before 2026-12-03 name the blog's arm "baseline": their page still marks it."""
    import pandas as pd

    def study(attrs):
        return load.StudyData("s", "step_ratio", attrs, ["minimize"], None, pd.DataFrame(), pd.DataFrame(), study=None)

    assert study({"baseline": "1:5"}).blog_arm == study({"blog_arm": "1:5"}).blog_arm == "1:5"
    assert study({}).blog_arm is None
