"""Benchmarks that print figures and ratios measured side by side in one run (not tests).

    .venv/bin/python bench/run.py [--n 20000] [--workers 2] [--out bench/out]

1. ingest samples/s against a raw ``tarfile`` scan that reads every member of the same shards;
2. embedding samples/s against decode-only throughput: the same DataLoader, images and
   workers with no model (the decode-bound limit). Target: embed >= 0.8 of the limit;
3. samples/s of every scoring pass that runs offline, on the same workspace.
GPU throughput of ViT-B-32/ViT-L-14 shaped models against their compute bound: bench/gpu.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from curate.errors import CurateError
from curate.files import write_parquet  # noqa: E402
from curate.ingest import ingest  # noqa: E402
from curate.passes.embed import ImageRefs, embed, loader  # noqa: E402
from curate.passes.score import score  # noqa: E402
from curate.synth import make_pool  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

# every pass that runs offline; its samples/s excludes the embeddings it reuses
PASSES = [("text_stats", {}), ("image_stats", {}), ("clip_score", {}), ("typicality", {}),
          ("reward", {"backend": "composite"})]


def raw_tar_scan(shards: list[Path]) -> int:
    """Read every member's bytes with tarfile: the floor any tar ingest pays."""
    n = 0
    for shard in shards:
        with tarfile.open(shard, "r:") as tar:
            for m in tar:
                if m.isfile():
                    tar.extractfile(m).read()
                    n += m.name.endswith(".txt")
    return n


def timed(fn, *args, **kw) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def synthetic_pool(out: Path, n: int, image_size: int) -> list[Path]:
    """The shards of an ``n``-sample synthetic pool under ``out`` (written once, then reused)."""
    pool = out / f"pool-{n}-{image_size}"
    if not (pool / "truth.parquet").exists():
        make_pool(pool, n, seed=1, shard_size=5000, size=image_size)
    return sorted(pool.glob("*.tar"))


def ingest_rows(shards: list[Path], ws: Path) -> list[tuple]:
    """Ingest ``shards`` into a fresh workspace ``ws`` against a raw tar scan of them; rows of
    (name, value, unit, against, against value, ratio)."""
    raw_tar_scan(shards)  # warm the page cache for both
    _, t_raw = timed(raw_tar_scan, shards)
    shutil.rmtree(ws, ignore_errors=True)
    report, t_ing = timed(ingest, [str(p) for p in shards], ws, progress=False)
    ing, raw = report.inputs / t_ing, report.inputs / t_raw  # the same inputs, both ways
    return [("ingest", ing, "samples/s", "raw tarfile scan", raw, ing / raw)]


def embed_rows(ws: Path, workers: list[int], batch_size: int) -> list[tuple]:
    """tiny-clip embedding of ``ws`` against decode-only throughput (the same DataLoader with
    no model) at each number of decode workers; leaves the embeddings in ``ws``."""
    from curate import models
    m = models.load("tiny-clip")
    workspace = Workspace.open(ws)
    refs = ImageRefs(workspace.sample_parts(), m.preprocess)
    rows = []
    for w in sorted(set(workers)):
        _, t_dec = timed(lambda w=w: sum(len(b[0]) for b in loader(refs, batch_size, w)))
        shutil.rmtree(workspace.embeddings_dir("tiny-clip"), ignore_errors=True)
        _, t_emb = timed(embed, ws, "tiny-clip", batch_size=batch_size, workers=w,
                         progress=False)
        emb, dec = len(refs) / t_emb, len(refs) / t_dec
        rows.append((f"embed tiny-clip, {w} workers", emb, "samples/s",
                     f"decode-only, {w} workers", dec, emb / dec))
    return rows


def vit_rows(ws: Path, out: Path, n: int = 256, batch_size: int = 32) -> list[tuple]:
    """A ViT-B-32-shaped model (``open_clip.create_model('ViT-B-32')``, random weights, no
    download) embedding the first ``n`` samples of ``ws`` on CPU: the cores split by measured
    cost (``embed``'s default, ``curate.passes.threads``) against the old split, one decode
    worker and ``cores - 1`` torch threads; the same images and batches both ways."""
    import open_clip
    import torch

    from curate.passes.embed import cpu_plan
    weights = out / "vit-b-32-random.pt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-32").state_dict(), weights)
    model = f"ViT-B-32@{weights}"
    small = out / "vit-ws"
    shutil.rmtree(small, ignore_errors=True)
    parts = Workspace.open(ws).sample_parts()
    Workspace.open(small, create=True)
    first = pq.read_table(parts[0]).slice(0, n)
    write_parquet(first, small / "samples" / parts[0].name)
    cores = os.cpu_count() or 1
    from curate import models
    split = cpu_plan(Workspace.open(small), models.load(model, "cpu"), cores)
    rates = {}
    for label, workers in (("measured", None), ("old", max(1, cores - 1))):
        shutil.rmtree(Workspace.open(small).embeddings_dir(model), ignore_errors=True)
        _, t = timed(embed, small, model, batch_size=batch_size, workers=workers,
                     device="cpu", progress=False)
        rates[label] = first.num_rows / t
    return [(f"embed ViT-B-32 (random) on CPU, measured split {split[0]} workers + {split[1]} "
             "threads", rates["measured"], "samples/s",
             f"old split: {max(1, cores - 1)} workers + {max(1, cores - (cores - 1))} threads",
             rates["old"], rates["measured"] / rates["old"])]


def score_rows(ws: Path) -> list[tuple]:
    """samples/s of every offline scoring pass on ``ws`` (a pass that cannot run is skipped
    with a note on stdout)."""
    rows = []
    for name, params in PASSES:
        try:
            r = score(ws, name, params, progress=False)
        except CurateError as e:
            print(f"{name}: skipped ({e})")
            continue
        rows.append((f"score {r.key}", r.samples_per_s, "samples/s", "", float("nan"),
                     float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=256, help="img2dataset's default size")
    ap.add_argument("--out", default="bench/out")
    a = ap.parse_args()
    out = Path(a.out)
    shards = synthetic_pool(out, a.n, a.image_size)
    ws = out / "ws"
    rows = ingest_rows(shards, ws) + embed_rows(ws, a.workers, a.batch_size) + score_rows(ws)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"pool {a.n} samples of {a.image_size}px JPEG; batch {a.batch_size}")
    print(f"{'measured':<32}{'samples/s':>12}   {'against':<26}{'samples/s':>12}{'ratio':>8}")
    for name, v, _, ref, r, ratio in rows:
        print(f"{name:<32}{v:>12.0f}   {ref:<26}{r:>12.0f}{ratio:>8.2f}" if ref else
              f"{name:<32}{v:>12.0f}")


if __name__ == "__main__":
    main()
