"""Study storage URLs, parsed in one place for the runner (ablations, which writes) and the report (which reads).

- ``sqlite:///runs/ablations.db`` (default): one machine, local disk.
- ``postgresql://user:pass@host/db``: workers on several machines share one study.
- ``journal:PATH`` (or a path ending in ``.log``): Optuna's journal file, e.g. on a shared filesystem.

No Optuna here: opening is the caller's business (gan_core imports no Optuna).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gan_core.errors import UserError, mask_passwords

DEFAULT_URL = "sqlite:///runs/ablations.db"


@dataclass(frozen=True)
class StorageURL:
    url: str
    kind: str  # "journal", "sqlite" or "rdb" (any other SQLAlchemy URL: postgresql://...)
    path: Path | None  # the journal or SQLite file; None for a server or an in-memory SQLite database

    @property
    def is_default(self) -> bool:
        return self.url == DEFAULT_URL

    @property
    def in_memory(self) -> bool:
        """sqlite:///:memory: lives in one process and ends with it: no worker process, nor a later reader, sees it."""
        return self.kind == "sqlite" and self.path is None

    @property
    def masked(self) -> str:
        return mask_passwords(self.url)


def parse(url: str) -> StorageURL:
    """What kind of storage ``url`` names; anything that is not one of the three forms is a UserError."""
    if url.startswith("journal:") or url.endswith(".log"):
        return StorageURL(url, "journal", Path(url.removeprefix("journal:").removeprefix("//")))
    if "://" not in url:
        raise UserError(f"storage {url!r} is not a URL; use sqlite:///FILE, postgresql://..., or journal:FILE")
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        return StorageURL(url, "sqlite", None if path == ":memory:" else Path(path))
    return StorageURL(url, "rdb", None)
