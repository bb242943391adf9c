"""Latency of every named query (sql/*.sql) on a fabricated workspace of 1M rows (not a test).

    .venv/bin/python bench/sql_latency.py [--n 1000000] [--parts 10] [--dim 64] [--repeats 3]
                                          [--keep] [--out bench/out]

The workspace is written straight to the layout curate's passes write (random, schema-correct
Parquet, a few seconds per 100k rows), not made by ingesting and embedding real images:
``samples/`` (ingest's schema, about 3% failed rows with error codes), ``embeddings/tiny-clip/``
(``--dim`` float32 image and text vectors with norms, ok rows only), ``scores/clip_score/``,
``scores/text_stats/`` and ``scores/image_stats/`` (each pass's columns, ok rows only), a map
``maps/default.parquet`` with its manifest and two selections with their drop logs: ``dedup``
(exact and perceptual groups, then semdedup groups) and ``clean`` (where, then top). It is
opened with curate's ``Workspace``, so the queries run on the views curate builds.

Each named query runs through ``curate sql``'s own path (``curate.sql.run_sql``: the statement
check, then the sandbox ``curate.connect`` builds in memory over the Parquet, then the table
printer) with the parameters in ``PARAMS``; ``similar_to_text`` runs with ``--text`` (tiny-clip
embeds the phrase) when ``--dim`` is tiny-clip's 64, otherwise a random vector is bound in its
place in the same sandbox. Each figure is the median of ``--repeats`` runs, against
``SELECT count(*) FROM samples`` through the same path (what any query pays to build the
sandbox and its views). The workspace is deleted at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.files import write_json, write_parquet  # noqa: E402
from curate.ingest import SCHEMA  # noqa: E402
from curate.sql import connect, execute, named_queries, run_sql, write_result  # noqa: E402
from curate.workspace import Workspace, view_name  # noqa: E402

MODEL = "tiny-clip"  # the embeddings folder and model name; its embed_dim is 64
TEXT = "a red circle on a blue background"
PARAMS = {"drops_by_rule": {"selection": "dedup"}, "duplicate_groups": {"selection": "dedup"},
          "selection_drops": {"selection": "dedup"}, "worst_aligned": {"n": "50"},
          "scores_by_cluster": {"map": "default", "column": "clip_score"}}
WORDS = np.array(("a", "the", "photo", "of", "red", "green", "blue", "yellow", "small", "large",
                  "circle", "square", "triangle", "star", "diamond", "on", "with", "in", "dog",
                  "cat", "tree", "river", "city", "car", "sky", "house", "beach", "sunset",
                  "woman", "man", "child", "garden", "mountain", "road", "night", "vintage",
                  "poster", "logo", "sale", "free", "shipping", "new", "best", "white", "black",
                  "background", "close-up", "view", "wooden", "table"))
ERRORS = ("corrupt_image: cannot identify image file", "empty_caption: the caption is empty "
          "or only whitespace", "failed_to_download: HTTP Error 404: Not Found")
TEXT_STATS = ("n_chars", "n_words", "n_tokens", "truncated", "has_url", "has_filename",
              "has_price", "has_html", "junk")


def hex_ids(rng: np.random.Generator, n: int, nbytes: int = 16) -> pa.Array:
    """``n`` random lowercase hex strings of ``2 * nbytes`` characters."""
    raw = rng.bytes(n * nbytes).hex().encode()
    return pa.array(np.frombuffer(raw, dtype=f"S{2 * nbytes}")).cast(pa.string())


def captions(rng: np.random.Generator, n: int) -> list[str]:
    """Random captions of 2 to 24 words; about 1% carry a URL, so ``junk`` is sometimes set."""
    lengths = rng.integers(2, 25, n)
    idx = rng.integers(0, len(WORDS), (n, 24))
    caps = [" ".join(WORDS[row[:k]]) for row, k in zip(idx, lengths, strict=True)]
    for i in np.flatnonzero(rng.random(n) < 0.01):
        caps[i] += " www.example.com"
    return caps


def samples_part(rng: np.random.Generator, part: int, n: int, sources: int) -> pa.Table:
    """One samples part in ingest's schema: ``n`` rows from ``sources`` shards, ~3% failed."""
    failed = rng.random(n) < 0.03
    shard = rng.integers(0, sources, n)
    src = np.array([f"/data/pool/{s:05d}.tar" for s in range(sources)])[shard]
    keys = [f"{s:05d}{part:02d}{i:06d}" for i, s in enumerate(shard)]
    caps = captions(rng, n)
    side = rng.choice([64, 128, 256], n).astype(np.int32)
    cols = {
        "sample_id": hex_ids(rng, n), "status": np.where(failed, "failed", "ok"),
        "error": pa.array(np.array(ERRORS)[rng.integers(0, 3, n)], mask=~failed),
        "caption": caps, "key": keys, "source": src, "source_kind": ["img2dataset"] * n,
        "image_path": src, "image_offset": rng.integers(0, 2**30, n),
        "image_length": rng.integers(500, 40_000, n), "image_format": ["JPEG"] * n,
        "width": side, "height": side, "image_hash": hex_ids(rng, n),
        "url": [f"https://example.com/{k}.jpg" for k in keys], "orig_key": keys,
        "orig_width": side * 2, "orig_height": side * 2, "sha256": hex_ids(rng, n, 32),
        "download_status": ["success"] * n, "meta": pa.nulls(n, pa.string()),
        "ingested_at": pa.array([datetime.now(timezone.utc)] * n, pa.timestamp("us", "UTC")),
    }
    return pa.table({f.name: pa.array(cols[f.name], f.type) if not isinstance(
        cols[f.name], pa.Array) else cols[f.name] for f in SCHEMA}, schema=SCHEMA)


def _vectors(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _base(ids: pa.Array) -> dict:
    return {"sample_id": ids, "status": pa.array(["ok"] * len(ids)),
            "error": pa.nulls(len(ids), pa.string())}


def pass_parts(rng: np.random.Generator, ok: pa.Table, dim: int) -> dict[str, pa.Table]:
    """Output parts of the embeddings and score passes for one part's ok rows, by folder."""
    n, ids = ok.num_rows, ok["sample_id"].combine_chunks()
    img = rng.standard_normal((n, dim), np.float32)
    txt = img + rng.standard_normal((n, dim), np.float32)
    cos = np.einsum("ij,ij->i", img, txt) / np.linalg.norm(img, axis=1) / np.linalg.norm(
        txt, axis=1)
    caps = ok["caption"].to_pylist()
    chars = np.array([len(c) for c in caps])
    junk = np.array(["www." in c for c in caps])
    stats = {"n_chars": chars, "n_words": np.array([c.count(" ") + 1 for c in caps]),
             "n_tokens": chars // 4 + 2, "truncated": chars // 4 + 2 > 77, "has_url": junk,
             "has_filename": np.zeros(n, bool), "has_price": np.zeros(n, bool),
             "has_html": np.zeros(n, bool), "junk": junk}
    side = ok["width"].to_numpy().astype(np.float64)
    return {
        f"embeddings/{MODEL}": pa.table({
            **_base(ids), "image_emb": _vectors(img), "text_emb": _vectors(txt),
            "image_norm": np.linalg.norm(img, axis=1), "text_norm": np.linalg.norm(txt, axis=1)}),
        "scores/clip_score": pa.table({**_base(ids), "clip_score": 2.5 * np.maximum(cos, 0),
                                       "clip_cosine": cos}),
        "scores/text_stats": pa.table({**_base(ids), **stats}),
        "scores/image_stats": pa.table({**_base(ids), "aspect_ratio": np.ones(n),
                                        "megapixels": side * side / 1e6,
                                        "format": ok["image_format"].combine_chunks()}),
    }


def fake_map(ws: Path, rng: np.random.Generator, ok: np.ndarray, who: str) -> None:
    """Map ``default`` of the ``ok`` ids: random points in 64 clusters, with its manifest."""
    x = rng.standard_normal((len(ok), 2)).astype(np.float32)
    cluster = rng.integers(0, 64, len(ok)).astype(np.int32)
    write_parquet(pa.table({"sample_id": pa.array(ok, pa.string()), "x": x[:, 0], "y": x[:, 1],
                            "cluster": cluster,
                            "cluster_label": pa.array([f"c{c}" for c in cluster])}),
                  ws / "maps" / "default.parquet")
    write_json({"name": "default", "points": len(ok), "clusters": 64,
                "embedding": {"model": MODEL, "kind": "image"},
                "note": f"fabricated by {who}"}, ws / "maps" / "default.json")


def manifests(ws: Path, n_ok: int, parts: int, dim: int) -> None:
    """The manifest of each pass folder, as the runner writes them (status complete)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    common = {"status": "complete", "rows": n_ok, "failed": 0, "parts": parts,
              "input_parts": parts, "created_at": now, "updated_at": now,
              "note": "fabricated by bench/sql_latency.py"}
    write_json({**common, "pass": "embed", "kind": "embeddings", "key": MODEL, "dim": dim,
                "model": {"name": MODEL, "embed_dim": dim},
                "columns": ["image_emb", "text_emb", "image_norm", "text_norm"]},
               ws / "embeddings" / MODEL / "manifest.json")
    for key, cols in (("clip_score", ["clip_score", "clip_cosine"]),
                      ("text_stats", list(TEXT_STATS)),
                      ("image_stats", ["aspect_ratio", "megapixels", "format"])):
        write_json({**common, "pass": key, "kind": "scores", "key": key, "params": {},
                    "columns": cols}, ws / "scores" / key / "manifest.json")


def write_selection(ws: Path, name: str, kept: np.ndarray, dropped: pa.Table,
                    rules: list[dict], candidates: int) -> None:
    """A selection as ``curate select`` writes it: kept ids, the drop log and the manifest."""
    sel = ws / "selections"
    write_parquet(dropped, sel / "dropped" / f"{name}.parquet")
    write_parquet(pa.table({"sample_id": pa.array(kept, pa.string()),
                            "rank": pa.array(np.arange(len(kept)), pa.int64()),
                            "reason": pa.array([rules[-1]["rule"]] * len(kept))}),
                  sel / f"{name}.parquet")
    write_json({"name": name, "start": None, "rules": rules, "candidates": candidates,
                "kept": len(kept), "note": "fabricated by bench/sql_latency.py"},
               sel / f"{name}.json")


def drop_log(ids: np.ndarray, rule: str, stage: str | None, reps: np.ndarray | None,
             reason: str) -> pa.Table:
    """Drop-log rows for ``ids``; with ``reps``, each row names its group's representative."""
    n = len(ids)
    rep = reps if reps is not None else np.full(n, None, object)
    group = [f"{stage}:{r[:12]}" for r in reps] if reps is not None else [None] * n
    why = [f"{stage} duplicate of {r}" for r in reps] if reps is not None else [reason] * n
    return pa.table({"sample_id": pa.array(ids, pa.string()), "rule": [rule] * n,
                     "stage": pa.array([stage] * n, pa.string()), "reason": why,
                     "group_id": pa.array(group, pa.string()),
                     "representative": pa.array(rep, pa.string())})


def selections(ws: Path, rng: np.random.Generator, ok: np.ndarray, clip: np.ndarray,
               junk: np.ndarray) -> None:
    """``dedup``: 2% exact, 1% perceptual and 2% semdedup duplicates in groups of about 3;
    ``clean``: where NOT junk, then the top half by clip_score."""
    order = rng.permutation(len(ok))
    cut = np.cumsum([int(0.02 * len(ok)), int(0.01 * len(ok)), int(0.02 * len(ok))])
    reps = ok[order[cut[-1]:cut[-1] + cut[-1] // 2]]  # representatives among the kept
    logs = [drop_log(ok[order[a:b]], rule, stage, rng.choice(reps, b - a), "")
            for (a, b), rule, stage in zip(((0, cut[0]), (cut[0], cut[1]), (cut[1], cut[2])),
                                           ("dedup", "dedup", "semdedup"),
                                           ("exact", "perceptual", "semdedup"), strict=True)]
    write_selection(ws, "dedup", ok[np.sort(order[cut[-1]:])], pa.concat_tables(logs),
                    [{"rule": "dedup", "params": {}}, {"rule": "semdedup", "params": {}}],
                    len(ok))
    keep = ~junk
    top = np.zeros(len(ok), bool)
    top[keep] = clip[keep] >= np.median(clip[keep])
    write_selection(ws, "clean", ok[top], pa.concat_tables([
        drop_log(ok[junk], "where", None, None, "where: NOT junk is false"),
        drop_log(ok[keep & ~top], "top", None, None, "top: clip_score below the threshold")]),
        [{"rule": "where", "params": {"expr": "NOT junk"}},
         {"rule": "top", "params": {"column": "clip_score", "amount": "0.5"}}], len(ok))


def fabricate(ws: Path, n: int, parts: int, dim: int, seed: int = 0) -> Workspace:
    """Write an ``n``-row workspace in ``parts`` parts under ``ws`` (replacing what is there)."""
    shutil.rmtree(ws, ignore_errors=True)
    rng = np.random.default_rng(seed)
    ok_ids, clip, junk = [], [], []
    per = -(-n // parts)
    for i, start in enumerate(range(0, n, per)):
        name = f"part-{i:06d}.parquet"
        t = samples_part(rng, i, min(per, n - start), sources=max(1, n // 10_000))
        write_parquet(t, ws / "samples" / name)
        ok = t.filter(pa.compute.equal(t["status"], "ok"))
        outs = pass_parts(rng, ok, dim)
        for folder, table in outs.items():
            write_parquet(table, ws / folder / name)
        ok_ids.append(ok["sample_id"].to_numpy(zero_copy_only=False).astype(object))
        clip.append(outs["scores/clip_score"]["clip_score"].to_numpy())
        junk.append(outs["scores/text_stats"]["junk"].to_numpy(zero_copy_only=False))
    ok = np.concatenate(ok_ids)
    manifests(ws, len(ok), parts, dim)
    fake_map(ws, rng, ok, "bench/sql_latency.py")
    selections(ws, rng, ok, np.concatenate(clip), np.concatenate(junk))
    w = Workspace.open(ws)
    w.refresh()
    return w


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def random_vector_query(ws: Workspace, sql: str, dim: int) -> pa.Table:
    """``similar_to_text`` with a random unit vector bound as ``$text_emb`` (no model), checked
    and run in the same sandbox as ``curate sql``."""
    v = np.random.default_rng(0).standard_normal(dim)
    sql = sql.replace("$text_emb", f"CAST($text_emb AS FLOAT[{dim}])")
    with connect(ws) as con:
        return execute(con, sql, {"text_emb": (v / np.linalg.norm(v)).tolist(),
                                  "embeddings": view_name("embeddings", MODEL), "n": 20})


def query_rows(ws: Workspace, repeats: int, dim: int) -> list[tuple]:
    """Median latency of each named query (and the floor) as suite rows."""
    def run(query: str, params: dict | None = None, text: str | None = None) -> pa.Table:
        t = run_sql(ws.root, query, params, text=text, model=MODEL if text else None)
        write_result(t, "table", stream=io.StringIO())  # what `curate sql` prints
        return t

    floor = "SELECT count(*) FROM samples"
    run(floor)
    base = statistics.median(_timed(lambda: run(floor)) for _ in range(repeats))
    rows = []
    for name, path in named_queries(ws).items():
        label, sql = f"sql {name}", path.read_text()
        if "$text_emb" not in sql:
            call = partial(run, name, PARAMS.get(name))
        elif dim == 64:  # tiny-clip's width: the real --text path
            label, call = f"sql {name} --text", partial(run, name, PARAMS.get(name), TEXT)
        else:
            label, call = f"sql {name}, random $text_emb", partial(random_vector_query, ws,
                                                                     sql, dim)
        try:
            out = call()  # warm: page cache, the model for --text
            times = [_timed(call) for _ in range(repeats)]
        except Exception as e:  # one failing query must not hide the others
            print(f"{label}: failed ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        ms = statistics.median(times) * 1e3
        rows.append((f"{label} ({out.num_rows} rows)", ms, "ms", "count(*) FROM samples",
                     base * 1e3, ms / (base * 1e3)))
    return rows


def sql_rows(root: Path, n: int, parts: int, dim: int, repeats: int, keep: bool
             ) -> list[tuple]:
    """Fabricate an ``n``-row workspace under ``root``, time the named queries on it and
    delete it unless ``keep``."""
    ws_dir = root / f"sql-ws-{n}-{dim}"
    t = time.perf_counter()
    ws = fabricate(ws_dir, n, parts, dim)
    build = time.perf_counter() - t
    size = sum(p.stat().st_size for p in ws_dir.rglob("*") if p.is_file())
    print(f"sql: fabricated {n} rows ({parts} parts, {dim}-d embeddings, {size / 1e9:.2f} GB) "
          f"in {build:.0f}s at {ws_dir}", flush=True)
    try:
        return query_rows(ws, repeats, dim)
    finally:
        if not keep:
            shutil.rmtree(ws_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=10)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the fabricated workspace")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    rows = sql_rows(Path(a.out), a.n, a.parts, a.dim, a.repeats, a.keep)
    print(f"{'query':<52}{'median ms':>10}{'floor ms':>10}{'ratio':>8}")
    for name, v, _, _, ref, ratio in rows:
        print(f"{name:<52}{v:>10.0f}{ref:>10.0f}{ratio:>8.1f}")


if __name__ == "__main__":
    main()
