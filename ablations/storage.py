"""Opening an Optuna storage from a URL, with heartbeats so that a killed worker's trial is retried.

- ``sqlite:///runs/ablations.db`` (default): one machine, local disk.
- ``postgresql://user:pass@host/db``: workers on several machines share one study.
- ``journal:PATH`` (or a path ending in ``.log``): Optuna's journal file, e.g. on a shared filesystem.
  The journal backend has no heartbeats: a worker killed mid-trial there is not retried automatically.
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage

from gan_core.errors import UserError

DEFAULT_URL = "sqlite:///runs/ablations.db"
MAX_RETRY = 2  # a trial whose worker died is re-run at most this often


def open_storage(url: str, heartbeat_s: float = 30.0) -> optuna.storages.BaseStorage:
    """The storage behind ``url``; an unreachable or malformed URL is a UserError (one line)."""
    if url.startswith("journal:") or url.endswith(".log"):
        path = Path(url.removeprefix("journal:").removeprefix("//"))
        if not path.parent.is_dir():
            raise UserError(f"journal storage folder {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UserError(f"storage {url!r} is not a URL; use sqlite:///FILE, postgresql://..., or journal:FILE")
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if url == DEFAULT_URL:  # the default lives under runs/, which we own
            folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise UserError(f"sqlite storage folder {folder} does not exist")
    for attempt in range(3):  # every pass returns, retries (a race) or raises
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what we rely on
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=max(1, round(heartbeat_s)),
                    grace_period=max(2, round(3 * heartbeat_s)),
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                    engine_kwargs={"pool_pre_ping": True},
                )
        except Exception as e:  # noqa: BLE001 - sqlalchemy/driver errors vary; the user needs one line
            # Workers that start together on an empty database race to create Optuna's tables; the
            # loser sees "duplicate key" / "already exists". The tables exist by then: try again.
            racing = any(w in str(e) for w in ("duplicate key", "already exists", "UniqueViolation"))
            if racing and attempt < 2:
                time.sleep(0.5 + random.random())
                continue
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot open storage {url!r}: {first}") from None
