"""What every CLI of the project shares: one-line errors with exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gan_core.errors import Diverged, UserError, os_fault

USAGE_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (what is wrong, what is valid) instead of usage + error."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(USAGE_ERROR)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None, prog: str = "gan_core") -> int:
    """Run a CLI's main; a UserError becomes one line on stderr and exit status 2."""
    try:
        return main(argv) or 0
    except UserError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return USAGE_ERROR
    except OSError as e:  # a full disk, a read-only or vanished folder: one line that says what to do
        if (line := os_fault(e)) is None:
            raise
        sys.stderr.write(f"{prog}: error: {line}\n")
        return USAGE_ERROR
    except Diverged as e:  # a fault, not a mistake: exit 1, but still one readable line
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
