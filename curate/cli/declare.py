"""How a verb is declared: a frozen ``Verb`` (name, help, handler, options) from which both its
argparse subparser and its dispatch come, and ``Lib``, a default read from the library.

A default that a library function or parameter dataclass already has is never copied here:
``Lib("curate.synth:make_pool", "n")`` reads it from ``inspect.signature`` when the verb's
parser is filled, so changing the library's default changes the command line. A verb's parser
is filled on first use only, so ``curate info`` never imports torch for ``curate evaluate``'s
defaults.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from curate.errors import CurateError
from curate.workspace import DEFAULT_WORKSPACE

Handler = Callable[[argparse.Namespace], "int | None"]


@dataclass(frozen=True)
class Lib:
    """A value owned by the library: ``module:name`` (an attribute, e.g. a constant) or, with
    ``param``, the default of that parameter of the function or dataclass ``module:name``."""

    target: str
    param: str | None = None

    def value(self) -> Any:
        module, _, name = self.target.partition(":")
        obj = getattr(importlib.import_module(module), name)
        if self.param is None:
            return obj
        default = inspect.signature(obj).parameters[self.param].default
        if default is inspect.Parameter.empty:
            raise TypeError(f"{self.target}({self.param}) has no default")
        return default


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its flags (or positional name) and keywords. A ``Lib`` as
    ``default`` or ``choices`` is resolved when the parser is filled; a ``Lib`` default is
    appended to the help as ``(default: ...)`` unless the help mentions it. ``help`` may be a
    function returning the text when it quotes a library value. Arguments sharing ``group``
    are mutually exclusive."""

    flags: tuple[str, ...]
    kw: Mapping[str, Any] = field(default_factory=dict)
    group: str | None = None

    def add_to(self, p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
        kw = {k: v.value() if isinstance(v, Lib) else v for k, v in self.kw.items()}
        if callable(kw.get("help")):
            kw["help"] = kw["help"]()
        if isinstance(self.kw.get("default"), Lib) and "%(default)" not in kw.get("help", ""):
            kw["help"] = f"{kw.get('help', '')} (default: %(default)s)".lstrip()
        p.add_argument(*self.flags, **kw)


def arg(*flags: str, group: str | None = None, **kw: Any) -> Arg:
    """``arg("-n", type=int, default=Lib(...), help=...)``: add_argument's own spelling."""
    return Arg(flags, kw, group)


@dataclass(frozen=True)
class Verb:
    """One command: ``curate NAME``, its one-line help (and optional longer description), the
    handler that runs it (returns an exit status, or None for 0) and its arguments."""

    name: str
    help: str
    run: Handler
    args: tuple[Arg, ...] = ()
    description: str | None = None

    def fill(self, p: argparse.ArgumentParser) -> None:
        groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for a in self.args:
            if a.group is None:
                a.add_to(p)
            else:
                if a.group not in groups:
                    groups[a.group] = p.add_mutually_exclusive_group()
                a.add_to(groups[a.group])


class VerbParser(argparse.ArgumentParser):
    """A verb's subparser whose arguments are added the first time it parses or prints help
    (``curate --help`` lists verbs without importing what their defaults live in)."""

    def __init__(self, *args: Any, verb: Verb | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._verb = verb

    def fill(self) -> None:
        if self._verb is not None:
            verb, self._verb = self._verb, None
            verb.fill(self)
            self.set_defaults(_run=verb.run)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.fill()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.fill()
        return super().format_help()

    def format_usage(self) -> str:
        self.fill()
        return super().format_usage()


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``--param K=V`` options (score and sql) as a dict; the first that is not ``K=V`` is a
    one-line error."""
    given: dict[str, str] = {}
    for kv in pairs:
        k, eq, v = kv.partition("=")
        if not eq or not k.strip():
            raise CurateError(f"--param {kv!r} must look like name=value")
        given[k.strip()] = v
    return given


def positive_int(text: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return n


WORKSPACE = arg("-w", "--workspace", default=DEFAULT_WORKSPACE,
                help=f"workspace directory (default: ./{DEFAULT_WORKSPACE})")
ENGINE = (
    arg("--engine", choices=("local", "ray"), default=Lib("curate.passes.score:score", "engine"),
        help="ray: compute parts on a Ray actor pool (pip install 'curate[ray]')"),
    arg("--address", help="Ray cluster to join (auto, ray://HOST:10001; default: start a "
        "local one)"),
    arg("--actors", type=int, help="Ray actors (default: one per GPU, else per CPU)"),
)
ALLOW_PARTIAL = arg("--allow-partial", action="store_true",
                    help="read a workspace with incomplete passes (the rows there are) instead "
                    "of refusing")
