"""Atomic file writes (a reader, or a crash, never sees a half-written file) and the cache folder."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gan_core.errors import UserError

CACHE_ENV = "MNIST_GAN_BENCH_CACHE"


def cache_dir(given: str | os.PathLike | None = None) -> Path:
    """Where derived data is cached (parsed digits, real-image features): ``given`` (a --cache-dir), else
    $MNIST_GAN_BENCH_CACHE, else ~/.cache. One that cannot be written (a file, a folder without write permission)
    is refused, naming the setting to change, before anything is computed for it."""
    if given is not None:
        path, what = Path(given), "the cache (--cache-dir)"
    elif os.environ.get(CACHE_ENV):
        path, what = Path(os.environ[CACHE_ENV]).expanduser(), f"the cache (${CACHE_ENV})"
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-gan-bench"
        what = f"the cache (set ${CACHE_ENV})"
    check_writable(path, what)
    return path


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a folder this process cannot write to: a path through a file, or a folder (the
    nearest existing parent of one still to be made) without write permission. ``what`` says what goes there,
    e.g. "the run (--out DIR)". Creates nothing, and touches nothing (not even the folder's mtime)."""
    path = Path(folder)
    existing = _nearest(path)
    if not existing.is_dir():
        raise UserError(f"{existing} is a file, not a folder; choose a folder for {what}")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise UserError(f"{existing} is on a read-only file system; choose a folder on a writable one for {what}")
    # access(2) asks the kernel with this process's credentials and capabilities (root without
    # CAP_DAC_OVERRIDE is refused too), so the answer is what a write would meet
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {existing} (Permission denied); choose a folder you may write for {what}")
    check_names(path, existing, what)


def _nearest(path: Path) -> Path:
    """``path`` or its nearest parent that exists."""
    return next((p for p in (path, *path.parents) if os.path.exists(p)), Path(path.anchor or "."))


def check_names(path: Path, existing: Path, what: str) -> None:
    """Refuse a name below ``existing`` (the part of ``path`` still to be made) longer than its file system allows."""
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):  # no limit to ask for
        return
    for name in path.relative_to(existing).parts if path != existing else ():
        if len(os.fsencode(name)) > name_max:
            raise UserError(f"the name {name[:40]}... is {len(os.fsencode(name))} bytes long, more than the {name_max} "
                            f"its file system allows; choose a shorter one for {what}")


def check_writable_file(path: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a file path that cannot be written: an existing folder, a name too long, or a place
    where the folder it goes into cannot be made or written."""
    check_writable(Path(path).parent, what)
    check_names(Path(path), _nearest(Path(path).parent), what)
    if Path(path).is_dir():
        raise UserError(f"{path} is a folder; give a file name for {what}")


def _temporary_name(name: str) -> str:
    """The prefix of an atomic write's temporary (mkstemp adds 8 characters and the suffix): short enough for a
    file system's name limit whenever the name itself is."""
    return f".{name[:200]}."


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_name(path.name), suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from e
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):  # a full disk, a vanished folder...: name the file meant, not the temporary
            raise _naming(e, path) from e
        raise


@contextmanager
def naming(path: str | os.PathLike):
    """An OSError inside without a file name (a failed os.write or file.write: a full disk) names ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise _naming(e, Path(path)) from e


def _naming(e: OSError, path: Path) -> OSError:
    """The same error (its errno, so its subclass: FileNotFoundError...), about ``path``."""
    return OSError(e.errno, e.strerror, str(path)) if e.errno else e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_jsonl(path: str | os.PathLike, check: Callable[[dict, str], None] | None = None) -> list[dict]:
    """One dict per line, each passed to ``check(row, "PATH line N")`` if given. A torn last line (a process killed
    mid-append: no newline after it) is skipped; any other line that is not a JSON object (binary bytes, an edit) is
    a UserError naming it: a damaged file yields no numbers."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if n == len(lines):  # no newline after it: torn
                continue
            raise UserError(f"{where} is not JSON ({type(e).__name__}: {str(e)[:60]}); the file is damaged: remove "
                            "that line, or the run folder") from None
        if not isinstance(row, dict):
            raise UserError(f"{where} is not a JSON object; the file is damaged: remove that line, or the run folder")
        if check is not None:
            check(row, where)
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

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:
            kept = _KeptErrors(f)
            try:
                torch.save(obj, kept)
            except Exception:
                if kept.error is not None:
                    raise kept.error from None
                raise

    atomic_write(path, save)


class _KeptErrors:
    """A file that keeps the error of a failed write. torch's zip writer swallows it (a full disk) and fails later
    with "unexpected pos 9728 vs 9622"; the kept OSError (ENOSPC) is the one that names the fault."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()
