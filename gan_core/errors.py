"""Exceptions that separate a user's mistake from a fault.

CLIs turn a ``UserError``, and an OSError the machine caused (``os_fault``: a full disk, a read-only or vanished
folder), into one line on stderr and exit status 2; anything else is a bug and keeps its traceback.
"""

import errno
import os
import re


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and what is valid."""


class ConfigError(UserError, ValueError):
    """A RunConfig field (or a flag that sets one) has an invalid value."""


class UnknownName(ConfigError):
    """A name looked up in a registry (study, budget, preset) that is not there."""

    def __init__(self, what: str, name, choices):
        super().__init__(f"unknown {what} {name!r}; choose one of: {', '.join(map(str, choices))}")


class DataError(UserError):
    """The requested data source cannot be read (missing files, empty folder...)."""


class Diverged(RuntimeError):
    """A loss or a weight became NaN/inf: ``step`` is the generator step and ``d_step`` the discriminator step
    where it was seen (both: at 5:1 the first D steps all happen at G step 0)."""

    def __init__(self, step: int, d_step: int, what: str):
        self.step, self.d_step, self.what = step, d_step, what
        super().__init__(f"diverged at {self.where}: {what} is not finite")

    @property
    def where(self) -> str:
        return f"G step {self.step}, D step {self.d_step}"


def mask_passwords(text: str) -> str:
    """A URL's password (postgresql://user:secret@host) replaced by ***, so that the text is fit to print."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", text)


def first_line(e: BaseException) -> str:
    """One line that says what went wrong: the first line of the innermost cause (Optuna and SQLAlchemy
    wrap the driver's "connection refused" or "file is not a database" in generic messages), with any
    URL password masked; the exception's type name when it has no message."""
    seen = {id(e)}
    # "raise X from None" hides its context (json's JSONDecodeError hides a StopIteration holding a bare offset)
    while (inner := e.__cause__ or (None if e.__suppress_context__ else e.__context__)) is not None \
            and id(inner) not in seen:
        seen.add(id(inner))
        e = inner
    text = str(e).strip()
    return mask_passwords(text.splitlines()[0]) if text else type(e).__name__


# What to do about a fault of the machine, not of the code, by errno: the command ends with one line naming the path
# (gan_core.cli). Writes are atomic (gan_core.files), so a failed one leaves nothing half-written behind.
FAULT_ADVICE = {
    errno.ENOSPC: "free space on that disk, or write elsewhere, and run the command again",
    errno.EDQUOT: "free space within your disk quota, or write elsewhere, and run the command again",
    errno.EROFS: "that file system is read-only: choose a folder on a writable one",
    errno.ENOENT: "the folder vanished while the command ran, or cannot be made there: check the path",
    errno.ENOTDIR: "a file stands where a folder must be: choose another path",
    errno.EEXIST: "a file stands where a folder must be: choose another path",
    errno.EISDIR: "a folder stands where a file must be: give a file name",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EACCES: "choose a place you may write (or read)",
    errno.EPERM: "choose a place you may write (or read)",
    errno.EFBIG: "the file is larger than that file system allows: write elsewhere",
    errno.ELOOP: "a symbolic link there points back at itself: check the path",
}


def os_fault(e: BaseException) -> str | None:
    """One line for an OSError that the machine, not the code, caused (a full disk, a read-only or vanished folder,
    a name too long): the path, what happened and what to do; None for any other error."""
    if not isinstance(e, OSError) or e.errno not in FAULT_ADVICE:
        return None
    path = e.filename2 or e.filename  # a rename names its target second
    where = f"{os.fsdecode(path)}: " if path is not None else ""
    return f"{where}{e.strerror or os.strerror(e.errno)}; {FAULT_ADVICE[e.errno]}"
