"""A trial's record and a study's: what ablations.run writes into an Optuna study and the report reads back.

One schema each (STUDY_ATTRS, TRIAL_ATTRS: the user attrs with their JSON kinds), checked wherever a study is read
and wherever one is written: the runner and the report's test fixtures write attrs only through ``write_study``,
``write_trial`` and ``trial_attrs``, which refuse a key the schema does not name, so the schema is the one list of
what a record holds. One reading of a trial (TrialRecord.of), whose ``outcome`` is the one place a trial's fate is
decided: the queue (ablations.trial_queue), the progress bar, the printed lines and the page all ask it, and
ablations.trial writes a failure or a bookkeeping trial through ``fail`` and ``set_aside`` here.

Here, not in ablations, because the report reads what the runner writes, and reports does not import ablations;
no pandas here either: a worker imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gan_core.errors import UserError
from gan_core.judging.protocol import PROTOCOL_KEY
from reports import artifacts as artifact_store

# ---- what ablations.run writes into a study (ablations/run.py, settings.py) and its trials (ablations/trial.py) ----
# Each user attr with the JSON type it must have, checked by ``checked_attrs`` wherever a study is read (here, and
# by ablations.run before it adds to a study), so that a study edited by hand or written by another program is named
# in one line instead of failing deep inside the report. A kind is a type (or a tuple of them), a dict (an object
# with those keys, each optional unless ``Required``; a ``str`` key gives the kind of every key not named), or
# ``[kind]`` (a list of them). null stands for an absent object or list (not for a list's item).
NUMBER = (int, float)
SCALAR = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Required:
    """An object's key that must be there."""

    kind: object


# a metric's value is checked where it is read (``number``); the protocol it was measured under travels with it
METRICS_ATTR = {PROTOCOL_KEY: {str: SCALAR}, str: SCALAR}
BUDGET = {"name": Required(str), "g_steps": Required(int), "eval_n": (int, type(None)), "eval_every": int,
          "eval_n_intermediate": int, "batch_size": (int, type(None)), "seeds": Required(int),
          "joint_trials": int, "note": str}
# what a study written before its record held these keys had (other missing keys: unknown); no --amp then: fp32
BEFORE_RECORDED = {"precision": "fp32"}
STUDY_ATTRS = {
    "study": str, "base": str, "budget": BUDGET, "objective": str, "data": str, "split": [int], "extractor": str,
    "second_judge": (str, type(None)), "precision": str,
    "question": str, "knob": str, "arms": [str], "blog_arm": (str, type(None)), "base_arm": (str, type(None)),
    "base_why": str, "shrink": NUMBER, "seeds": int, "floor": METRICS_ATTR,
    "catalogue": [{"name": Required(str), "question": str}], artifact_store.STORE: str,
    # a study with a tuning phase (ablations.studies.Tuning): what it sweeps, and each tuned arm's winning candidate
    "tuning": {"knob": str, "seeds": [int], "families": [{"arm": Required(str), "candidates": Required([str]),
                                                           "values": Required([NUMBER])}]},
    "tuned": {str: str},
    # what is special about a study (ablations.studies.Study.special): its kind of verdict, the arm that verdict and
    # equal compute are measured against, the page's heading, the choices a leave-one-out study restores and the
    # blog's guesses they test
    "verdict": str, "reference": str, "heading": str,
    "choices": [{"label": Required(str), "guess": str, "see_also": str}], "guesses": {str: str},
}
TRIAL_ATTRS = {
    "arm": str, "seed": int, "spare": bool, "duplicate": bool, "run_dir": str,
    "config": {"schedule": {"batch_size": int}}, "provenance": {str: SCALAR}, "metrics": METRICS_ATTR,
    "metrics_step0": METRICS_ATTR, "metrics_equal_flops": METRICS_ATTR,
    "equal_flops": {"g_steps": int, "flops": NUMBER, "reference_flops": NUMBER, "reference": str},
    "channels": {str: [int]}, "fail_kind": str, "fail_reason": str, "restarted": str,
    "phase": str, "family": str, "candidate": str,  # a tuning trial's phase and family; a tuned arm's candidate
    artifact_store.SNAPSHOT: {"g_step": int, "files": {str: str}},
    "spent": {"g_steps": int, "d_steps": int, "real_images": int, "wall_s": NUMBER, "flops": NUMBER,
              "g_images_per_s": NUMBER, "device": str, "device_name": str, "seeds_in_pass": [int]},
}
WRITTEN_BY = "the study was not written by python -m ablations.run (edited by hand, or another program's)"


def checked_attrs(attrs: dict, schema: dict, where: str) -> dict:
    """``attrs`` if every attr named in ``schema`` has its kind (attrs it does not name are free), else a UserError
    naming the first that has not, and where it is (``where``: "study 'x'", "study 'x' trial #3")."""
    try:
        for key, kind in schema.items():
            if key in attrs:
                check(attrs[key], kind, f"{where}: user attr {key!r}")
    except UserError as e:
        raise UserError(f"{e}; {WRITTEN_BY}") from None
    return attrs


def check(value, kind, what: str, item: bool = False) -> None:
    """A UserError ("WHAT['key'][0] is a string, not a number") unless ``value`` is of ``kind`` (``item``: a list's,
    where null is no absent object)."""
    if isinstance(kind, list | dict) and value is None and not item:
        return
    if isinstance(kind, list):
        _expect(value, list, what)
        for i, x in enumerate(value):
            check(x, kind[0], f"{what}[{i}]", item=True)
    elif isinstance(kind, dict):
        _expect(value, dict, what)
        for k, v in value.items():
            sub = kind.get(k, kind.get(str))
            if sub is not None:
                check(v, sub.kind if isinstance(sub, Required) else sub, f"{what}[{k!r}]")
        missing = [k for k, sub in kind.items() if isinstance(sub, Required) and k not in value]
        if missing:
            raise UserError(f"{what} has no {missing[0]!r}")
    else:
        _expect(value, kind, what)


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null",
               list: "a list", dict: "an object", object: "anything"}


def _expect(value, kinds, what: str) -> None:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    # JSON's true/false are not numbers, though Python's bool is an int
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds and object not in kinds):
        return
    wanted = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
    found = next((_KIND_NAMES[k] for k in (bool, type(None), str, int, float, list, dict) if isinstance(value, k)),
                 type(value).__name__)
    raise UserError(f"{what} is {found}, not {wanted}")


def number(value, what: str) -> float | None:
    """A metric's value as the report uses it: a number or None (a NaN is a number: a diverged value)."""
    if value is None:
        return None
    try:
        _expect(value, NUMBER, what)
    except UserError as e:
        raise UserError(f"{e}; {WRITTEN_BY}") from None
    return value


# Bookkeeping trials of ablations.run (a worker that found no queued arm, a raced duplicate): not results.
BOOKKEEPING_ATTRS = ("spare", "duplicate")


def is_bookkeeping(attrs) -> bool:
    """Whether a trial with these user attrs is bookkeeping, not a result: every count, table and queue skips it."""
    return any(attrs.get(a) for a in BOOKKEEPING_ATTRS)


class Outcome(StrEnum):
    """What happened to a trial, one word for each fate (its Optuna state and the kind ablations.trial recorded)."""

    COMPLETE = "complete"
    PRUNED = "pruned"  # stopped early by the searched study's pruner
    DIVERGED = "diverged"  # a non-finite loss or weight: a result (gan_core.errors.Diverged)
    OUT_OF_MEMORY = "out of memory"  # a result too: the device cannot hold the arm
    ERROR = "error"  # a bug or a fault, recorded by the trial's own handler
    INTERRUPTED = "interrupted"  # stopped by a signal (Ctrl-C, SIGTERM)
    LOST = "worker lost"  # failed by Optuna itself: its worker stopped sending heartbeats (killed)
    BOOKKEEPING = "bookkeeping"  # a worker that found no queued arm, a raced duplicate: not a result
    RUNNING = "running"
    QUEUED = "queued"

    @property
    def failed(self) -> bool:
        return self in _FAILED

    @property
    def is_result(self) -> bool:
        """A settled result that a rerun does not repeat: complete, pruned, or a failure that is the arm's own
        (diverged, out of memory), not an accident (an error, an interrupt, a lost worker: a rerun trains it again)."""
        return self in (Outcome.COMPLETE, Outcome.PRUNED, Outcome.DIVERGED, Outcome.OUT_OF_MEMORY)

    @property
    def ended(self) -> bool:
        """Its worker is done with it: a result, or a failure the trial recorded itself (a lost trial's worker is
        gone, and another takes the trial again)."""
        return self.is_result or self in (Outcome.ERROR, Outcome.INTERRUPTED)


_FAILED = (Outcome.DIVERGED, Outcome.OUT_OF_MEMORY, Outcome.ERROR, Outcome.INTERRUPTED, Outcome.LOST)
_BY_STATE = {"COMPLETE": Outcome.COMPLETE, "PRUNED": Outcome.PRUNED, "RUNNING": Outcome.RUNNING,
             "WAITING": Outcome.QUEUED}
LOST_REASON = "its worker stopped sending heartbeats"
FAIL_KIND, FAIL_REASON = "fail_kind", "fail_reason"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as its record says: its number, Optuna state, outcome, arm and seed (None for a searched trial
    that has not started), why it failed, its objective value and parameters, and its user attrs (TRIAL_ATTRS)
    for everything else."""

    number: int
    state: str  # Optuna's state name (COMPLETE, FAIL, ...)
    outcome: Outcome
    arm: str | None
    seed: int | None
    reason: str | None  # a failed trial's reason
    value: float | None  # Optuna's objective value (a multi-objective trial's first)
    params: dict
    attrs: dict

    @classmethod
    def of(cls, trial, study_name: str | None = None) -> TrialRecord:
        """The record of an Optuna trial (a FrozenTrial: what get_trials and tell return); with ``study_name``, its
        attrs checked against TRIAL_ATTRS (a UserError naming the first that is wrong)."""
        attrs = dict(trial.user_attrs)
        if study_name is not None:
            checked_attrs(attrs, TRIAL_ATTRS, f"study {study_name!r} trial #{trial.number}")
        state = trial.state.name
        if is_bookkeeping(attrs):
            outcome, reason = Outcome.BOOKKEEPING, None
        elif state != "FAIL":
            outcome, reason = _BY_STATE[state], None
        elif attrs.get(FAIL_KIND):  # the kind the trial's own handler recorded (an older study's: an error)
            outcome = next((o for o in _FAILED if o.value == attrs[FAIL_KIND]), Outcome.ERROR)
            reason = attrs.get(FAIL_REASON)
        else:  # failed by Optuna (fail_stale_trials), not by the trial
            outcome, reason = Outcome.LOST, LOST_REASON
        return cls(trial.number, state, outcome, attrs.get("arm"), attrs.get("seed"), reason,
                   trial.values[0] if trial.values else None, dict(trial.params), attrs)

    @property
    def key(self) -> tuple | None:
        """(arm, seed) of a grid trial: set as user attrs when queued, copied by Optuna into retries."""
        return (self.arm, self.seed) if "arm" in self.attrs and "seed" in self.attrs else None

    @property
    def kind(self) -> str | None:
        """A failed trial's kind as the page and the table name it (``worker lost``, ``diverged``...)."""
        return (self.attrs.get(FAIL_KIND) or self.outcome.value) if self.outcome.failed else None


def _checked_for_writing(attrs: dict, schema: dict, where: str) -> dict:
    """``attrs`` if the schema names every key and each value is of its kind; else a ValueError: the writer's bug,
    found where it writes instead of by the report."""
    unknown = sorted(set(attrs) - set(schema))
    if unknown:
        raise ValueError(f"{where}: user attr(s) {unknown} are not in reports.record's schema; add them there")
    try:
        return checked_attrs(attrs, schema, where)
    except UserError as e:
        raise ValueError(str(e)) from None


def trial_attrs(attrs: dict) -> dict:
    """A trial's user attrs, checked against TRIAL_ATTRS (for enqueue_trial and create_trial)."""
    return _checked_for_writing(attrs, TRIAL_ATTRS, "a trial")


def write_trial(trial, attrs: dict) -> None:
    """Set these user attrs of a trial, checked against TRIAL_ATTRS."""
    for key, value in _checked_for_writing(attrs, TRIAL_ATTRS, f"trial #{trial.number}").items():
        trial.set_user_attr(key, value)


def write_study(study, attrs: dict) -> None:
    """Set these user attrs of a study, checked against STUDY_ATTRS. The "study" attr goes last: it marks the
    identity written, and a second command opening the study the moment it appears (check_study) must not read
    an identity key still missing as its value from BEFORE_RECORDED (seen: two hosts on a new PostgreSQL study, one
    refused because "precision" was not yet there and so read as fp32 against its bf16)."""
    checked = _checked_for_writing(attrs, STUDY_ATTRS, f"study {study.study_name!r}")
    for key in sorted(checked, key=lambda k: k == "study"):
        study.set_user_attr(key, checked[key])


def fail(trial, outcome: Outcome, reason: str) -> None:
    """Record why a trial failed (before it is told FAIL): what TrialRecord.of reads back as its outcome."""
    assert outcome.failed and outcome is not Outcome.LOST, outcome  # a lost trial is Optuna's to record
    write_trial(trial, {FAIL_KIND: outcome.value, FAIL_REASON: reason})


def set_aside(trial, why: str) -> None:
    """Mark a trial as bookkeeping (``why``: one of BOOKKEEPING_ATTRS), before it is told pruned."""
    assert why in BOOKKEEPING_ATTRS, why
    write_trial(trial, {why: True})
