"""A user's code named as ``module:attribute`` (``--generator mypkg.gen:sample``, ``--arch mymodels:build``).

The module is imported by its dotted name from ``sys.path``, the working folder first (as ``python -m`` puts
it there); a file path is not accepted, so that the name recorded in a config is the name a rerun imports.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path

from gan_core.errors import UserError


def split_spec(spec: str, flag: str) -> tuple[str, str]:
    """'pkg.mod:fn' -> ('pkg.mod', 'fn'); one line for anything else."""
    module, sep, attr = (spec or "").partition(":")
    if not sep or not module or not attr or not all(p.isidentifier() for p in (*module.split("."), *attr.split("."))):
        raise UserError(f"{flag} must be module:callable, e.g. mypkg.gan:build, got {spec!r}")
    return module, attr


def load(spec: str, flag: str):
    """The object ``spec`` names; it must be callable. Any failure to import is one line naming the spec."""
    module_name, attr = split_spec(spec, flag)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # a library caller (not python -m) still finds a module in its folder
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - a missing module and a module that fails on import are the same mistake
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"{flag} {spec}: cannot import {module_name} ({type(e).__name__}: {first})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{flag} {spec}: module {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{flag} {spec}: {attr} is a {type(obj).__name__}, not a callable")
    return obj


def source_sha256(spec: str, flag: str) -> str:
    """SHA-256 of the source file of the module ``spec`` names (the whole file: a helper the builder calls may
    live beside it), so that a rerun with changed code is noticed."""
    module_name, _ = split_spec(spec, flag)
    load(spec, flag)
    path = getattr(sys.modules[module_name], "__file__", None)
    source = Path(path).read_bytes() if path else b""  # a module without a file (built in): nothing to hash
    return hashlib.sha256(source).hexdigest()
