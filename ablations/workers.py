"""Worker supervision: how many local workers a study gets, each one's settings, running them (in this process,
or spawned processes), and stopping them on SIGINT or SIGTERM without leaving a trial RUNNING or a worker
orphaned. A stop never lands inside the storage's database code (_stop_outside_storage)."""

from __future__ import annotations

import multiprocessing
import os
import signal

from ablations.settings import Settings
from ablations.trial_queue import work


def default_workers(device, gpus: int) -> int:
    """CUDA: one process per GPU (processes on one GPU time-slice it: ten workers on one H200 were no faster
    together than one), each packing its arm's seeds. CPU: one single-threaded worker per core, up to 8: small
    models keep one core busy each, while two threads per process lose to each other (measured on 2 cores: a
    1:1 DCGAN G step took 75 ms with one thread and 770 ms with two, a second process running)."""
    return gpus if device.type == "cuda" else max(1, min(os.cpu_count() or 1, 8))


def worker_settings(settings: Settings) -> list[Settings]:
    """Each worker's settings: on CUDA its base on its own GPU (what its trials' configs record), else the same."""
    from dataclasses import replace

    from gan_core.training.config import override

    if not settings.devices:
        return [settings] * settings.workers
    return [replace(settings, base=override(settings.base, {"device.device": d}), devices=(d,))
            for d in settings.devices]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM: the running trials are marked interrupted (ablations.trial), then the command exits with
    128 + the signal's number, as a shell expects of a process a signal stopped."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


# Code that a Stopped must not interrupt: the storage's database layers. Raised there, the exception can leave
# SQLAlchemy's connection pool half-updated (seen: the heartbeat thread then failed with "Should not reach"), or
# land in one of its weakref callbacks, run by the garbage collector, where Python swallows it with a traceback
# on stderr and the stop is lost (seen: sqlalchemy/event/registry.py _collection_gced).
STORAGE_CODE = ("/sqlalchemy/", "/optuna/storages/", "/alembic/")
STOP_RETRY_S = 0.02


def _stop_once(signum: int, frame) -> None:
    """Raise Stopped at the first stop signal and ignore the next ones: Ctrl-C reaches a worker twice (from the
    terminal and forwarded by the parent), and the second must not cut short marking its trial interrupted."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    _stop_outside_storage(signum, frame)


def _stop_outside_storage(signum: int, frame) -> None:
    """Raise Stopped, unless the main thread is inside the storage's code (STORAGE_CODE): then look again a moment
    later (SIGALRM), until it is out."""
    f = frame
    while f is not None:
        if any(part in f.f_code.co_filename for part in STORAGE_CODE):
            signal.signal(signal.SIGALRM, lambda _s, later: _stop_outside_storage(signum, later))
            signal.setitimer(signal.ITIMER_REAL, STOP_RETRY_S)
            return
        f = f.f_back
    raise Stopped(signum)


def run_workers(settings: Settings, ctx, study) -> list[int]:
    """Run the study's workers to the end: in this process for one, spawned processes (one thread each, see
    default_workers) for more. Returns the exit codes of the workers that failed. SIGINT or SIGTERM stops every
    worker, and Stopped is raised only once all have marked their trials and exited: none is left orphaned."""
    each = worker_settings(settings)
    if settings.workers == 1:
        # Ctrl-C too: Python's own KeyboardInterrupt lands wherever the main thread is, the storage's code included
        # (seen: SQLAlchemy's "Should not reach." and exit 1, or the stop lost and exit 0)
        previous = {s: signal.signal(s, _stop_once) for s in STOP_SIGNALS}
        try:
            work(each[0], ctx=ctx, study=study)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return []
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    mp = multiprocessing.get_context("spawn")
    asks = mp.Lock()
    procs = [mp.Process(target=_worker_process, args=(s, threads, asks)) for s in each]
    received: list[int] = []

    def forward(signum: int | None = None, _frame=None) -> None:
        if signum is not None:
            received.append(signum)
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        for p in procs:
            p.start()
        if received:  # a signal while they were starting: the workers started after it must stop too
            forward()
        for p in procs:
            p.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise Stopped(received[0])
    return [p.exitcode for p in procs if p.exitcode != 0]


def _worker_process(settings: Settings, threads: int, asks) -> None:
    try:
        for s in STOP_SIGNALS:
            signal.signal(s, _stop_once)
        _die_with_parent()
        work(settings, threads, asks=asks)
    except KeyboardInterrupt:
        pass


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies, even by kill -9 (whose SIGTERM handler never runs), so that
    no worker trains on for a study nobody waits for. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl: nobody will signal us
        raise Stopped(signal.SIGTERM)
