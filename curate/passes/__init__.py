"""Scoring passes: small declared units registered by name.

A pass declares its parameters (a frozen dataclass with defaults), the inputs it reads (folders
of the workspace and the columns it takes from each), the columns it writes, an optional
``prepare`` step (compute missing embeddings, fit a whitening, load a head) and a pure batch
function. ``curate.passes.score`` runs any of them through the one runner
(``curate.passes.runner``), as ``curate.passes.embed`` runs the embedding pass.

To add a pass, write ONE module in this package that calls ``register(Pass(...))`` at import:
every module of the package is discovered (``pkgutil``), so nothing else needs editing. A pass
whose outputs depend on model weights returns, in its ``prepare`` info, ``weights_sha256``:
``{name: sha256}`` of every weights file it used; the runner records it in the manifest and
refuses to add parts to a folder computed with other weights.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from curate import params as typed
from curate.errors import CurateError
from curate.workspace import Workspace, folder_name, model_key, prompt_key

Batch = dict[str, Any]  # column name -> numpy array (vectors as 2-D float32) or list
Inputs = dict[str, dict[str, str]]  # input folder ("samples", "embeddings/<key>") -> {col: alias}
P = TypeVar("P")  # the pass's parameter dataclass
S = TypeVar("S")  # what ``prepare`` hands every batch (a head, a whitening, a model; or None)


@dataclass(frozen=True, kw_only=True)
class Pass(Generic[P, S]):
    """One scoring pass: what it reads, what it writes and how."""

    name: str
    params: type[P]
    columns: tuple[str, ...]
    compute: Callable[[Batch, P, S], dict[str, Any]]  # (batch, params, state) -> columns
    inputs: Callable[[P], Inputs]  # params -> {folder: {column: alias in the batch}}
    prepare: Callable[[Workspace, P], tuple[S, dict[str, Any]]] | None = None  # -> (state, info)
    description: str = ""
    batch_size: int = 8192


def embeddings_input(model: str) -> str:
    """The input folder of ``model``'s image and caption embeddings."""
    return folder_name("embeddings", model_key(model))


def prompt_input(model: str, prefix: str) -> str:
    """The input folder of ``model``'s embeddings of ``prefix + caption``."""
    return folder_name("embeddings", prompt_key(model, prefix))


def scores_input(key: str) -> str:
    """The input folder of the score pass whose output key is ``key``."""
    return folder_name("scores", key)


_REGISTRY: dict[str, Pass] = {}


def register(p: Pass) -> Pass:
    _REGISTRY[p.name] = p
    return p


def _modules() -> list[str]:
    """Every module and subpackage of ``curate.passes``: a new file is a new pass."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def _load(mod: str) -> None:
    try:
        importlib.import_module(f"{__name__}.{mod}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{mod}":
            raise


def _load_all() -> None:
    for mod in _modules():
        _load(mod)


def get(name: str) -> Pass:
    """The pass called ``name`` (a pass usually lives in the module of the same name)."""
    if name not in _REGISTRY:
        if name in _modules():
            _load(name)
        if name not in _REGISTRY:
            _load_all()
    if name not in _REGISTRY:
        raise CurateError(f"unknown pass {name!r}; passes: {', '.join(sorted(_REGISTRY))} "
                          "(see `curate score --list`)")
    return _REGISTRY[name]


def list_passes() -> list[Pass]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def make_params(p: Pass[P, Any], given: dict[str, Any] | None) -> P:
    """The pass's parameter dataclass from keyword values (``curate.params.make``: strings
    from the CLI are coerced); an unknown name or a bad value fails before anything runs."""
    return typed.make(p.params, given, f"pass {p.name!r}")


def key(p: Pass[P, Any], params: P) -> str:
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


def as_dict(values: Any) -> dict[str, Any]:
    """The parameters as the manifest records them."""
    return typed.as_dict(values)
