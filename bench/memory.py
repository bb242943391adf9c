"""Peak memory of ingest and embed as the pool grows: does it stay flat (not a test)?

    .venv/bin/python bench/memory.py [--ingest-sizes 10000 100000] [--embed-sizes 10000 30000]
                                     [--full] [--px 32] [--keep] [--out bench/out]

Pools are written in img2dataset's layout (``00000.tar`` with ``{key}.jpg``, ``{key}.txt`` and
``{key}.json`` per sample, ``00000.parquet`` and ``00000_stats.json`` beside it) from a few
small JPEGs repeated under distinct keys with distinct captions, so 1M samples take a minute or
two to write, not hours to render. Shards hold 5,000 samples (img2dataset writes 10,000), so
even a 10k pool is read by ingest's worker pool. Each measurement runs in a fresh process:
``curate.ingest.ingest`` of the whole pool into a new workspace, then ``curate.passes.embed.embed``
(tiny-clip, CPU, its default decode workers) of that workspace. Peak RSS is the process's
VmHWM, and for its worker processes (ingest's readers, the DataLoader's decoders)
``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the largest of them; each size is compared with the
smallest. The rate of each run is printed too (imports excluded, embed's model load included).
``--full`` adds 1M samples to both (embedding 1M on two cores takes ten minutes or more).

Measured on the 2-core VM (32px): ingest's workers stay at about 150 MB at any size. Its main
process keeps every sample id it has seen (to tell re-ingested rows from duplicate pairs); as a
dict of strings that cost about 250 bytes a sample (223 MB at 10k, 471 MB at 1M), now
``curate.ingest.seen.SeenIds`` holds 24 bytes a sample: 222 MB at 10k, 279 MB at 1M (1M ingested at
8.4k samples/s). Embed stays within allocator noise: main 1,012 MB at 10k, 1,089 MB at 1M, its
decode worker 646 and 694 MB (1M embedded at 2.9k samples/s).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARD = 5_000  # samples a shard (img2dataset: 10,000), so a 10k pool is already two shards
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square")
FULL = 1_000_000

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
{imports}
t = time.perf_counter()
{call}
seconds = time.perf_counter() - t
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({{"main_mb": int(hwm.split()[1]) / 1024, "seconds": seconds,
    "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""
INGEST = ("from curate.ingest import ingest", "ingest([{pool!r}], {ws!r}, progress=False)")
EMBED = ("from curate.passes.embed import embed", "embed({ws!r}, 'tiny-clip', progress=False)")


def jpegs(px: int) -> list[tuple[str, bytes]]:
    """(caption stem, JPEG bytes) of a few ``px``-pixel images: a shape on a colour."""
    out = []
    for i, colour in enumerate(COLOURS):
        shape = SHAPES[i % 2]
        img = Image.new("RGB", (px, px), COLOURS[-1 - i])
        box = (px // 4, px // 4, 3 * px // 4, 3 * px // 4)
        draw = ImageDraw.Draw(img)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append((f"a {colour} {shape}", buf.getvalue()))
    return out


def _member(f, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    f.write(info.tobuf(tarfile.GNU_FORMAT))
    f.write(data)
    f.write(b"\0" * (-len(data) % 512))


def write_shard(out: Path, shard: int, start: int, n: int, images: list[tuple[str, bytes]]
                ) -> None:
    """One img2dataset shard of ``n`` samples numbered from ``start``, tar bytes written
    directly (tarfile's headers, none of its per-member overhead)."""
    name, rows = f"{shard:05d}", []
    with open(out / f"{name}.tar", "wb") as f:
        for i in range(start, start + n):
            stem, data = images[i % len(images)]
            key, caption = f"{shard:05d}{i - start:04d}", f"{stem}, picture number {i}"
            meta = {"url": f"https://example.com/mem/{key}.jpg", "caption": caption,
                    "key": key, "status": "success", "error_message": None,
                    "width": None, "height": None, "original_width": None,
                    "original_height": None, "sha256": None}
            rows.append(meta)
            _member(f, f"{key}.jpg", data)
            _member(f, f"{key}.txt", caption.encode())
            _member(f, f"{key}.json", json.dumps(meta).encode())
        end = f.tell() + 1024
        f.write(b"\0" * (1024 + -end % tarfile.RECORDSIZE))  # end-of-archive, whole records
    pq.write_table(pa.Table.from_pylist(rows), out / f"{name}.parquet")
    (out / f"{name}_stats.json").write_text(json.dumps(
        {"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0}))


def fake_pool(out: Path, n: int, px: int) -> Path:
    """An ``n``-sample pool of ``px``-pixel JPEGs under ``out`` (reused when complete)."""
    done = out / "complete.json"
    if done.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    images = jpegs(px)
    for shard, start in enumerate(range(0, n, SHARD)):
        write_shard(out, shard, start, min(SHARD, n - start), images)
    done.write_text(json.dumps({"n": n, "px": px}))
    return out


def child(imports: str, call: str) -> dict:
    """Run ``call`` in a fresh Python process; its peak RSS and seconds (imports not timed)."""
    code = CHILD.format(root=str(ROOT), imports=imports, call=call)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"child failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(root: Path, ingest_sizes: list[int], embed_sizes: list[int], px: int,
            keep: bool = False) -> dict[str, dict[int, dict]]:
    """{"ingest"|"embed": {size: child figures}}; each size's pool and workspace are deleted
    after it is measured unless ``keep``."""
    out: dict[str, dict[int, dict]] = {"ingest": {}, "embed": {}}
    for n in sorted(set(ingest_sizes) | set(embed_sizes)):
        t = time.perf_counter()
        pool = fake_pool(root / f"mem-pool-{n}-{px}", n, px)
        print(f"memory: {n}-sample pool of {px}px JPEGs ready in "
              f"{time.perf_counter() - t:.0f}s", flush=True)
        ws = root / f"mem-ws-{n}-{px}"
        shutil.rmtree(ws, ignore_errors=True)
        try:
            r = child(INGEST[0], INGEST[1].format(pool=str(pool), ws=str(ws)))
            if n in ingest_sizes:
                out["ingest"][n] = r
            print(f"memory: ingest {n}: {json.dumps(r)}", flush=True)
            if n in embed_sizes:
                out["embed"][n] = r = child(EMBED[0], EMBED[1].format(ws=str(ws)))
                print(f"memory: embed {n}: {json.dumps(r)}", flush=True)
        finally:
            if not keep:
                shutil.rmtree(ws, ignore_errors=True)
                shutil.rmtree(pool, ignore_errors=True)
    return out


def memory_rows(root: Path, ingest_sizes: list[int], embed_sizes: list[int], px: int = 32,
                keep: bool = False) -> list[tuple]:
    """Suite rows: peak RSS of the main process and of the largest worker at each size,
    against the smallest size's."""
    got = measure(root, ingest_sizes, embed_sizes, px, keep)
    rows = []
    for what, sizes in got.items():
        if not sizes:
            continue
        small = min(sizes)
        for n, r in sorted(sizes.items()):
            for proc, col in (("main", "main_mb"), ("largest worker", "workers_mb")):
                base = sizes[small][col]
                rows.append((f"{what} peak RSS, {proc}, {n:,} samples", r[col], "MB",
                             f"same at {small:,} samples", base,
                             r[col] / base if base else float("nan")))
            rows.append((f"{what} rate in that run, {n:,} samples", n / r["seconds"],
                         "samples/s", "", float("nan"), float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ingest-sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--embed-sizes", type=int, nargs="*", default=[10_000, 30_000])
    ap.add_argument("--full", action="store_true", help="add 1M samples to both")
    ap.add_argument("--px", type=int, default=32)
    ap.add_argument("--keep", action="store_true", help="keep the pools and workspaces")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    extra = [FULL] if a.full else []
    rows = memory_rows(Path(a.out), a.ingest_sizes + extra, a.embed_sizes + extra, a.px,
                       a.keep)
    print(f"{'measured':<48}{'value':>10}  {'against':<24}{'value':>10}{'ratio':>8}")
    for name, v, unit, ref, rv, ratio in rows:
        print(f"{name:<48}{v:>10.0f}  {ref:<24}{rv:>10.0f}{ratio:>8.2f}" if ref else
              f"{name:<48}{v:>10.0f}  ({unit})")


if __name__ == "__main__":
    main()
