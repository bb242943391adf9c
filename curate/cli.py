"""The ``curate`` command line: a thin argparse front over the library's verbs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from curate.errors import CurateError
from curate.workspace import DEFAULT_WORKSPACE


def _ws(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", "--workspace", default=DEFAULT_WORKSPACE,
                   help=f"workspace directory (default: ./{DEFAULT_WORKSPACE})")


def _engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: compute parts on a Ray actor pool (pip install 'curate[ray]')")
    p.add_argument("--address", help="Ray cluster to join (auto, ray://HOST:10001; default: "
                   "start a local one)")
    p.add_argument("--actors", type=int, help="Ray actors (default: one per GPU, else per CPU)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="curate", description="Curate image-text pair datasets.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic pool with ground truth")
    p.add_argument("out")
    p.add_argument("-n", type=int, default=2000, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--image-format", choices=("jpg", "png", "webp"), default="jpg")

    p = sub.add_parser("ingest", help="add image-text pairs from shards, tables or folders")
    p.add_argument("sources", nargs="+", help="tar files, globs, brace patterns, tables, folders")
    _ws(p)
    p.add_argument("--image-column", help="table column with image paths or URLs")
    p.add_argument("--caption-column", help="table column with captions")
    p.add_argument("--key-column", help="table column with sample keys")
    p.add_argument("--verify", action="store_true", help="fully decode every image")
    p.add_argument("--max-pixels", type=int, help="decompression-bomb limit (width*height)")

    p = sub.add_parser("info", help="counts, passes and sizes of a workspace")
    _ws(p)
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser("embed", help="compute image and text embeddings once per model")
    _ws(p)
    p.add_argument("--model", default="tiny-clip", help="registered name, ARCH@TAG, "
                   "ARCH@/path/weights.pt or local-dir:/path (see `curate models`)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="decode workers (default: cores)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best present)")
    _engine(p)

    p = sub.add_parser("score", help="run a scoring pass (see --list)")
    _ws(p)
    p.add_argument("name", nargs="?", help="pass name")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="a pass parameter (repeatable)")
    p.add_argument("--list", action="store_true", help="list passes with inputs and parameters")
    _engine(p)

    p = sub.add_parser("fit-aesthetic", help="fit an aesthetic head on your own ratings")
    _ws(p)
    p.add_argument("labels", help="Parquet with sample_id and rating columns")
    p.add_argument("-o", "--out", required=True, help="where to write the head (.pth)")
    p.add_argument("--model", default="tiny-clip", help="embedding model (see `curate models`)")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("select", help="write a named selection from a chain of rules",
                       description="Rules: where EXPR | top COLUMN AMOUNT [per=COL] | random "
                       "AMOUNT [seed=S] | dedup [by=COL stages=exact,perceptual,semantic] | "
                       "semdedup [eps=0.01,0.05 use=0.05 keep=hard] | coreset AMOUNT [k=N]. "
                       "AMOUNT is a fraction (0.3) or a count (1000).")
    _ws(p)
    p.add_argument("name", help="selection name")
    p.add_argument("--from", dest="start", help="start from this selection")
    p.add_argument("--force", action="store_true", help="replace an existing selection")
    p.add_argument("rules", nargs=argparse.REMAINDER, help="rule chain")

    p = sub.add_parser("evaluate", help="train a proxy CLIP on each selection; report "
                       "zero-shot accuracy and retrieval R@1 on a held-out set")
    _ws(p)
    p.add_argument("selections", nargs="+", metavar="SELECTION", help="selection names")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="several training seeds, comma-separated (0,1,2): each "
                   "selection is trained once per seed and reported as mean ± sd")
    p.add_argument("--heldout", help="held-out workspace (default: clean synthetic pairs)")
    p.add_argument("--heldout-n", type=int, default=1000)

    p = sub.add_parser("map", help="2-D map of the embeddings (UMAP on a sample, the rest "
                       "placed by neighbours) with labelled clusters")
    _ws(p)
    p.add_argument("--embedding", choices=("image", "text", "joint"), default="image")
    p.add_argument("--name", default="default", help="map name (default: default)")
    p.add_argument("--model", help="embedding model (default: the only one embedded)")
    p.add_argument("--sample", type=int, default=20000, help="points UMAP is fitted on")
    p.add_argument("--clusters", type=int, default=0, help="k-means clusters (0: auto)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("render", help="draw a map with datashader into a PNG")
    _ws(p)
    p.add_argument("--map", default="default", help="map name (default: default)")
    p.add_argument("--color", default="cluster",
                   help="column of `pairs` or `cluster` (default); `none` for density")
    p.add_argument("-o", "--out", help="PNG path (default: maps/NAME-COLOR.png)")
    p.add_argument("--size", type=int, default=800, help="image side in pixels")

    p = sub.add_parser("sql", help="run a named query (sql/*.sql) or SQL text, read-only")
    _ws(p)
    p.add_argument("query", nargs="?", help="a named query, a .sql file or SQL text")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="bind $K to V (repeatable)")
    p.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    p.add_argument("-o", "--out", help="write the result to this file")
    p.add_argument("--text", help="bind $text_emb to this phrase's embedding (and "
                   "$embeddings to its model's embeddings view)")
    p.add_argument("--model", help="the model that embeds --text (default: the query's)")
    p.add_argument("--list", action="store_true", help="list the named queries")

    p = sub.add_parser("export", help="write a selection as webdataset shards with sizes.json, "
                       "manifest.parquet, checksums and its data card")
    _ws(p)
    p.add_argument("selection")
    p.add_argument("out", help="a new or empty folder (or an unfinished export to resume)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shard-size", type=int, help="samples per shard (default: 10000)")
    g.add_argument("--shard-bytes", help="bytes per shard, e.g. 500M or 1G")
    p.add_argument("--columns", action="append", metavar="COLS", help="pairs columns for each "
                   ".json and the manifest, comma-separated (default: every score column)")
    p.add_argument("--name", help="shard name prefix (default: the selection's name)")
    p.add_argument("--verify", choices=("sample", "all"), default="sample",
                   help="hash-check every 16th image (default) or all of them")
    p.add_argument("--no-card", action="store_true", help="do not write README.md")

    p = sub.add_parser("card", help="generate a selection's data card (data_cards/NAME.md)")
    _ws(p)
    p.add_argument("selection")
    p.add_argument("-o", "--out", help="card path (default: WORKSPACE/data_cards/NAME.md)")
    p.add_argument("--export", help="also write it as README.md into this export folder "
                   "(default: the selection's last export)")

    sub.add_parser("models", help="list registered models")

    p = sub.add_parser("demo", help="synthetic pool -> workspace -> every pass")
    _ws(p)
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return ap


def run(args: argparse.Namespace) -> int:
    if args.command == "synth":
        from curate.synth import make_pool
        out = make_pool(args.out, args.n, args.seed, args.shard_size, args.image_size,
                        args.image_format)
        print(f"wrote {args.n} samples in img2dataset layout to {out} (truth: "
              f"{out / 'truth.parquet'})")
    elif args.command == "ingest":
        from curate.images import MAX_PIXELS
        from curate.ingest import ingest
        report = ingest(args.sources, args.workspace, args.image_column, args.caption_column,
                        args.key_column, verify=args.verify,
                        max_pixels=args.max_pixels or MAX_PIXELS)
        print(report.summary())
    elif args.command == "info":
        from curate.info import format_info, info
        d = info(args.workspace)
        print(json.dumps(d, indent=2, default=str) if args.json else format_info(d))
    elif args.command == "embed":
        from curate.passes.embed import embed
        print(embed(args.workspace, args.model, batch_size=args.batch_size,
                    workers=args.workers, device=args.device, engine=args.engine,
                    address=args.address, actors=args.actors).summary())
    elif args.command == "select":
        from curate.select import parse_rules, select
        rules, start, force = list(args.rules), args.start, args.force
        while "--force" in rules:  # options given after NAME land in the rule chain
            rules.remove("--force")
            force = True
        if "--from" in rules[:-1]:
            i = rules.index("--from")
            start = rules[i + 1]
            del rules[i:i + 2]
        print(select(args.workspace, args.name, parse_rules(rules), start, force,
                     progress=lambda m: print(m, file=sys.stderr)).summary())
    elif args.command == "score":
        _score(args)
    elif args.command == "fit-aesthetic":
        _fit_aesthetic(args)
    elif args.command == "evaluate":
        from curate.evaluate import evaluate, format_table
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else None
        except ValueError:
            raise CurateError(f"--seeds {args.seeds!r}: give integers such as 0,1,2") from None
        print(format_table(evaluate(args.workspace, args.selections, args.steps,
                                    args.batch_size, args.seed, args.heldout, args.heldout_n,
                                    seeds)))
    elif args.command in ("map", "render"):
        _map(args)
    elif args.command in ("sql", "export", "card"):
        _sql_export_card(args)
    elif args.command == "models":
        from curate.models import list_models
        for spec in list_models():
            print(f"{spec.name:<20} {spec.arch}@{spec.pretrained or '(built locally)'}  "
                  f"{spec.description}")
    elif args.command == "demo":
        from curate.demo import demo
        demo(Path(args.workspace), args.n, args.seed)
    return 0


def _score(args: argparse.Namespace) -> None:
    from dataclasses import fields

    from curate import passes
    from curate.passes.score import score
    if args.list or not args.name:
        for p in passes.list_passes():
            prm = ", ".join(f"{f.name}={f.default!r}" for f in fields(p.params))
            ins = "; ".join(f"{k}: {', '.join(v)}" for k, v in p.inputs(p.params()).items())
            print(f"{p.name:<12} {p.description}\n{'':<12} inputs  {ins}\n{'':<12} params  "
                  f"{prm or '(none)'}\n{'':<12} columns {', '.join(p.columns)}")
        return
    given = {}
    for kv in args.param:
        k, eq, v = kv.partition("=")
        if not eq:
            raise CurateError(f"--param {kv!r} must look like name=value")
        given[k.strip()] = v
    print(score(args.workspace, args.name, given, engine=args.engine, address=args.address,
                actors=args.actors).summary())


def _map(args: argparse.Namespace) -> None:
    if args.command == "map":
        from curate.maps import MapParams, make_map
        from curate.maps.io import summary
        from curate.workspace import Workspace
        m = make_map(args.workspace, args.name, args.embedding, args.model,
                     MapParams(sample=args.sample, clusters=args.clusters, seed=args.seed))
        print(summary(m, Workspace.open(args.workspace)))
        return
    from curate.maps import render_map
    color = None if args.color.lower() == "none" else args.color
    print(render_map(args.workspace, args.map, color, args.out, args.size))


def _fit_aesthetic(args: argparse.Namespace) -> None:
    from shlex import quote

    from curate.passes.aesthetic_fit import fit_aesthetic
    r = fit_aesthetic(args.workspace, args.labels, args.model, out=args.out, epochs=args.epochs,
                      seed=args.seed)
    print(f"fitted an aesthetic head for {r['model']} ({r['dim']}-d) on {r['train']} ratings "
          f"({r['skipped_no_image']} skipped: no image), {r['epochs']} epochs: train MSE "
          f"{r['train_mse']:.4g}; held out {r['val']}: MSE {r['val_mse']:.4g}, Spearman "
          f"{r['val_spearman']:.3f}\n-> {r['out']} (sha256 {r['sha256'][:12]})\n"
          f"score with: curate score aesthetic -w {quote(args.workspace)} --param "
          f"model={quote(r['model'])} --param weights={quote(r['out'])}")


def _sql_export_card(args: argparse.Namespace) -> None:
    if args.command == "card":
        from curate.cards import write_card
        print(write_card(args.workspace, args.selection, args.out, args.export))
    elif args.command == "export":
        from curate.export import export, parse_bytes
        cols = None if args.columns is None else [
            c.strip() for arg in args.columns for c in arg.split(",") if c.strip()]
        print(export(args.workspace, args.selection, args.out, args.shard_size,
                     parse_bytes(args.shard_bytes) if args.shard_bytes else None, cols,
                     args.name, args.verify, not args.no_card).summary())
    elif args.list or not args.query:
        from curate.sql import header, named_queries
        from curate.workspace import Workspace
        for name, path in named_queries(Workspace.open(args.workspace)).items():
            print(f"{name}\n  " + header(path).replace("\n", "\n  "))
    else:
        from curate.sql import run_sql, write_result
        params = dict(kv.split("=", 1) for kv in args.param if "=" in kv)
        if len(params) != len(args.param):
            raise CurateError("--param must look like name=value")
        write_result(run_sql(args.workspace, args.query, params, args.text, args.model),
                     args.format, args.out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CurateError as e:
        print(f"curate {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"curate {args.command}: interrupted; run it again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
