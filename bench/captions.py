"""Several captions per image on the synthetic pool: do ``mix`` and ``best-caption`` recover
the true caption more often than the raw caption alone, and does a proxy CLIP trained on the
mixed selection beat one trained on raw captions at the same size?

    .venv/bin/python bench/captions.py [--n 2000] [--seed 0] [--steps 200] [--batch-size 64]
                                       [--train-seeds 0 1 2] [--work DIR]

The pool has bench/evaluate.py's defects (15% mismatched and 5% abstract raw captions, ...)
and a generated caption per image (``curate synth --generated-captions``: 15% wrong, 25%
generic but correct, the rest correct), attached with ``curate captions add`` as source
``blip2``; tiny-clip embeds every caption (each image once) and scores ``clip_score``.
Selections, each one caption per image:

* ``raw``: the image's raw caption (``best-caption among=alt``: one per image, so an exact
  duplicate's two raw captions count once, as everywhere here);
* ``generated``: the generated caption (``best-caption among=blip2``);
* ``best``: ``best-caption by=clip_score`` over both;
* ``mix_qQ``: ``mix raw=alt generated=blip2 by=clip_score threshold=T``, T the Q-th
  percentile of the raw captions' clip_score (Nguyen et al. 2023 tune T the same way).

"Recovered" is the share of images whose kept caption is true of the image (truth.parquet: a
raw caption is true unless its sample is mismatched or abstract; a generated one unless it
is wrong); odd images (noise, no scene) are left out. The proxy (``curate evaluate``) is
trained on raw, mix and best with the same steps, batch and seeds (mean ± sd).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.evaluate import evaluate, format_table  # noqa: E402
from curate.ingest import ingest  # noqa: E402
from curate.ingest.captions import add_captions  # noqa: E402
from curate.passes.embed import embed  # noqa: E402
from curate.passes.score import score  # noqa: E402
from curate.select import parse_rules, select  # noqa: E402
from curate.synth import Defects, make_pool  # noqa: E402
from curate.synth.generated import write_generated  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

DEFECTS = Defects(mismatched=0.15, abstract=0.05, near_duplicate=0.03, exact_duplicate=0.02,
                  corrupt=0.02, odd_image=0.02, empty_caption=0.01, failed_download=0.0)
QUANTILES = (10, 20, 30)


def prepare(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    """The pool with generated captions, ingested, captions attached, embedded, scored."""
    ws, pool = root / "ws", root / "pool"
    if Workspace(ws.resolve()).manifest("scores", "clip_score") is not None:
        return ws, pool
    make_pool(pool, n, seed, shard_size=1000, defects=DEFECTS)
    table = write_generated(pool, seed)
    ingest([str(pool)], ws, progress=False)
    print(add_captions(ws, table, "blip2", on="url", progress=False).summary(), file=sys.stderr)
    t = time.time()
    r = embed(ws, "tiny-clip", progress=False)
    print(f"embed: {r.rows} rows, {r.extra.get('images_decoded')} images encoded, "
          f"{r.extra.get('images_reused')} reused, {time.time() - t:.0f}s", file=sys.stderr)
    score(ws, "clip_score", progress=False)
    return ws, pool


def truth_of_samples(ws: Path, pool: Path) -> pl.DataFrame:
    """Per sample: image_id, caption_source, clip_score and whether its caption is true."""
    truth = pl.read_parquet(pool / "truth.parquet")
    log = pl.read_parquet(ws / "captions" / "blip2.parquet")
    table = pl.read_parquet(pool / "generated_captions.parquet").with_row_index("row")
    with Workspace.open(ws).connect() as con:
        s = con.sql("SELECT sample_id, key, image_id, caption_source, clip_score FROM pairs "
                    "WHERE status = 'ok'").pl()
    gen = (log.filter(pl.col("status") == "added").join(
        table.with_columns(pl.col("row").cast(pl.Int64)), on="row")
        .join(truth.select("key", "generated_correct", "odd_image"), on="key")
        .select("sample_id", pl.col("generated_correct").alias("true"), "odd_image"))
    raw = s.filter(pl.col("caption_source") == "alt").join(
        truth.select("key", "mismatched", "abstract", "odd_image"), on="key").select(
        "sample_id", (~pl.col("mismatched") & ~pl.col("abstract")).alias("true"), "odd_image")
    return s.join(pl.concat([raw, gen]), on="sample_id")


def recovered(ws: Path, name: str, t: pl.DataFrame) -> tuple[float, int]:
    """(share of the selection's images whose caption is true, images), odd images left out."""
    kept = pl.read_parquet(Workspace.open(ws).selection(name).parquet).select("sample_id")
    k = t.join(kept, on="sample_id")
    odd = set(t.filter(pl.col("odd_image"))["image_id"])
    k = k.filter(~pl.col("image_id").is_in(list(odd)))
    assert k["image_id"].n_unique() == k.height, f"{name} keeps an image twice"
    return float(k["true"].mean()), k.height


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="pool size")
    ap.add_argument("--seed", type=int, default=0, help="pool seed")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", help="folder for the pool and workspace (default: a temp dir)")
    args = ap.parse_args()
    root = Path(args.work or tempfile.mkdtemp(prefix="curate-bench-captions-"))
    t0 = time.time()
    ws, pool = prepare(root, args.n, args.seed)
    print(f"ready in {time.time() - t0:.0f}s: {root}", file=sys.stderr)
    t = truth_of_samples(ws, pool)
    raw_scores = t.filter(pl.col("caption_source") == "alt")["clip_score"].drop_nulls()
    chains = {"raw": "best-caption by=clip_score among=alt",
              "generated": "best-caption by=clip_score among=blip2",
              "best": "best-caption by=clip_score among=alt,blip2"}
    for q in QUANTILES:
        thr = float(np.percentile(raw_scores.to_numpy(), q))
        chains[f"mix_q{q}"] = f"mix raw=alt generated=blip2 by=clip_score threshold={thr:.4f}"
    print("| selection | rule | images | true caption |\n|---|---|---:|---:|")
    for name, chain in chains.items():
        select(ws, name, parse_rules(chain.split()), overwrite=True)
        share, images = recovered(ws, name, t)
        print(f"| {name} | `{chain}` | {images} | {share:.1%} |")
    results = evaluate(ws, ["raw", "mix_q20", "best"], steps=args.steps,
                       batch_size=args.batch_size, seeds=args.train_seeds)
    print(f"\npool: {args.n} synthetic pairs (seed {args.seed}) + a generated caption per "
          f"image; proxy: curate-tiny-clip from scratch, {args.steps} steps x "
          f"{args.batch_size}, seeds {args.train_seeds}; held out: 1000 clean pairs\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
