"""Every verb on a fabricated workspace of 1M (or 3M, 10M) samples, timed with its peak RSS
(not a test; ``make bench BENCH_ARGS=--scale`` runs it from bench/suite.py).

    .venv/bin/python bench/scale.py [--n 1000000] [--part-rows 5000] [--dim 64]
                                    [--only NAME ...] [--keep] [--out bench/out/scale]

The workspace is written straight into the layout the passes write (as bench/sql_latency.py
does, whose helpers it uses), in ingest's parts of ``--part-rows``: ``samples/`` (about 3%
failed rows), ``embeddings/tiny-clip/`` stored as float16 (``curate embed --dtype float16``),
64-d vectors around 1,000 centres so nearest-neighbour search has the structure real
embeddings have, ``scores/clip_score``, ``text_stats``, ``image_stats``, a map and two
selections. Unlike sql_latency's, every sample points at real image bytes: a distinct 32x32
JPEG per sample in tars under ``pool/`` (2% of samples share another's bytes, exact
duplicates), so dedup's perceptual stage, export and verify read what they would read.

Each verb then runs as its own ``curate`` process (``python -m curate.cli``), timed wall to
wall, its peak RSS read from ``os.wait4``: info, every named query (``similar_to_text`` with
``--text`` before and after ``curate index``), index, select where/top/random, dedup exact,
dedup exact+perceptual, dedup semantic (through the index), semdedup, coreset, map (UMAP fit on
a 20k sample, the rest placed), card, export of a selection of up to 1M samples and verify.
The table goes to stdout and ``<out>/scale-<n>.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))


def _sql_latency() -> object:
    """bench/sql_latency.py, loaded by path (bench/ stays off sys.path, as in suite.py)."""
    name = "bench_sql_latency"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / "sql_latency.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


sl = _sql_latency()

from curate.files import write_json, write_parquet  # noqa: E402
from curate.hashing import image_hash  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

MODEL = sl.MODEL
TARGETS = {"sql": 2.0, "where": 10.0, "top": 10.0, "map": 15 * 60.0}  # seconds
RSS_TARGET = 8 * 2**30


def jpegs(rng: np.random.Generator, n: int) -> list[bytes]:
    """``n`` distinct 32x32 JPEGs: a random 4x4 colour grid, upscaled."""
    grids = rng.integers(0, 256, (n, 4, 4, 3), np.uint8)
    out = []
    for g in grids:
        buf = io.BytesIO()
        Image.fromarray(g).resize((32, 32), Image.Resampling.BILINEAR).save(buf, "JPEG",
                                                                           quality=85)
        out.append(buf.getvalue())
    return out


def image_tar(path: Path, keys: list[str], blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Write ``blobs`` as members ``KEY.jpg`` of one tar, as img2dataset names them; (data
    offsets, lengths)."""
    offsets = np.empty(len(blobs), np.int64)
    with open(path, "wb") as f:
        for i, (key, b) in enumerate(zip(keys, blobs, strict=True)):
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(b)
            head = info.tobuf(tarfile.USTAR_FORMAT)
            f.write(head)
            offsets[i] = f.tell()
            f.write(b + b"\0" * (-len(b) % 512))
        f.write(b"\0" * 1024)
    return offsets, np.array([len(b) for b in blobs], np.int64)


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    return (centres[rng.integers(0, len(centres), n)]
            + 0.6 * rng.standard_normal((n, centres.shape[1]), np.float32))


def fabricate(root: Path, n: int, part_rows: int, dim: int, seed: int = 0) -> Workspace:
    """Write the workspace ``root/ws`` and its image tars ``root/pool`` (replacing them)."""
    ws, pool = root / "ws", root / "pool"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.rmtree(pool, ignore_errors=True)
    pool.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim), np.float32)
    ok_ids, clip, junk = [], [], []
    parts = -(-n // part_rows)
    t0 = time.time()
    for i in range(parts):
        m = min(part_rows, n - i * part_rows)
        name = f"part-{i:06d}.parquet"
        t = sl.samples_part(rng, i, m, sources=1)
        blobs = jpegs(rng, m)
        dup = np.flatnonzero(rng.random(m) < 0.02)
        for j in dup:  # an exact copy of another sample's bytes in this part
            blobs[j] = blobs[(j + 1 + rng.integers(0, m - 1)) % m]
        tar = pool / f"{i:06d}.tar"
        off, length = image_tar(tar, t["key"].to_pylist(), blobs)
        t = t.set_column(t.schema.get_field_index("image_path"), "image_path",
                         pa.array([str(tar)] * m))
        t = t.set_column(t.schema.get_field_index("source"), "source", pa.array([str(tar)] * m))
        for col, val in (("image_offset", off), ("image_length", length),
                         ("width", np.full(m, 32, np.int32)),
                         ("height", np.full(m, 32, np.int32)),
                         ("image_hash", [image_hash(b) for b in blobs])):
            k = t.schema.get_field_index(col)
            t = t.set_column(k, col, pa.array(val, t.schema.field(col).type))
        write_parquet(t, ws / "samples" / name)
        ok = t.filter(pa.compute.equal(t["status"], "ok"))
        outs = sl.pass_parts(rng, ok, dim)
        img = clustered(rng, centres, ok.num_rows)
        txt = img + rng.standard_normal(img.shape, np.float32)
        e = outs[f"embeddings/{MODEL}"]
        for col, x in (("image_emb", img), ("text_emb", txt)):
            e = e.set_column(e.schema.get_field_index(col), col, pa.FixedSizeListArray.from_arrays(
                pa.array(x.astype(np.float16).reshape(-1)), dim))
        for col, x in (("image_norm", img), ("text_norm", txt)):
            e = e.set_column(e.schema.get_field_index(col), col,
                             pa.array(np.linalg.norm(x, axis=1).astype(np.float32)))
        outs[f"embeddings/{MODEL}"] = e
        for folder, table in outs.items():
            write_parquet(table, ws / folder / name)
        ok_ids.append(ok["sample_id"].to_numpy(zero_copy_only=False).astype(object))
        clip.append(outs["scores/clip_score"]["clip_score"].to_numpy())
        junk.append(outs["scores/text_stats"]["junk"].to_numpy(zero_copy_only=False))
        if i % 20 == 0:
            rate = (i + 1) * part_rows / (time.time() - t0)
            print(f"fabricate: part {i + 1}/{parts}, {rate:,.0f} samples/s", file=sys.stderr)
    ok = np.concatenate(ok_ids)
    sl.manifests(ws, len(ok), parts, dim)
    emb = ws / "embeddings" / MODEL / "manifest.json"
    write_json({**json.loads(emb.read_text()), "dtype": "float16"}, emb)
    sl.fake_map(ws, rng, ok, "bench/scale.py")
    sl.selections(ws, rng, ok, np.concatenate(clip), np.concatenate(junk))
    w = Workspace.open(ws)
    w.refresh()
    return w


def run(args: list[str], env: dict) -> tuple[float, int, int, str]:
    """(seconds, peak RSS bytes, exit status, last output line) of one ``curate`` process."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    lines = [x for x in out.strip().splitlines() if x.strip()]
    return (time.perf_counter() - t, usage.ru_maxrss * 1024, p.returncode,
            lines[-1][:120] if lines else "")


def verbs(ws: Path, out: Path, n_ok: int) -> list[tuple[str, str, list[str]]]:
    """(label, target kind, curate arguments) of every verb, in the order they run."""
    w = ["-w", str(ws)]
    sel = ["select", *w, "--force"]
    rows = [("info", "", ["info", *w])]
    for name in sl.named_queries(Workspace.open(ws)):
        params = [f"--param={k}={v}" for k, v in sl.PARAMS.get(name, {}).items()]
        text = ["--text", sl.TEXT, "--model", MODEL] if name == "similar_to_text" else []
        label = f"sql {name}" + (" (exact scan)" if text else "")
        rows.append((label, "sql", ["sql", *w, name, *params, *text]))
    rows += [
        ("index (build)", "", ["index", *w, "--model", MODEL]),
        ("sql similar_to_text (index)", "sql",
         ["sql", *w, "similar_to_text", "--text", sl.TEXT, "--model", MODEL]),
        ("select where", "where", [*sel, "w", "where", "clip_score > 0.5 AND NOT junk"]),
        ("select top 30%", "top", [*sel, "top30", "top", "clip_score", "0.3"]),
        ("select random", "", [*sel, "big", "random", str(min(n_ok, 1_000_000))]),
        ("select dedup exact", "", [*sel, "dx", "dedup", "stages=exact"]),
        ("select dedup semantic (index)", "", [*sel, "ds", "dedup", "stages=semantic",
                                               "semantic=0.99"]),
        ("select semdedup", "", [*sel, "sd", "semdedup"]),
        ("select coreset 10%", "", [*sel, "cs", "coreset", "0.1"]),
        ("map (fit 20k, place rest)", "map", ["map", *w, "--name", "scale"]),
        ("card top30", "", ["card", *w, "top30"]),
        ("export big", "", ["export", *w, "big", str(out / "export"), "--no-card"]),
        ("verify", "", ["verify", *w]),
        ("select dedup exact+perceptual", "", [*sel, "dp", "dedup", "stages=exact,perceptual"]),
    ]
    return rows


def ann_rows(ws: Path, queries: int = 50) -> list[str]:
    """In this process: ``curate.ann.search`` through the index against the exact scan of
    the same parts (``curate.ann``'s own fallback), both on the stored captions' vectors of
    ``queries`` random samples, with recall@10 of the index against the scan."""
    import pyarrow.parquet as pq

    from curate import ann
    from curate.arrays import normalize, vectors
    w = Workspace.open(ws)
    parts = sorted((ws / "embeddings" / MODEL).glob("part-*.parquet"))
    rng = np.random.default_rng(1)
    q = np.concatenate([normalize(vectors(pq.read_table(p, columns=["text_emb"])["text_emb"]))[:1]
                        for p in rng.choice(parts, queries)])
    t = time.perf_counter()
    ann.search(w, MODEL, q[:1], 10)  # loads (maps) the index
    first = time.perf_counter() - t
    idx, times = [], []
    for v in q:
        t = time.perf_counter()
        idx.append(ann.search(w, MODEL, v, 10)["sample_id"].to_pylist())
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    ann._exact(w, MODEL, "image_emb", q[:1], 10)  # one phrase's exact scan
    slow_one = time.perf_counter() - t
    _, keys = ann._exact(w, MODEL, "image_emb", q, 10)  # every query's truth, one pass
    ex = [ann._sample_ids(w, MODEL, k) for k in keys]
    rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ex, strict=True)])
    ex_times = [slow_one]
    fast, slow = float(np.median(times)), float(np.median(ex_times))
    return [f"| ann.search, index (first call, maps it) | {first:.3f} | | | | |",
            f"| ann.search, index (median of {queries}) | {fast:.4f} | | recall@10 {rec:.3f} "
            f"against the exact scan | | |",
            f"| ann exact scan of every part (one query) | {slow:.2f} | | index "
            f"{slow / fast:.0f}x faster | | |"]


def scale_table(out: Path, n: int, part_rows: int = 5000, dim: int = 64,
                only: list[str] | None = None, reuse: bool = False, keep: bool = False
                ) -> tuple[list[str], list[tuple]]:
    """Fabricate (or ``reuse``) the ``n``-sample workspace under ``out``, run every verb (or
    those whose labels start with one of ``only``); (markdown lines, suite rows)."""
    root = out / f"n{n}"
    t = time.perf_counter()
    if not (reuse and (root / "ws" / "samples").is_dir()):
        fabricate(root, n, part_rows, dim)
    build = time.perf_counter() - t
    ws = root / "ws"
    n_ok = Workspace.open(ws).manifest("embeddings", MODEL)["rows"]
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lines = [f"# scale: {n:,} samples ({n_ok:,} ok), parts of {part_rows:,}, "
             f"{dim}-d float16 embeddings",
             f"fabricated in {build:.0f} s, {size / 2**30:.2f} GiB; {os.cpu_count()} cores, "
             f"load {os.getloadavg()[0]:.1f} at start", "",
             "| verb | seconds | peak RSS (GiB) | target | exit | last line |",
             "|---|---|---|---|---|---|"]
    rows = []
    print("\n".join(lines), flush=True)
    for label, kind, args in verbs(ws, root, n_ok):
        if only and not any(label.startswith(o) for o in only):
            continue
        shutil.rmtree(root / "export", ignore_errors=True)
        sec, rss, code, last = run(args, env)
        target = TARGETS.get(kind)
        met = "" if target is None else (f"< {target:g} s " +
                                         ("met" if sec < target else "MISSED"))
        if rss > RSS_TARGET:
            met += " RSS MISSED"
        row = (f"| {label} | {sec:.2f} | {rss / 2**30:.2f} | {met} | {code} | "
               f"{last.replace('|', '/')} |")
        lines.append(row)
        rows.append((f"{n:,}: {label} (exit {code}, peak RSS {rss / 2**30:.2f} GiB)", sec, "s",
                     "target" if target else "", target or float("nan"),
                     sec / target if target else float("nan")))
        print(row, flush=True)
    if not only or any("ann".startswith(o) for o in only):
        for row in ann_rows(ws):
            lines.append(row)
            print(row, flush=True)
    (out / f"scale-{n}.md").write_text("\n".join(lines) + "\n")
    if not keep:
        shutil.rmtree(root)
    return lines, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--part-rows", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--only", nargs="+", help="labels (prefixes) of the verbs to run")
    ap.add_argument("--reuse", action="store_true", help="keep a workspace already there")
    ap.add_argument("--keep", action="store_true", help="keep the workspace at the end")
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "scale")
    a = ap.parse_args()
    scale_table(a.out, a.n, a.part_rows, a.dim, a.only, a.reuse, a.keep)


if __name__ == "__main__":
    main()
