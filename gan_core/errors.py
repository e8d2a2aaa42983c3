"""Exceptions that separate a user's mistake from a fault.

CLIs turn a ``UserError`` into one line on stderr and exit status 2; anything else is a bug or a
fault and keeps its traceback.
"""

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
