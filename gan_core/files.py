"""Atomic file writes (a reader, or a crash, never sees a half-written file) and the cache folder."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gan_core.errors import UserError

CACHE_ENV = "MNIST_GAN_BENCH_CACHE"


def cache_dir() -> Path:
    """Where derived data is cached (parsed digits, real-image features): $MNIST_GAN_BENCH_CACHE or ~/.cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-gan-bench"


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a folder this process cannot write to: a path through a file, or a folder (the
    nearest existing parent of one still to be made) without write permission. ``what`` says what goes there,
    e.g. "the run (--out DIR)". Creates nothing, and touches nothing (not even the folder's mtime)."""
    path = Path(folder)
    existing = next((p for p in (path, *path.parents) if os.path.exists(p)), Path(path.anchor or "."))
    if not existing.is_dir():
        raise UserError(f"{existing} is a file, not a folder; choose a folder for {what}")
    # access(2) asks the kernel with this process's credentials and capabilities (root without
    # CAP_DAC_OVERRIDE is refused too), so the answer is what a write would meet
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {existing} (Permission denied); choose a folder you may write for {what}")


def check_writable_file(path: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a file path that cannot be written: an existing folder, or a place where the
    folder it goes into cannot be made or written."""
    if Path(path).is_dir():
        raise UserError(f"{path} is a folder; give a file name for {what}")
    check_writable(Path(path).parent, what)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """One dict per line; a torn last line (a process killed mid-append) is skipped, not fatal."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def content_sha256(obj: Any) -> str:
    """SHA-256 of what an object holds, not of how a file stores it: tensors (dtype, shape, bytes), numpy arrays,
    dicts, lists and scalars, nested. A checkpoint or a cache entry carries it and is checked against it when read
    back: torch.load and np.load take flipped bytes inside tensor data without a word."""
    h = hashlib.sha256()
    _hash_into(h, obj)
    return h.hexdigest()


def _hash_into(h, obj: Any) -> None:
    import numpy as np
    import torch

    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, torch.Tensor):
        h.update(f"{obj.dtype} {list(obj.shape)}".encode())
        # as bytes whatever the dtype (numpy has no bfloat16); on the CPU: a checkpoint is saved from there anyway
        h.update(obj.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"{{{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _hash_into(h, key)
            _hash_into(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"[{len(obj)}".encode())
        for item in obj:
            _hash_into(h, item)
    else:  # str, int, float, bool, None: repr tells them apart and round-trips floats
        h.update(f"{repr(obj)};".encode())


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    atomic_write(path, lambda p: torch.save(obj, p))
