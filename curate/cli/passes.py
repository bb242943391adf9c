"""Verbs that compute per-sample columns: ``embed``, ``index``, ``score``, ``fit-aesthetic``,
and ``caption`` (candidate captions from a captioning model)."""

from __future__ import annotations

import argparse
from shlex import quote

from curate.cli.declare import ENGINE, WORKSPACE, Lib, Verb, arg, parse_params


def _embed(a: argparse.Namespace) -> None:
    from curate.passes.embed import embed
    print(embed(a.workspace, a.model, batch_size=a.batch_size, workers=a.workers,
                device=a.device, engine=a.engine, address=a.address, actors=a.actors,
                redo_failed=a.redo_failed, dtype=a.dtype).summary())


def _index(a: argparse.Namespace) -> None:
    from curate.ann import build
    for modality in a.modality:
        r = build(a.workspace, a.model, modality)
        print(f"index {r['model']} {r['modality']}: {r['vectors']} vectors in {r['lists']} "
              f"lists; {'rebuilt' if r['rebuilt'] else 'kept'}, {r['appended']} parts added")


CAPTION = "curate.passes.caption:caption"


def _caption(a: argparse.Namespace) -> None:
    from curate.passes.caption import caption
    run, attached = caption(a.workspace, a.model, a.name, batch_size=a.batch_size,
                            device=a.device, max_new_tokens=a.max_new_tokens)
    print(run.summary())
    print(attached.summary())


def _score(a: argparse.Namespace) -> None:
    if a.list or not a.name:
        _list_passes()
        return
    from curate.passes.score import score
    print(score(a.workspace, a.name, parse_params(a.param), engine=a.engine, address=a.address,
                actors=a.actors, redo_failed=a.redo_failed).summary())


def _list_passes() -> None:
    from dataclasses import fields

    from curate import passes
    for p in passes.list_passes():
        prm = ", ".join(f"{f.name}={f.default!r}" for f in fields(p.params))
        ins = "; ".join(f"{k}: {', '.join(v)}" for k, v in p.inputs(p.params()).items())
        print(f"{p.name:<12} {p.description}\n{'':<12} inputs  {ins}\n{'':<12} params  "
              f"{prm or '(none)'}\n{'':<12} columns {', '.join(p.columns)}")


def _fit_aesthetic(a: argparse.Namespace) -> None:
    from curate.passes.aesthetic_fit import fit_aesthetic
    r = fit_aesthetic(a.workspace, a.labels, a.model, out=a.out, epochs=a.epochs, seed=a.seed)
    print(f"fitted an aesthetic head for {r['model']} ({r['dim']}-d) on {r['train']} ratings "
          f"({r['skipped_no_image']} skipped: no image), {r['epochs']} epochs: train MSE "
          f"{r['train_mse']:.4g}; held out {r['val']}: MSE {r['val_mse']:.4g}, Spearman "
          f"{r['val_spearman']:.3f}\n-> {r['out']} (sha256 {r['sha256'][:12]})\n"
          f"score with: curate score aesthetic -w {quote(a.workspace)} --param "
          f"model={quote(r['model'])} --param weights={quote(r['out'])}")


EMBED = "curate.passes.embed:embed"
REDO_FAILED = arg("--redo-failed", action="store_true",
                  help="recompute the parts holding rows that failed (after restoring a "
                  "missing image); each is rewritten whole, atomically")
FIT = "curate.passes.aesthetic_fit:fit_aesthetic"

VERBS = (
    Verb("embed", "compute image and text embeddings once per model", _embed, (
        WORKSPACE,
        arg("--model", default=Lib(EMBED, "model"), help="registered name, ARCH@TAG, "
            "ARCH@/path/weights.pt or local-dir:/path (see `curate models`)"),
        arg("--batch-size", type=int, default=Lib(EMBED, "batch_size"),
            help="samples per model call"),
        arg("--workers", type=int, help="decode workers (default: on a GPU one per core; on "
            "CPU the cores split by the measured cost of decoding and of the model)"),
        arg("--device", help="cpu, cuda, cuda:1 (default: best present)"),
        arg("--dtype", choices=["float32", "float16"], help="how the vectors are stored "
            "(float16: half the size, read back as float32; default: as stored, else float32)"),
        REDO_FAILED,
        *ENGINE,
    )),
    Verb("caption", "write a candidate caption per image with a captioning model (BLIP, "
         "BLIP-2, ... through transformers) and attach them; resumable", _caption, (
             WORKSPACE,
             arg("--model", required=True, help="a Hugging Face hub id "
                 "(Salesforce/blip-image-captioning-base) or a local save_pretrained folder"),
             arg("--name", required=True, help="the captions' caption_source (e.g. blip)"),
             arg("--batch-size", type=int, default=Lib(CAPTION, "batch_size"),
                 help="images per generate call"),
             arg("--device", help="cuda, cpu, ... (default: cuda when there is one)"),
             arg("--max-new-tokens", type=int, default=Lib(CAPTION, "max_new_tokens"),
                 help="longest caption in tokens"),
         )),
    Verb("index", "build or extend the nearest-neighbour index of a model's embeddings",
         _index, (
             WORKSPACE,
             arg("--model", default=Lib("curate.ann:build", "model"),
                 help="the model whose embeddings are indexed"),
             arg("--modality", nargs="+", default=["image"], choices=["image", "text"],
                 help="which embeddings (default: image)"),
         )),
    Verb("score", "run a scoring pass (see --list)", _score, (
        WORKSPACE,
        arg("name", nargs="?", help="pass name"),
        arg("--param", action="append", default=[], metavar="K=V",
            help="a pass parameter (repeatable)"),
        arg("--list", action="store_true", help="list passes with inputs and parameters"),
        REDO_FAILED,
        *ENGINE,
    )),
    Verb("fit-aesthetic", "fit an aesthetic head on your own ratings", _fit_aesthetic, (
        WORKSPACE,
        arg("labels", help="Parquet with sample_id and rating columns"),
        arg("-o", "--out", required=True, help="where to write the head (.pth)"),
        arg("--model", default=Lib(FIT, "model"), help="embedding model (see `curate models`)"),
        arg("--epochs", type=int, default=Lib(FIT, "epochs"), help="training epochs"),
        arg("--seed", type=int, default=Lib(FIT, "seed"), help="random seed"),
    )),
)
