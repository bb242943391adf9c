"""Verbs over the pool and the workspace: ``synth``, ``ingest``, ``info``, ``models``, ``demo``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curate.cli.declare import WORKSPACE, Lib, Verb, arg, positive_int
from curate.errors import CurateError


def _synth(a: argparse.Namespace) -> None:
    from curate.synth import make_pool
    out = make_pool(a.out, a.n, seed=a.seed, shard_size=a.shard_size, size=a.image_size,
                    image_format=a.image_format)
    print(f"wrote {a.n} samples in img2dataset layout to {out} (truth: "
          f"{out / 'truth.parquet'})")
    if a.generated_captions:
        from curate.synth.generated import write_generated
        table = write_generated(out, a.seed)
        print(f"wrote a generated caption per image to {table} (`curate captions add "
              f"{table} -w WS --name generated --on url`)")


def _ingest(a: argparse.Namespace) -> None:
    from curate.ingest import ingest
    from curate.ingest.fetch import FetchConfig
    try:
        fetch = FetchConfig(workers=a.fetch_workers, timeout=a.fetch_timeout,
                            deadline=a.fetch_deadline, max_bytes=a.max_image_bytes)
    except ValueError as e:
        raise CurateError(str(e)) from None
    columns = [c.strip() for c in a.columns.split(",")] if a.columns else None
    report = ingest(a.sources, a.workspace, image_col=a.image_column,
                    caption_col=a.caption_column, key_col=a.key_column, verify=a.verify,
                    max_pixels=a.max_pixels, kind=a.kind, columns=columns,
                    image_root=a.image_root, fetch=fetch)
    print(report.summary())


def _captions(a: argparse.Namespace) -> int:
    from curate.ingest.captions import add_captions
    report = add_captions(a.workspace, a.table, a.name, on=a.on,
                          caption_column=a.caption_column)
    print(report.summary())
    return 0


def _info(a: argparse.Namespace) -> None:
    from curate.info import format_info, info
    d = info(a.workspace)
    print(json.dumps(d, indent=2, default=str) if a.json else format_info(d))


def _verify(a: argparse.Namespace) -> int:
    from curate.verify import verify
    report = verify(a.workspace, repair=a.repair)
    print(report.summary())
    return 0 if report.ok else 1


def _models(a: argparse.Namespace) -> None:
    from curate.models import list_models
    for spec in list_models():
        print(f"{spec.name:<20} {spec.arch}@{spec.pretrained or '(built locally)'}  "
              f"{spec.description}")


def _demo(a: argparse.Namespace) -> None:
    from curate.demo import demo
    demo(Path(a.workspace), a.n, a.seed)


SYNTH = "curate.synth:make_pool"
FETCH = "curate.ingest.fetch:FetchConfig"

VERBS = (
    Verb("synth", "write a synthetic pool with ground truth", _synth, (
        arg("out", help="folder for the pool (img2dataset layout) and its truth.parquet"),
        arg("-n", type=int, default=Lib(SYNTH, "n"), help="number of samples"),
        arg("--seed", type=int, default=Lib(SYNTH, "seed"), help="random seed"),
        arg("--shard-size", type=int, default=Lib(SYNTH, "shard_size"),
            help="samples per shard"),
        arg("--image-size", type=int, default=Lib(SYNTH, "size"), help="image side in pixels"),
        arg("--image-format", choices=("jpg", "png", "webp"),
            default=Lib(SYNTH, "image_format"), help="image encoding"),
        arg("--generated-captions", action="store_true", help="also a generated-style "
            "caption per image (correct, generic or wrong at known rates, in truth.parquet) "
            "as generated_captions.parquet"),
    )),
    Verb("ingest", "add image-text pairs from shards, tables or folders", _ingest, (
        arg("sources", nargs="+", help="tar files, globs, brace patterns, tables, folders"),
        WORKSPACE,
        arg("--image-column", help="table column with image paths or URLs"),
        arg("--caption-column", help="table column with captions"),
        arg("--key-column", help="table column with sample keys"),
        arg("--verify", action="store_true", help="fully decode every image"),
        arg("--max-pixels", type=positive_int, default=Lib("curate.ingest:ingest", "max_pixels"),
            help="decompression-bomb limit (width*height)"),
        arg("--kind", help="read every source as this kind instead of detecting it "
            "(img2dataset, webdataset, table, coco, hf_parquet, ...; a wrong name lists them)"),
        arg("--columns", help="names of a headerless table's columns, e.g. caption,url (CC3M)"),
        arg("--image-root", help="folder of a COCO captions file's images"),
        arg("--fetch-workers", type=positive_int, default=Lib(FETCH, "workers"),
            help="URL downloads in flight"),
        arg("--fetch-timeout", type=float, default=Lib(FETCH, "timeout"),
            help="seconds for a connect and for each read"),
        arg("--fetch-deadline", type=float, default=Lib(FETCH, "deadline"),
            help="seconds for one URL in all"),
        arg("--max-image-bytes", type=positive_int, default=Lib(FETCH, "max_bytes"),
            help="a larger download is a failed row (failed_to_download)"),
    )),
    Verb("captions", "attach candidate captions (generated, alternative) to images already "
         "in the workspace, as new samples of the same images", _captions, (
             arg("action", choices=("add",), help="add: attach the captions of TABLE"),
             arg("table", help="parquet, csv or jsonl with a caption column and a key column"),
             WORKSPACE,
             arg("--name", required=True, help="the captions' caption_source (blip2, alt2, "
                 "human, ...)"),
             arg("--on", choices=Lib("curate.ingest.captions:ON"), help="the column matched "
                 "against the samples (default: the first of sample_id, image_id, key, url "
                 "the table has)"),
             arg("--caption-column", help="the captions' column (default: caption, text, "
                 "generated_caption or alt)"),
         )),
    Verb("verify", "check every part, pass, selection and map against its manifest; exit 1 "
         "when something is wrong", _verify, (
             WORKSPACE,
             arg("--repair", action="store_true", help="rebuild what can be rebuilt: the "
                 "catalog, unreadable parts (removed for a rerun), leftover temporary files"),
         )),
    Verb("info", "counts, passes and sizes of a workspace", _info, (
        WORKSPACE,
        arg("--json", action="store_true", help="print as JSON"),
    )),
    Verb("models", "list registered models", _models),
    Verb("demo", "synthetic pool -> workspace -> every pass", _demo, (
        WORKSPACE,
        arg("-n", type=int, default=Lib("curate.demo:demo", "n"), help="pool size"),
        arg("--seed", type=int, default=Lib("curate.demo:demo", "seed"), help="random seed"),
    )),
)
