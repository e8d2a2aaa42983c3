"""Exceptions that separate a user's mistake from a fault.

CLIs turn a ``UserError`` into one line on stderr and exit status 2; anything else is a bug or a
fault and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and what is valid."""


class ConfigError(UserError, ValueError):
    """A RunConfig field (or a flag that sets one) has an invalid value."""


class DataError(UserError):
    """The requested data source cannot be read (missing files, empty folder...)."""


class Diverged(RuntimeError):
    """A loss or a weight became NaN/inf. ``step`` is the generator step where it was seen."""

    def __init__(self, step: int, what: str):
        super().__init__(f"diverged at step {step}: {what} is not finite")
        self.step = step
        self.what = what
