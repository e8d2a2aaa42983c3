"""A trial's record (reports.record): one outcome per trial, read from its Optuna state and what ablations.trial
recorded, which the queue, the progress bar, the printed lines and the page all ask."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from gan_core.errors import UserError
from reports import record
from reports.record import LOST_REASON, Outcome, TrialRecord

GRID = {"arm": "1:5", "seed": 3}


@pytest.mark.parametrize(("state", "attrs", "outcome", "kind", "reason"), [
    (TrialState.COMPLETE, GRID, Outcome.COMPLETE, None, None),
    (TrialState.PRUNED, GRID, Outcome.PRUNED, None, None),
    (TrialState.RUNNING, GRID, Outcome.RUNNING, None, None),
    (TrialState.WAITING, GRID, Outcome.QUEUED, None, None),
    (TrialState.FAIL, {**GRID, "fail_kind": "diverged", "fail_reason": "NaN"}, Outcome.DIVERGED, "diverged", "NaN"),
    (TrialState.FAIL, {**GRID, "fail_kind": "out of memory", "fail_reason": "CUDA"}, Outcome.OUT_OF_MEMORY,
     "out of memory", "CUDA"),
    (TrialState.FAIL, {**GRID, "fail_kind": "error", "fail_reason": "bug"}, Outcome.ERROR, "error", "bug"),
    (TrialState.FAIL, {**GRID, "fail_kind": "interrupted", "fail_reason": "SIGTERM"}, Outcome.INTERRUPTED,
     "interrupted", "SIGTERM"),
    # failed by Optuna (a stale heartbeat), not by the trial's own handler: no kind of its own
    (TrialState.FAIL, GRID, Outcome.LOST, "worker lost", LOST_REASON),
    (TrialState.FAIL, {**GRID, "fail_kind": ""}, Outcome.LOST, "worker lost", LOST_REASON),
    # a kind this version does not know (an older study's, a hand edit): an error, its own words kept for the page
    (TrialState.FAIL, {**GRID, "fail_kind": "cosmic ray", "fail_reason": "?"}, Outcome.ERROR, "cosmic ray", "?"),
    (TrialState.PRUNED, {"spare": True}, Outcome.BOOKKEEPING, None, None),
    (TrialState.PRUNED, {**GRID, "duplicate": True}, Outcome.BOOKKEEPING, None, None),
    (TrialState.FAIL, {**GRID, "duplicate": True}, Outcome.BOOKKEEPING, None, None),
])
def test_a_trial_has_one_outcome_read_from_its_state_and_what_its_handler_recorded(state, attrs, outcome, kind,
                                                                                     reason):
    t = TrialRecord.of(create_trial(state=state, value=2.5 if state == TrialState.COMPLETE else None,
                                    user_attrs=attrs))
    assert (t.outcome, t.kind, t.reason) == (outcome, kind, reason)
    assert t.key == ((attrs["arm"], attrs["seed"]) if "seed" in attrs else None)
    assert t.value == (2.5 if state == TrialState.COMPLETE else None)


def test_a_rerun_trains_again_only_what_an_accident_ended_and_the_progress_bar_counts_what_its_worker_finished():
    """The queue's rule (ablations.trial_queue) and the progress bar's, both the outcome's."""
    again = {o for o in Outcome if not o.is_result and o not in (Outcome.RUNNING, Outcome.QUEUED, Outcome.BOOKKEEPING)}
    assert again == {Outcome.ERROR, Outcome.INTERRUPTED, Outcome.LOST}
    assert {o for o in Outcome if o.ended} == {Outcome.COMPLETE, Outcome.PRUNED, Outcome.DIVERGED,
                                                Outcome.OUT_OF_MEMORY, Outcome.ERROR, Outcome.INTERRUPTED}
    assert {o for o in Outcome if o.failed} == {Outcome.DIVERGED, Outcome.OUT_OF_MEMORY, Outcome.ERROR,
                                                 Outcome.INTERRUPTED, Outcome.LOST}


def test_what_the_runner_records_of_a_trial_reads_back_as_its_outcome():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    failing, spare = study.ask(), study.ask()
    record.fail(failing, Outcome.DIVERGED, "loss_d is NaN at G step 7")
    record.set_aside(spare, "spare")
    told = [study.tell(failing, state=TrialState.FAIL), study.tell(spare, state=TrialState.PRUNED)]
    assert [(t.outcome, t.reason) for t in map(TrialRecord.of, told)] == [
        (Outcome.DIVERGED, "loss_d is NaN at G step 7"), (Outcome.BOOKKEEPING, None)]


def test_a_record_read_for_a_named_study_refuses_an_attr_of_the_wrong_kind_in_one_line():
    t = create_trial(value=1.0, user_attrs={**GRID, "seed": "three"})
    assert TrialRecord.of(t).seed == "three"  # unchecked: the runner's own live trials
    # create_trial's trials are numbered -1 until a study adds them
    with pytest.raises(UserError, match=r"^study 'x' trial #-1: user attr 'seed' is a string, not an integer; "
                                        r"the study was not written by python -m ablations.run"):
        TrialRecord.of(t, "x")


def test_the_writers_refuse_an_attr_the_schema_does_not_name_or_of_the_wrong_kind():
    """What the runner and the report's fixtures write goes through these, so the schema is the one list of what a
    record holds: a new attr must be added there first, where the report's reader checks it too."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="w")
    trial = study.ask()
    record.write_trial(trial, {"arm": "1:5", "seed": 3})
    assert trial.user_attrs == {"arm": "1:5", "seed": 3}
    with pytest.raises(ValueError, match=r"trial #0: user attr\(s\) \['armm'\] are not in reports.record's schema"):
        record.write_trial(trial, {"armm": "1:5"})
    with pytest.raises(ValueError, match=r"user attr 'seed' is a string, not an integer"):
        record.trial_attrs({"seed": "3"})
    with pytest.raises(ValueError, match=r"study 'w': user attr\(s\) \['baseline'\] are not in"):
        record.write_study(study, {"baseline": "1:5"})  # the blog's arm's old name
    assert trial.user_attrs == {"arm": "1:5", "seed": 3} and study.user_attrs == {}  # nothing half-written
