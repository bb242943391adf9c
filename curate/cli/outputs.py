"""Verbs that read results out: ``sql`` (named queries or SQL text), ``export`` (shards) and
``card`` (a selection's data card)."""

from __future__ import annotations

import argparse

from curate.cli.declare import ALLOW_PARTIAL, WORKSPACE, Lib, Verb, arg, parse_params


def _sql(a: argparse.Namespace) -> None:
    if a.list or not a.query:
        from curate.sql import header, named_queries
        from curate.workspace import Workspace
        found = named_queries(Workspace.open(a.workspace), queries=a.queries)
        for name, path in found.items():
            print(f"{name}\n  " + header(path).replace("\n", "\n  "))
        return
    from curate.sql import run_sql, write_result
    write_result(run_sql(a.workspace, a.query, parse_params(a.param), a.text, a.model,
                         queries=a.queries), a.format, a.out)


def _export(a: argparse.Namespace) -> None:
    from curate.export import export, parse_bytes
    cols = None if a.columns is None else [
        c.strip() for given in a.columns for c in given.split(",") if c.strip()]
    print(export(a.workspace, a.selection, a.out, shard_size=a.shard_size,
                 shard_bytes=parse_bytes(a.shard_bytes) if a.shard_bytes else None,
                 columns=cols, name=a.name, verify=a.verify, card=not a.no_card,
                 format=a.format, allow_partial=a.allow_partial,
                 keep_keys=a.keep_keys, group_captions=a.group_captions).summary())


def _card(a: argparse.Namespace) -> None:
    from curate.cards import write_card
    print(write_card(a.workspace, a.selection, a.out, a.export,
                     allow_partial=a.allow_partial))


def _shard_size_help() -> str:
    from curate.export import DEFAULT_SHARD_SIZE
    return f"samples per shard (default: {DEFAULT_SHARD_SIZE})"


def _verify_help() -> str:
    from curate.export.read import VERIFY_EVERY
    return (f"sample: hash-check every {VERIFY_EVERY}th image and the first of each source "
            "file; all: every image")


def _format_help() -> str:
    from curate.export.formats import list_formats
    return f"output format: {', '.join(list_formats())}"


EXPORT = "curate.export:export"

VERBS = (
    Verb("sql", "run a named query (sql/*.sql) or SQL text, read-only", _sql, (
        WORKSPACE,
        arg("query", nargs="?", help="a named query, a .sql file or SQL text"),
        arg("--param", action="append", default=[], metavar="K=V",
            help="bind $K to V (repeatable)"),
        arg("--format", choices=Lib("curate.sql:FORMATS"),
            default=Lib("curate.sql:write_result", "fmt"), help="how to print the result"),
        arg("-o", "--out", help="write the result to this file"),
        arg("--text", help="bind $text_emb to this phrase's embedding (and $embeddings to "
            "its model's embeddings view)"),
        arg("--model", help="the model that embeds --text (default: the query's)"),
        arg("--queries", metavar="DIR", help="named queries from this folder instead of the "
            "package's sql/"),
        arg("--list", action="store_true", help="list the named queries"),
    )),
    Verb("export", "write a selection as webdataset shards with sizes.json, manifest.parquet, "
         "checksums and its data card", _export, (
             WORKSPACE,
             arg("selection", help="selection name"),
             arg("out", help="a new or empty folder (or an unfinished export to resume)"),
             arg("--shard-size", type=int, help=_shard_size_help, group="shard"),
             arg("--shard-bytes", help="bytes per shard, e.g. 500M or 1G", group="shard"),
             arg("--columns", action="append", metavar="COLS", help="pairs columns for each "
                 ".json and the manifest, comma-separated (default: every score column)"),
             arg("--name", help="shard name prefix (default: the selection's name)"),
             arg("--verify", choices=("sample", "all"), default=Lib(EXPORT, "verify"),
                 help=_verify_help),
             arg("--format", default=Lib(EXPORT, "format"), help=_format_help),
             arg("--no-card", action="store_true", help="do not write README.md"),
             arg("--keep-keys", action="store_true", help="webdataset: keep each sample's "
                 "source __key__ instead of its position (no dots or slashes in keys)"),
             arg("--group-captions", action="store_true", help="one sample per image with "
                 "every kept caption of it (a list in .json, the best-ranked in .txt)"),
             ALLOW_PARTIAL,
         )),
    Verb("card", "generate a selection's data card (data_cards/NAME.md)", _card, (
        WORKSPACE,
        arg("selection", help="selection name"),
        arg("-o", "--out", help="card path (default: WORKSPACE/data_cards/NAME.md)"),
        arg("--export", help="also write it as README.md into this export folder (default: "
            "the selection's last export)"),
        ALLOW_PARTIAL,
    )),
)
