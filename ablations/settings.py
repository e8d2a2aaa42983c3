"""One study run's settings, and what they open: the study (checked to be this command's, and its record written:
write_record) and the trials' context.

The CLI (ablations.run) builds the settings from its arguments; a worker process (ablations.workers) receives
them pickled and opens the same study and context itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gan_core.errors import UserError, first_line, mask_passwords
from gan_core.training.config import RunConfig
from reports import record

PROG = "python -m ablations.run"  # the command that creates this package's studies (check_study names it)


@dataclass(frozen=True)
class Settings:
    """One study run's settings, validated; a spawned worker process receives them pickled."""

    study: str  # registry name
    base_name: str  # the preset every arm starts from
    base: RunConfig  # with the budget's shrink (model.shrink)
    base_why: str  # why the study starts from this base, when it is not the blog's setting
    budget: str  # budget name
    seeds: int
    storage: str
    heartbeat: float  # seconds between trial heartbeats
    study_name: str
    runs: str
    workers: int
    pack: int = 1  # seeds trained in one pass (1: one seed per pass)
    devices: tuple[str, ...] = ()  # CUDA: worker k's GPU (cuda:N), round-robin over --device; CPU: () (the base's)
    artifacts: str | None = None  # the artifact store's folder (reports.artifacts), or None


def open_study(settings: Settings, identity: dict | None = None):
    """The settings' study, created if new. With ``identity`` (what makes a study this command's: study_identity),
    a new study is marked with it and an existing one must carry it (check_study); without it (a worker started by
    a command that checked), the study is opened as it is."""
    import optuna

    from ablations.storage import open_storage
    from ablations.studies import REGISTRY

    spec = REGISTRY[settings.study]
    storage = open_storage(settings.storage, settings.heartbeat)
    if spec.is_grid:  # every arm x seed runs to the end: no sampling, no pruning
        sampler, pruner = optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    else:
        from ablations.budgets import BUDGETS

        b = BUDGETS[settings.budget]
        sampler = optuna.samplers.TPESampler(seed=0)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=b.eval_every)
    where = dict(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
    try:
        try:
            study = optuna.create_study(**where, direction="minimize", load_if_exists=identity is None)
            created = identity is not None
        except optuna.exceptions.DuplicatedStudyError:
            study, created = optuna.load_study(**where), False
        if created:  # first, so that a second command started with it finds the study marked as ours
            record.write_study(study, identity)
    except Exception as e:  # noqa: BLE001 - a storage that cannot hold the study: one line for the user
        raise UserError(f"cannot open study in {mask_passwords(settings.storage)!r}: {first_line(e)}") from None
    if identity is not None and not created:
        check_study(study, identity, settings)
    return study


# how long a study without its identity may be one another command created an instant ago: the identity is a dozen
# attr writes, one transaction each (Optuna has no batch), whose round trips to a remote server add up
IDENTITY_WAIT_S = 3.0


def study_identity(settings: Settings, ctx) -> dict:
    """The study user attrs that make results comparable: a study that holds other values is another experiment."""
    from ablations.budgets import BUDGETS

    # its arms too: Optuna refuses a trial whose "arm" choices differ from the study's earlier trials', so a study
    # run with other arms (the optimizer study's before its tuning phase) would fail every trial instead
    return {"study": settings.study, "base": settings.base_name, "budget": BUDGETS[settings.budget].to_dict(),
            "objective": ctx.objective, "data": ctx.base.data.source,
            "split": [len(ctx.split.train), len(ctx.split.heldout)], "extractor": ctx.reference.extractor_name,
            # the second judge's weights too: its FIDs from two versions of it would be ranked together
            "second_judge": ctx.reference.second_judge_name,
            "precision": settings.base.device.precision,
            "arms": [a.label for a in ctx.spec.arms],
            # and its tuning candidates, for the same reason (a sweep widened since: more "arm" choices)
            **({"tuning": ctx.spec.tuning.description()} if ctx.spec.tuning else {})}


def check_study(study, identity: dict, settings: Settings) -> None:
    """Refuse, before anything is trained or written, a study that is not this command's: of another kind, base,
    budget, objective, data or judge, with several objectives or another direction, not created by ablations.run,
    or holding attrs of the wrong type (reports.record's schema)."""
    import optuna

    from reports.record import STUDY_ATTRS, TrialRecord, checked_attrs

    what = f"study {settings.study_name!r} in {mask_passwords(settings.storage)!r}"
    way_out = "give this run another --study-name"
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MINIMIZE:
        directions = ", ".join(d.name.lower() for d in study.directions)
        raise UserError(f"{what} is a study to {directions} ({len(study.directions)} objective(s)); {PROG} "
                        f"minimises one, {identity['objective']}: {way_out}")
    waited = 0.0
    while "study" not in study.user_attrs and waited < IDENTITY_WAIT_S and not study.get_trials(deepcopy=False):
        time.sleep(0.1)  # another command may have created it an instant ago: its identity ends with "study"
        waited += 0.1
    try:
        attrs = checked_attrs(study.user_attrs, STUDY_ATTRS, f"study {settings.study_name!r}")
        for t in study.get_trials(deepcopy=False):
            TrialRecord.of(t, settings.study_name)
    except UserError as e:
        raise UserError(f"{e}; {way_out}") from None
    if "study" not in attrs:
        raise UserError(f"{what} was not created by {PROG} (it has no 'study' user attr: another program made it, or "
                        f"the command that made it stopped before marking it); {way_out}")
    for key, ours in identity.items():
        theirs = attrs.get(key, record.BEFORE_RECORDED.get(key, ours))  # unrecorded and unknown: nothing to compare
        if key == "budget" and theirs.get("name") == ours.get("name"):  # a budget redefined since
            # its note is prose; its seeds are the default --seeds, which a run may change
            diff = [k for k in ours if k not in ("note", "seeds") and theirs.get(k) != ours[k]]
            if diff:
                raise UserError(f"{what} holds another experiment: its {key} {ours['name']!r} differs in "
                                + ", ".join(f"{k} ({theirs.get(k)!r} there, {ours[k]!r} here)" for k in diff)
                                + f"; {way_out}")
        elif theirs != ours:
            shown = (_shown(key, theirs), _shown(key, ours))
            # the default precision depends on the CPU, so a study made elsewhere may need the flag named
            how = ": --no-amp trains in fp32, --amp in bf16 autocast" if key == "precision" else ""
            raise UserError(f"{what} holds another experiment: its {key} is {shown[0]!r}, this run's {shown[1]!r}; "
                            f"{way_out} (or run the one it holds{how})")


def _shown(key: str, value):
    """An identity value as a refusal names it: a budget by its name, a tuning phase by its first family's sweep."""
    if key == "budget":
        return value.get("name")
    if key == "tuning":
        first = value["families"][0]
        return (f"{len(first['values'])} {value['knob']} values a family ({first['arm']}: {min(first['values']):g}"
                f"-{max(first['values']):g})")
    return value


def make_context(settings: Settings):
    from ablations.budgets import BUDGETS
    from ablations.studies import REGISTRY
    from ablations.trial import Context
    from gan_core import devices
    from gan_core.judging.evaluation import Evaluator, Reference, default_n
    from gan_core.judging.metrics import MetricNames
    from gan_core.training import data
    from gan_core.training.config import override
    from reports import artifacts

    base = settings.base
    budget = BUDGETS[settings.budget]
    spec = REGISTRY[settings.study]
    split = data.load(base.data)
    # a train limit past the data fails now, not every trial
    for changes in [{}, *(a.changes for a in spec.trained_arms)]:
        data.training_images(split, override(base, changes).data)
    reference = Reference(split, device=devices.resolve(base.device.device))
    n = budget.eval_n or default_n(split)
    return Context(spec, budget, base, split, reference,
                   Evaluator(n=budget.eval_n_intermediate, split=split, reference=reference),
                   Path(settings.runs) / settings.study_name, MetricNames.for_count(n),
                   artifacts.open_store(settings.artifacts, create=True) if settings.artifacts else None)


def write_record(settings: Settings, ctx, study) -> None:
    """What every run of the command writes into its study before the workers start: the study's record, what the
    report shows (its identity, description, base arm, planned seeds, real-data floor)."""
    from ablations.budgets import BUDGETS
    from ablations.studies import REGISTRY, catalogue

    spec, budget = REGISTRY[settings.study], BUDGETS[settings.budget]
    attrs = study.user_attrs
    # opened without its identity (a test's, a worker's open_study): that first
    identity = study_identity(settings, ctx) if attrs.get("study") is None else {}
    record.write_study(study, {
        **identity, **spec.description(), "catalogue": catalogue(), "base_arm": base_arm(spec, settings.base),
        "base_why": settings.base_why, "shrink": settings.base.model.shrink,
        "seeds": max(settings.seeds, attrs.get("seeds", 0)),
        **({} if "floor" in attrs else {"floor": ctx.reference.floor(budget.eval_n)})})


def base_arm(spec, base) -> str | None:
    """The arm that trains the base itself (its changes change nothing): the one that must learn for the study
    to answer anything. None when every arm changes the base (optimizer on dcgan-cpu: no arm has its lr)."""
    from gan_core.training.config import override

    return next((a.label for a in spec.fixed_arms if override(base, a.changes) == base), None)


def share_artifacts(study, settings: Settings) -> str | None:
    """Record the study's artifact store (the report's default), or say what a server storage without one lacks:
    workers on other hosts cannot see this host's run folders."""
    from gan_core import storage
    from reports import artifacts

    if settings.artifacts:
        record.write_study(study, {artifacts.STORE: settings.artifacts})
        return None
    if storage.parse(settings.storage).kind == "rdb":
        return ("note: run folders stay on the host that trained them: a page built elsewhere lacks their sample "
                "grids and curves, and a retry elsewhere starts over; give every host --artifacts PATH, a folder "
                "they all see")
    return None
