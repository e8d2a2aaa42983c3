"""Opening an Optuna storage for writing, with heartbeats so that a killed worker's trial is retried.

URL forms: gan_core.storage. The journal backend has no heartbeats: a worker killed mid-trial there is
not retried automatically.
"""

from __future__ import annotations

import logging
import random
import time
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from gan_core import storage
from gan_core.errors import UserError, first_line

MAX_RETRY = 2  # a trial whose worker died is re-run at most this often

# SQLAlchemy's pool logs a cursor it could not close, with a full traceback on stderr, when Ctrl-C lands in the
# middle of a query ("Error closing cursor ... Cannot operate on a closed database"): a cleanup failure after the
# interrupt, which the command reports in one line. The pool logs nothing else a user could act on.
_POOL_LOG = logging.getLogger("sqlalchemy.pool")
_POOL_LOG.addHandler(logging.NullHandler())
_POOL_LOG.propagate = False


def open_storage(url: str, heartbeat_s: float = 30.0) -> optuna.storages.BaseStorage:
    """The storage behind ``url``; an unreachable or malformed URL is a UserError (one line)."""
    where = storage.parse(url)
    if where.kind == "journal":
        if not where.path.parent.is_dir():
            raise UserError(f"journal storage folder {where.path.parent} does not exist")
        from reports.load import open_journal  # here: the report's pandas is no business of a worker's

        return open_journal(where.path)
    if where.path is not None:
        if where.is_default:  # the default lives under runs/, which we own
            where.path.parent.mkdir(parents=True, exist_ok=True)
        if not where.path.parent.is_dir():
            raise UserError(f"sqlite storage folder {where.path.parent} does not exist")
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
            # loser sees "duplicate key" / "already exists" (PostgreSQL) or "UNIQUE constraint failed" (SQLite,
            # on alembic_version). The tables exist by then: try again.
            racing = any(w in str(e) for w in ("duplicate key", "already exists", "UniqueViolation",
                                               "UNIQUE constraint failed"))
            if racing and attempt < 2:
                time.sleep(0.5 + random.random())
                continue
            raise UserError(f"cannot open storage {where.masked!r}: {first_line(e)}") from None
