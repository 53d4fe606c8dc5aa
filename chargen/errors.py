"""The one exception type chargen raises for anything a user can fix, and the type check of option values."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing


class ChargenError(ValueError):
    """Bad input, a bad option or a bad file: the message is a complete one-line explanation."""


class OptionError(ChargenError):
    """An option value out of its range: the command line reports it as a usage error."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to one line, or its type where it has none: what a one-line error can quote."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "a table", list: "a list", tuple: "a list"}


def _holds(value: object, kind: type) -> bool:
    """isinstance, except that a bool is no number and a whole number is also a float."""
    if typing.get_origin(kind) in (list, tuple):  # list[X] or tuple[X, ...]: a list or tuple of X
        return isinstance(value, typing.get_origin(kind)) and all(_holds(v, typing.get_args(kind)[0]) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def check_types(options: object) -> None:
    """Every field of a dataclass of options holds a value of its declared type, or an OptionError says which does not."""
    hints = typing.get_type_hints(type(options))
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        hint = hints[field.name]
        kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if value is None and type(None) in kinds or any(_holds(value, k) for k in kinds if k is not type(None)):
            continue
        wanted = " or ".join(KINDS.get(typing.get_origin(k) or k, k.__name__) for k in kinds if k is not type(None))
        raise OptionError(f"{field.name.replace('_', '-')} must be {wanted}, not {value!r}")


SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1 (it wraps a negative one round)


def check_seed(seed: int | None) -> None:
    """A seed torch's generators take whole: a larger or negative one is refused, not wrapped round."""
    if seed is not None and not 0 <= seed < SEED_LIMIT:
        raise OptionError(f"seed must be a whole number from 0 to {SEED_LIMIT - 1}, not {seed}")


def warn(message: str) -> None:
    """A one-line warning where a user of the command line sees it (Python's warnings are filtered and multi-line)."""
    sys.stderr.write(f"chargen: warning: {message}\n")
