"""The trial queue: grid studies queue every arm x seed once (enqueue_missing), and workers pop queued trials
(or ask new ones, for a searched study) until none is left (work), one trial at a time or an arm's seeds in one
pass (work_pass). A trial is known by its (arm, seed) key, and what happened to it by its outcome, both read from
its record (reports.record.TrialRecord)."""

from __future__ import annotations

import math
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from functools import partial

from ablations.settings import Settings, make_context, open_study
from reports.record import Outcome, TrialRecord, trial_attrs, write_study


def enqueue_missing(study, spec, seeds: int, by_arm: bool = False) -> int:
    """Queue every arm x seed that is neither done, running, queued nor finally failed. Returns how many.

    Seed by seed, so that every arm has a result early; arm by arm (``by_arm``) when the seeds of an arm train
    in one pass, so that a worker's next asks are one arm's seeds. A study with a tuning phase (Study.tuning) queues
    its tuning trials first, and its verdict arms only once their choice is made (enqueue_verdict)."""
    queued = 0
    if spec.tuning is not None and TUNED not in study.user_attrs:  # the tuning phase is still open
        tuning = spec.tuning
        queued = _enqueue(study, [(c.label, seed, {"phase": "tuning", "family": f.label})
                                  for seed in tuning.seeds for f in tuning.families for c in f.candidates], by_arm)
    return queued + enqueue_verdict(study, spec, seeds, by_arm)


TUNED = "tuned"  # the study attr that records each tuned arm's winning candidate: {tuned arm: candidate label}


def enqueue_verdict(study, spec, seeds: int, by_arm: bool = False) -> int:
    """Queue the verdict's arm x seed pairs still missing (seeds 0..seeds-1). With a tuning phase, only once every
    tuning trial is settled: the choice (tuning_choice) is then recorded in the study (TUNED), and each tuned arm's
    trials carry their candidate ("candidate"), whose changes they train. Returns how many were queued."""
    chosen = {}
    if spec.tuning is not None:
        chosen = study.user_attrs.get(TUNED) or tuning_choice(study, spec)
        if chosen is None:
            return 0
        if TUNED not in study.user_attrs:
            write_study(study, {TUNED: chosen})
    return _enqueue(study, [(arm.label, seed, {"candidate": chosen[arm.label]} if arm.label in chosen else {})
                            for seed in range(seeds) for arm in spec.arms], by_arm)


def queue_next_phase(study, spec, seeds: int, by_arm: bool = False) -> int:
    """For a worker with nothing left to run: the verdict phase, if the tuning phase has just settled, else nothing.
    It never queues a failed trial again (a rerun of the command does), so a trial that fails every time cannot keep
    the workers busy for ever."""
    if spec.tuning is None or TUNED in study.user_attrs:
        return 0
    return enqueue_verdict(study, spec, seeds, by_arm)


def tuning_choice(study, spec) -> dict[str, str] | None:
    """{tuned arm: its family's candidate with the lowest objective on the tuning seeds} (reports.stats.best_of: a
    failed or diverged tuning trial counts as worst), from the stored trials alone, so that every worker and every
    rerun makes the same choice; None while a tuning trial is queued, running, or not yet tried."""
    from reports import stats

    values, failed, pending = {}, set(), set()
    for t in map(TrialRecord.of, study.get_trials(deepcopy=False)):
        if t.key is None or t.attrs.get("phase") != "tuning" or t.outcome is Outcome.BOOKKEEPING:
            continue
        if t.outcome is Outcome.COMPLETE:
            values[t.key] = t.value
        elif t.outcome.failed:
            failed.add(t.key)
        else:
            pending.add(t.key)
    chosen = {}
    for family in spec.tuning.families:
        keys = [(c.label, seed) for c in family.candidates for seed in spec.tuning.seeds]
        if any(k not in values and (k in pending or k not in failed) for k in keys):
            return None
        # ties (every candidate failed) go to the candidate nearest the family's usual value
        ranked = sorted(zip(family.candidates, family.values, strict=True),
                        key=lambda cv: abs(math.log(cv[1] / family.usual)))
        chosen[family.label] = stats.best_of({c.label: {seed: values.get((c.label, seed)) for seed in spec.tuning.seeds}
                                              for c, _ in ranked})
    return chosen


def _enqueue(study, pairs: list[tuple[str, int, dict]], by_arm: bool) -> int:
    """Queue the (arm, seed, extra user attrs) pairs that are neither done, running, queued nor finally failed."""
    taken = set()
    for t in map(TrialRecord.of, study.get_trials(deepcopy=False)):
        # done, running, queued, or a failure that is the arm's own: not queued again
        if t.key is not None and (t.outcome.is_result or t.outcome in (Outcome.RUNNING, Outcome.QUEUED)):
            taken.add(t.key)
    if by_arm:
        arms = list(dict.fromkeys(arm for arm, _, _ in pairs))
        pairs = sorted(pairs, key=lambda pair: arms.index(pair[0]))  # stable: each arm's seeds stay in order
    queued = 0
    for arm, seed, extra in pairs:
        if (arm, seed) not in taken:
            study.enqueue_trial({"arm": arm, "seed": seed}, user_attrs=trial_attrs({"arm": arm, "seed": seed, **extra}))
            queued += 1
    return queued


def work(settings: Settings, threads: int | None = None, ctx=None, study=None, asks=None) -> None:
    """A worker: run queued trials (grid) or new ones (searched) until the study is done.

    ``ctx`` and ``study`` are passed in-process; a worker process builds its own. ``asks``: a lock the workers of
    one host share (run_workers), held while a worker asks for a pass's trials (see asking).
    """
    import optuna
    from optuna.trial import TrialState

    from ablations.storage import open_storage

    _set_up_worker(settings, threads)
    study = study or open_study(settings)
    ctx = ctx or make_context(settings)
    # a packed pass keeps its trials' heartbeats itself, through its own handle on the storage (optuna.Study has no
    # public one): opened once per worker, not once per pass
    beats_to = open_storage(settings.storage, settings.heartbeat) if settings.pack > 1 else None
    # An idle worker looks again every second at most: it waits for the last trials of other workers, and a
    # study ends only when its last worker sees them finished (at heartbeat / 2, that was 15 s late by default)
    poll = min(1.0, max(0.5, settings.heartbeat / 2))
    # How long an idle worker waits for running trials: long enough for a dead worker's trial to go
    # stale (3 heartbeats) and be queued again. Live trials of other workers are theirs to finish.
    patience = 3 * settings.heartbeat + 2 * poll
    idle_since = None
    while True:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, then queued again
        trials = study.get_trials(deepcopy=False)
        if ctx.spec.is_grid:
            if not any(t.state == TrialState.WAITING for t in trials) and ctx.spec.tuning is not None:
                with asking(asks):  # one local worker queues the verdict phase, the others then find it queued
                    queue_next_phase(study, ctx.spec, settings.seeds, settings.pack > 1)
                trials = study.get_trials(deepcopy=False)  # with what this worker or another has just queued
            if not any(t.state == TrialState.WAITING for t in trials):
                running = sum(t.state == TrialState.RUNNING for t in trials)
                idle_since = idle_since or time.monotonic()
                if running and time.monotonic() - idle_since < patience:
                    time.sleep(poll)
                    continue
                if running:
                    print(f"{running} trial(s) still running in other workers; this worker is done", flush=True)
                return
            idle_since = None
        elif sum(t.state != TrialState.WAITING for t in trials) >= ctx.budget.joint_trials:  # running ones count
            return
        _run_next(study, ctx, settings.pack, sum(t.state == TrialState.WAITING for t in trials), asks, beats_to)


def _run_next(study, ctx, pack: int, waiting: int, asks, beats_to) -> None:
    """The worker's next trial (study.optimize's one), or its next pass of up to ``pack`` queued trials."""
    from ablations.trial import objective

    try:
        if pack > 1:
            work_pass(study, ctx, min(pack, waiting), asks, beats_to)
        else:
            study.optimize(partial(objective, ctx), n_trials=1, catch=(Exception,), callbacks=[print_trial])
    except ValueError as e:
        # On SQLite two workers can pop the same queued trial (the pop is not atomic there); the
        # one that finishes second cannot record it again. The trial is done: go on.
        if "Cannot tell a" not in str(e):
            raise


def _set_up_worker(settings: Settings, threads: int | None) -> None:
    """This process as a worker: its threads, its GPU, and Optuna's logs and warnings quiet."""
    import optuna

    from gan_core import devices

    if threads:
        devices.set_threads(threads)
    devices.pin(settings.base.device.device)  # a library's bare 'cuda' (torch-fidelity's) is this worker's GPU
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print one line per trial ourselves
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # work_pass asks for trials itself and keeps their heartbeats as study.optimize does; Optuna warns at every ask
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def work_pass(study, ctx, n: int, asks=None, storage=None) -> None:
    """Ask for n queued trials and train each arm's among them in one pass (ablations.trial.run_pass), each trial
    told as soon as its outcome is known: what study.optimize does for one trial, heartbeats included, for several
    at once. A trial that ends without an outcome (an interrupt, a fault) is told failed, as optimize does.
    ``storage``: where the heartbeats go, the study's storage opened for them (none without it)."""
    import optuna
    from optuna.trial import TrialState

    from ablations.trial import run_pass

    trials, beats, finished = [], {}, set()

    def finish(trial, outcome) -> None:
        beats.pop(trial.number).join()  # as optimize: the heartbeat stops before the trial is told
        finished.add(trial.number)
        if isinstance(outcome, optuna.TrialPruned):
            state = {"state": TrialState.PRUNED}
        elif outcome is None or isinstance(outcome, BaseException):
            state = {"state": TrialState.FAIL}
        else:
            state = {"values": outcome}
        try:
            print_trial(study, study.tell(trial, **state))
        except ValueError as e:  # SQLite's double pop, as in work(): the other worker told it
            if "Cannot tell a" not in str(e):
                raise

    try:
        with asking(asks):
            for _ in range(n):  # one at a time: no trial of ours is ever RUNNING without a heartbeat
                trial = study.ask()
                trials.append(trial)
                beats[trial.number] = Heartbeat(storage, study.study_name, trial.number)
                beats[trial.number].start()
        by_arm: dict = {}
        for trial in trials:
            by_arm.setdefault(trial.user_attrs.get("arm"), []).append(trial)
        for group in by_arm.values():
            run_pass(ctx, group, finish)
    finally:
        errors = []
        for trial in trials:
            if trial.number not in finished:
                try:
                    finish(trial, None)
                except Exception as e:  # the others must still be told; the first error is raised below
                    errors.append(e)
        if errors and sys.exc_info()[0] is None:
            raise errors[0]


class Heartbeat:
    """A trial's heartbeat while a pass trains it, to .start() and .join(): what study.optimize keeps for its trial,
    so that a worker killed mid-pass leaves trials that go stale and are retried. Optuna 5 has no public way to
    keep one for a trial asked outside study.optimize (study.ask warns "Heartbeat of storage is supposed to be
    used with Study.optimize"), and study.optimize cannot run a pass: it trains its trials one at a time, or in
    threads of their own, where a stop signal (Python runs handlers in the main thread) would not interrupt the
    training. So the heartbeat is recorded here, through the storage's public methods, as Optuna's own thread
    does: at once, then every heartbeat interval. A storage without heartbeats (journal, or None) records none."""

    def __init__(self, storage, study_name: str, number: int):
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._beat = None
        if interval:
            study_id = storage.get_study_id_from_name(study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            self._beat = partial(storage.record_heartbeat, trial_id)
        self._interval, self._stop, self._thread = interval, threading.Event(), None

    def _run(self) -> None:
        self._beat()
        while not self._stop.wait(self._interval):
            self._beat()

    def start(self) -> None:
        if self._beat is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def join(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


ASK_LOCK_S = 30.0


@contextmanager
def asking(lock):
    """Hold the host's ask lock while asking for a pass's trials: queued trials come arm by arm, and workers that
    ask at the same moment (every GPU's, as a study starts) would otherwise interleave their asks and each get
    one seed of every arm, packing nothing (seen: two workers, two arms, four passes of one seed). Workers on
    other hosts can still interleave with these: their passes are then smaller, never wrong. Asks take
    milliseconds: a lock held longer than ASK_LOCK_S is a dead worker's (kill -9), and is passed over."""
    held = lock is not None and lock.acquire(timeout=ASK_LOCK_S)
    try:
        yield
    finally:
        if held:
            lock.release()


def print_trial(study, trial) -> None:
    t = TrialRecord.of(trial)
    if t.outcome is Outcome.BOOKKEEPING:
        return
    what = f"{study.study_name} #{t.number} {t.attrs.get('arm', '?')} seed {t.attrs.get('seed', '?')}"
    if t.outcome is Outcome.COMPLETE:
        wall = t.attrs.get("spent", {}).get("wall_s", 0)
        print(f"{what}: {t.value:.2f} ({wall:.0f} s training)", flush=True)
    else:
        print(f"{what}: {t.state.lower()} ({t.reason or 'see the trial'})", flush=True)
