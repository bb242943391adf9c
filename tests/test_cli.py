"""The command line: every verb declared once, defaults read from the library (not copied),
one-line errors, and a closed stdout that ends quietly."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from curate.cli import VERBS, build_parser, main
from curate.cli.declare import parse_params
from curate.cli.select import own_options
from curate.errors import CurateError

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
EVERY_VERB = {"synth", "ingest", "captions", "info", "models", "demo", "embed", "caption",
              "index", "score", "fit-aesthetic", "select", "evaluate", "map", "render", "sql",
              "export", "card", "verify", "explore"}


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True,
                          text=True, timeout=300, env=ENV)


def shell(line: str) -> subprocess.CompletedProcess:
    """``line`` run by bash; its status is the first command's of the pipe."""
    return subprocess.run(["bash", "-c", f"{line}; exit ${{PIPESTATUS[0]}}"],
                          capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def ws(ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ingested pool the CLI may write views and selections into."""
    dest = tmp_path_factory.mktemp("cli") / "ws"
    shutil.copytree(ingested, dest)
    return dest


def test_every_verb_is_declared_once_and_listed_in_help() -> None:
    names = [v.name for v in VERBS]
    assert sorted(names) == sorted(EVERY_VERB)  # none lost, none twice
    r = curate("--help")
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("    ")
              and line.split()[0] in EVERY_VERB}
    assert listed == EVERY_VERB
    for v in VERBS:
        assert v.help in " ".join(r.stdout.split()), v.name


@pytest.mark.parametrize("verb", sorted(EVERY_VERB))
def test_every_verb_prints_its_help(verb: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: curate {verb}") and "--help" in out


def library_defaults() -> list[tuple[list[str], str, Any, str]]:
    """(argv, option dest, library callable or dataclass, its parameter) for every option
    whose default belongs to the library."""
    from curate.demo import demo
    from curate.evaluate import evaluate
    from curate.export import export
    from curate.ingest import ingest
    from curate.maps import MapParams, make_map, render_map
    from curate.passes.aesthetic_fit import fit_aesthetic
    from curate.passes.embed import embed
    from curate.passes.score import score
    from curate.sql import write_result
    from curate.synth import make_pool
    synth, fit = ["synth", "OUT"], ["fit-aesthetic", "labels.parquet", "-o", "head.pth"]
    return [
        (synth, "n", make_pool, "n"), (synth, "seed", make_pool, "seed"),
        (synth, "shard_size", make_pool, "shard_size"), (synth, "image_size", make_pool, "size"),
        (synth, "image_format", make_pool, "image_format"),
        (["ingest", "x.tar"], "max_pixels", ingest, "max_pixels"),
        (["embed"], "model", embed, "model"), (["embed"], "batch_size", embed, "batch_size"),
        (["score"], "engine", score, "engine"),
        (fit, "model", fit_aesthetic, "model"), (fit, "epochs", fit_aesthetic, "epochs"),
        (fit, "seed", fit_aesthetic, "seed"),
        *((["evaluate", "s"], p, evaluate, p) for p in ("steps", "batch_size", "seed",
                                                         "heldout_n")),
        (["map"], "embedding", make_map, "embedding"), (["map"], "name", make_map, "name"),
        *((["map"], p, MapParams, p) for p in ("sample", "clusters", "seed")),
        (["render"], "map", render_map, "name"), (["render"], "color", render_map, "color"),
        (["render"], "size", render_map, "size"),
        (["sql"], "format", write_result, "fmt"),
        (["export", "s", "out"], "verify", export, "verify"),
        (["export", "s", "out"], "format", export, "format"),
        (["demo"], "n", demo, "n"), (["demo"], "seed", demo, "seed"),
    ]


def set_default(monkeypatch: pytest.MonkeyPatch, obj: Any, param: str, value: Any) -> None:
    """Change the default of ``param`` of function (or dataclass) ``obj`` for this test."""
    fn = inspect.unwrap(obj.__init__ if inspect.isclass(obj) else obj)  # under @writes
    if fn.__kwdefaults__ and param in fn.__kwdefaults__:
        monkeypatch.setattr(fn, "__kwdefaults__", {**fn.__kwdefaults__, param: value})
        return
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    with_default = names[len(names) - len(fn.__defaults__):]
    monkeypatch.setattr(fn, "__defaults__", tuple(
        value if n == param else d for n, d in zip(with_default, fn.__defaults__, strict=True)))


def test_defaults_are_the_library_defaults_not_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = library_defaults()
    for argv, dest, obj, param in cases:
        want = inspect.signature(obj).parameters[param].default
        assert getattr(build_parser().parse_args(argv), dest) == want, (argv[0], dest)
    # a default copied into the parser would not follow a change in the library
    for argv, dest, obj, param in cases:
        old = inspect.signature(obj).parameters[param].default
        new = old + 7 if isinstance(old, int) else f"{old}-changed"
        with monkeypatch.context() as m:
            set_default(m, obj, param, new)
            assert inspect.signature(obj).parameters[param].default == new
            assert getattr(build_parser().parse_args(argv), dest) == new, (argv[0], dest)


def test_param_is_parsed_by_one_function() -> None:
    assert parse_params(["a=1", "b==2", " c =x y", "d="]) == {"a": "1", "b": "=2", "c": "x y",
                                                             "d": ""}
    for bad in ("w", "=3"):
        with pytest.raises(CurateError, match=f"--param {bad!r} must look like name=value"):
            parse_params(["a=1", bad])


@pytest.mark.parametrize("argv", [["score", "clip_score", "--param", "w"],
                                  ["sql", "SELECT 1", "--param", "=3"]])
def test_param_errors_are_one_line(argv: list[str], ws: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert main([*argv, "-w", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"curate {argv[0]}: --param {argv[-1]!r} must look like "
                                "name=value"]


def test_select_options_after_the_name_leave_the_rule_chain(ws: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    assert own_options(["top", "c", "0.3", "--force", "--from", "a", "--force"], None,
                       False) == (["top", "c", "0.3"], "a", True)
    assert own_options(["where", "--from"], "s", False) == (["where", "--from"], "s", False)
    assert main(["select", "-w", str(ws), "base", "random", "50", "seed=1"]) == 0
    assert main(["select", "-w", str(ws), "sub", "--from", "base", "random", "10"]) == 0
    assert main(["select", "-w", str(ws), "sub", "random", "5", "--force"]) == 0
    kept = re.findall(r"^selection (\w+): (\d+) of (\d+) samples kept", capsys.readouterr().out,
                      re.MULTILINE)
    ok = int(kept[0][2])
    assert ok > 50 and kept == [("base", "50", str(ok)), ("sub", "10", "50"),  # from base
                                ("sub", "5", str(ok))]  # replaced, from every ok sample


def test_select_bad_rule_parameter_is_one_line(ws: Path) -> None:
    r = curate("select", "-w", str(ws), "x", "dedup", "foo=1")
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("curate select: "), r.stderr
    assert "foo" in r.stderr


def test_closed_stdout_ends_quietly(ws: Path) -> None:
    cli = f"{sys.executable} -m curate.cli"
    r = shell(f"{cli} info -w {ws} | head -1")
    assert r.stdout == f"workspace {ws}\n" and r.stderr == "", r.stderr
    # a reader that is gone before the first write (`true` exits while Python starts): the
    # write fails for certain, where `head -1` may read everything first
    r = shell(f"{cli} info -w {ws} | true")
    assert r.stderr == "", r.stderr
    assert r.returncode == 141  # as a tool ended by SIGPIPE
