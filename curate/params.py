"""Typed parameters of a unit of work (a scoring pass, a selection rule): a frozen dataclass
built from keyword values, CLI strings coerced to the declared types, and one error line naming
the valid parameters when a name or a value is wrong. Also ``Amount``, the "fraction or count"
that top, random and coreset take.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from curate.errors import CurateError

T = TypeVar("T")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Amount:
    """How many candidates to keep: a fraction in (0, 1] (a float, or text with a '.') or a
    count >= 1 (an int, or text without one), as DataComp's ``--fraction`` and a plain count."""

    value: int | float

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise CurateError(f"amount {v!r} is neither a fraction in (0, 1] nor a count")
        if not v > 0:  # NaN too
            raise CurateError(f"amount {v} must be positive: a fraction in (0, 1] or a "
                              "count >= 1")
        if isinstance(v, float) and v > 1:
            raise CurateError(f"amount {v} is neither a fraction in (0, 1] nor a count "
                              "(write a count without a '.')")

    @classmethod
    def parse(cls, value: Any) -> Amount:
        """``value`` as an Amount: '0.3', 0.3 and '1.0' are fractions, '100' and 100 counts."""
        if isinstance(value, Amount):
            return value
        if isinstance(value, str):
            text = value.strip()
            if _INT.fullmatch(text):
                return cls(int(text))
            try:
                return cls(float(text))
            except ValueError:
                raise CurateError(f"amount {value!r} is neither a fraction in (0, 1] nor a "
                                  "count") from None
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return cls(int(value))
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return cls(float(value))
        return cls(value)

    @property
    def is_fraction(self) -> bool:
        return isinstance(self.value, float)

    def of(self, n: int, what: str) -> int:
        """The count this amount keeps of ``n`` candidates (a fraction: int(n * f), as the
        ClipCov notebook and DataComp's random baseline); zero or more than ``n`` is an error."""
        k = int(n * self.value) if self.is_fraction else int(self.value)
        if k > n:
            raise CurateError(f"{what}: budget {k} is larger than the {n} candidates")
        if k == 0:
            raise CurateError(f"{what}: budget {self.value} of {n} candidates selects nothing")
        return k

    def __str__(self) -> str:
        return str(self.value)


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


def coerce(value: str, kind: Any, name: str) -> Any:
    """A CLI string as the declared type ``kind`` of parameter ``name`` ('none' is None where
    the type allows it; a tuple is comma-separated)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value.lower() == "none" and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    if kind is Amount:
        return Amount.parse(value)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if typing.get_origin(kind) is tuple:
            return tuple(typing.get_args(kind)[0](v) for v in value.split(",") if v)
        return kind(value)
    except (TypeError, ValueError):
        raise CurateError(f"parameter {name}={value!r} is not a valid {_type_name(kind)}"
                          ) from None


def check(value: Any, kind: Any, name: str) -> Any:
    """A Python value for parameter ``name`` of type ``kind``: strings are coerced, numbers
    widened (an int is a float; an integral float an int), lists become tuples; a value of
    another type is an error."""
    if isinstance(value, str) and kind is not str:
        return coerce(value, kind, name)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if kind is Amount:
        return Amount.parse(value)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(check(v, args[0], name) for v in value)
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is float and real:
        return float(value)
    if kind is int and real and float(value).is_integer():
        return int(value)
    base = origin or kind
    if isinstance(base, type) and isinstance(value, base) and (kind is not int or real):
        return value
    raise CurateError(f"parameter {name}={value!r} is not a valid {_type_name(kind)}")


def make(cls: type[T], given: Mapping[str, Any] | None, owner: str) -> T:
    """``cls`` (a frozen parameter dataclass) from keyword values; ``owner`` names the unit in
    errors ("rule 'dedup'", "pass 'clip_score'"). An unknown name, a missing required one or an
    invalid value fails here, before anything runs, in one line naming the valid parameters."""
    known = {f.name: f for f in fields(cls)}
    names = ", ".join(known) or "(none)"
    given = dict(given or {})
    for k in given:
        if k not in known:
            raise CurateError(f"{owner} has no parameter {k!r}; its parameters: {names}")
    missing = [k for k, f in known.items() if k not in given and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise CurateError(f"{owner} needs {', '.join(missing)}; its parameters: {names}")
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{k: check(v, hints[k], k) for k, v in given.items()})
    except CurateError as e:
        raise CurateError(f"{owner}: {e}; its parameters: {names}") from None


def as_dict(params: Any) -> dict[str, Any]:
    """Every parameter by field name as plain JSON data (an Amount as its number)."""
    return {f.name: _plain(getattr(params, f.name)) for f in fields(params)}


def _plain(value: Any) -> Any:
    if isinstance(value, Amount):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return as_dict(value)
    return value
