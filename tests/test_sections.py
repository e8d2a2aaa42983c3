"""reports.sections: what each study's section says, from its trials (the answers, the importances, the unit
change), without building a page (tests/test_reports.py builds the whole page)."""

import optuna

from reports import sections, stats
from tests import report_fixtures as rf


def test_importances_are_guarded_against_too_few_trials(tmp_path):
    from reports import load, sections

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="joint-one", storage=url)
    study.set_user_attr("study", "joint")
    dists = rf.joint_distributions()
    params = {p: (d.choices[0] if hasattr(d, "choices") else d.low) for p, d in dists.items()}
    study.add_trial(optuna.trial.create_trial(value=1.0, params=params, distributions=dists))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params=params, distributions=dists))
    (data,) = load.load_studies(url)
    assert sections.importances(data) == ({}, "needs at least 2 complete trials, has 1")


def answer_for(final: dict, step0: dict, base_arm: str | None, blog: str = "1:5") -> str:
    """sections.answer on a study whose arms have these {arm: {seed: fid}} values (final and step 0)."""
    from types import SimpleNamespace

    from gan_core.judging.metrics import MetricNames

    study = SimpleNamespace(attrs={"budget": {"g_steps": 900}}, blog_arm=blog, base_arm=base_arm,
                            names=MetricNames.for_count(1000))
    learned = {arm: stats.learned(step0[arm], final[arm], metric="fid1k") for arm in final}
    return sections.answer(study, stats.verdict(final, "fid1k"), learned, None)


STEP0 = {arm: {s: 400.0 + 10 * s for s in range(5)} for arm in ("1:1", "1:5", "5:1")}


def test_an_answer_says_when_the_base_arm_did_not_learn():
    final = {"1:1": {s: 390.0 + 10 * s for s in range(5)}, "1:5": {s: 20.0 + s for s in range(5)},
             "5:1": {s: 30.0 + s for s in range(5)}}
    text = answer_for(final, STEP0, base_arm="1:1")
    assert text.startswith("1:5 is best on fid1k: 0.69")  # the arms that learned are still compared
    assert "Note: the base arm 1:1 did not learn in 900 G steps (its fid1k went to 0.98" in text  # and it is said


def test_an_answer_says_when_no_arm_learned():
    final = {arm: {s: 380.0 + 10 * s + i for s in range(5)} for i, arm in enumerate(STEP0)}
    assert answer_for(final, STEP0, base_arm=None).startswith("No arm learned in 900 G steps")


def test_an_answer_compares_the_blogs_setting_with_the_best_arm_paired():
    final = {"1:1": {s: 10.0 + s for s in range(5)}, "1:5": {s: 40.0 + 4 * s + (s % 2) for s in range(5)},
             "5:1": {s: 200.0 + s for s in range(5)}}
    text = answer_for(final, STEP0, base_arm="1:1")
    assert text.startswith("The blog's setting 1:5 has 4.") and "the fid1k of the best arm, 1:1 (95% CI" in text
    assert "paired over 5 seeds" in text and "it clearly costs" in text


def choices_text(final: dict, step0: dict) -> str:
    """sections.answer on a leave-one-out study with these {arm: {seed: fid}} values (final and step 0)."""
    from types import SimpleNamespace

    from gan_core.judging.metrics import MetricNames

    choices = [{"label": a, "guess": "", "see_also": ""} for a in final if a not in ("blog", "all fixed")]
    study = SimpleNamespace(attrs={"budget": {"g_steps": 900}, "reference": "all fixed",
                                   "choices": choices, "guesses": {}}, blog_arm="blog", base_arm="blog",
                            names=MetricNames.for_count(1000))
    learned = {arm: stats.learned(step0[arm], final[arm], metric="fid1k") for arm in final}
    return sections.answer(study, stats.verdict(final, "fid1k"), learned,
                           sections.choices_answer(study, final, learned))


def test_no_choice_is_ranked_when_even_all_fixed_did_not_learn():
    seeds = range(5)
    step0 = {a: {s: 700.0 + s for s in seeds} for a in ("blog", "all fixed", "reused noise", "9-block stack")}
    final = {"blog": {s: 720.0 + 3 * s for s in seeds}, "all fixed": {s: 690.0 + 2 * s for s in seeds},
             "reused noise": {s: 1400.0 + 4 * s for s in seeds}, "9-block stack": {s: 100.0 + s % 2 for s in seeds}}
    text = choices_text(final, step0)
    assert text.startswith("Even with every choice fixed, “all fixed” did not learn in 900 G steps")
    assert "costs the most" not in text and "Note: the base arm blog did not learn" in text
    final["all fixed"] = {s: 40.0 + 3 * s + s % 2 for s in seeds}  # now it learns: the ranking is the answer
    text = choices_text(final, step0)
    assert text.startswith("Restoring “reused noise” alone (all else fixed) raises fid1k to")
    assert "The blog's setting as a whole has" in text


def _costs(*labels: str) -> dict:
    return {"rows": [{"choice": x, "costs": True} for x in labels]}


def test_a_leave_one_out_answer_names_the_choices_whose_cost_changes_with_the_unit():
    no = stats.Verdict("unused")
    assert sections._unit_change(no, no, _costs("a", "b"), _costs("b", "a")) is None
    assert sections._unit_change(no, no, _costs("a"), _costs("b", "c")) == (
        "The unit changes the answer: at equal FLOPs \u201cb\u201d, \u201cc\u201d clearly cost too; \u201ca\u201d no "
        "longer clearly cost.")
