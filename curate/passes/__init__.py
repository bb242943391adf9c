"""Scoring passes: small declared units registered by name.

A pass declares its parameters (a frozen dataclass with defaults), the inputs it reads (folders
of the workspace and the columns it takes from each), the columns it writes, an optional
``prepare`` step (compute missing embeddings, fit a whitening, load a head) and a pure batch
function. ``curate.passes.score`` runs any of them through the one runner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from curate.errors import CurateError

Batch = dict[str, Any]  # column name -> numpy array (vectors as 2-D float32) or list


@dataclass(frozen=True)
class Pass:
    """One scoring pass: what it reads, what it writes and how."""

    name: str
    params: type
    columns: tuple[str, ...]
    compute: Callable[[Batch, Any, Any], dict[str, Any]]  # (batch, params, state) -> columns
    inputs: Callable[[Any], dict[str, dict[str, str]]]  # params -> {folder: {col: alias}}
    prepare: Callable[[Any, Any], Any] | None = None  # (workspace, params) -> state
    description: str = ""
    batch_size: int = 8192


_MODULES = ("text_stats", "image_stats", "clip_score", "typicality", "aesthetic", "reward",
            "concreteness")
_REGISTRY: dict[str, Pass] = {}


def register(p: Pass) -> Pass:
    _REGISTRY[p.name] = p
    return p


def _load(mod: str) -> None:
    try:
        importlib.import_module(f"curate.passes.{mod}")
    except ModuleNotFoundError as e:
        if e.name != f"curate.passes.{mod}":
            raise


def _load_all() -> None:
    for mod in _MODULES:
        _load(mod)


def get(name: str) -> Pass:
    """The pass called ``name`` (each pass lives in the module of the same name)."""
    if name in _MODULES:
        _load(name)
    else:
        _load_all()
    if name not in _REGISTRY:
        raise CurateError(f"unknown pass {name!r}; passes: {', '.join(sorted(_REGISTRY))} "
                          "(see `curate score --list`)")
    return _REGISTRY[name]


def list_passes() -> list[Pass]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _coerce(value: str, kind: Any, name: str) -> Any:
    """A CLI string as the declared type of parameter ``name``."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value.lower() == "none" and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if typing.get_origin(kind) is tuple:
            return tuple(typing.get_args(kind)[0](v) for v in value.split(",") if v)
        return kind(value)
    except (TypeError, ValueError):
        raise CurateError(f"parameter {name}={value!r} is not a valid "
                          f"{getattr(kind, '__name__', kind)}") from None


def make_params(p: Pass, given: dict[str, Any] | None) -> Any:
    """The pass's parameter dataclass from keyword values (strings from the CLI are coerced);
    an unknown name fails before anything runs."""
    given = dict(given or {})
    known = {f.name: f for f in fields(p.params)}
    hints = typing.get_type_hints(p.params)
    for k in given:
        if k not in known:
            raise CurateError(f"pass {p.name!r} has no parameter {k!r}; its parameters: "
                              f"{', '.join(known) or '(none)'}")
    values = {k: _coerce(v, hints[k], k) if isinstance(v, str) and hints[k] is not str else v
              for k, v in given.items()}
    if any(isinstance(v, list) for v in values.values()):
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return p.params(**values)


def key(p: Pass, params: Any) -> str:
    """Output folder key: the pass name plus every parameter that differs from its default."""
    default = p.params()
    parts = [p.name]
    for f in fields(params):
        v = getattr(params, f.name)
        if v != getattr(default, f.name):
            text = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
            safe = re.sub(r"[^A-Za-z0-9._,=-]+", "-", text)
            if len(safe) > 60:  # a long value (a path) keeps its start plus a hash of the whole
                safe = f"{safe[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
            parts.append(f"{f.name}={safe}")
    return "--".join(parts)


def as_dict(params: Any) -> dict:
    return dataclasses.asdict(params)
