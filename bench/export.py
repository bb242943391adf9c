"""Export throughput against a raw byte copy of the same images on the same disk (not a test).

    .venv/bin/python bench/export.py [--n 30000] [--image-size 256] [--repeats 15]
    .venv/bin/python bench/export.py --pools POOL [POOL ...]  # several pools as one selection

The raw copy reads each selected image by reference (``os.pread`` at its offset, in the same
source order as the export) and writes the bytes one after another into one file: the least any
export must do. ``curate export`` (default ``--verify sample``; the data card is left out, it is
a fixed cost) writes tars with .txt and .json members, hashes every shard (BLAKE3) and checks
every image's source header and every 16th image's ingest hash. Runs alternate so both see the
same machine load, each after ``sync`` so none pays for the last one's writeback; the ratio is
the median export rate over the median raw rate (target >= 0.7); the median of the per-repeat
ratios and the ratio of the best runs are printed beside it.
CPU time per image (all threads) is reported too: on a shared machine it varies less than wall
time. Peak RSS (VmHWM) of an export of the whole pool and of a quarter of it, each in a fresh
process, shows memory stays flat as the selection grows. The machine is shared: read the median
ratio and the spread of ratios per repeat, not one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.export import export  # noqa: E402
from curate.ingest import ingest  # noqa: E402
from curate.select import select  # noqa: E402
from curate.synth import make_pool  # noqa: E402
from curate.workspace import Workspace  # noqa: E402


def raw_copy(ws: Path, dest: Path) -> tuple[int, int, float]:
    """Copy the selected images' bytes into one file; (images, bytes, seconds). The selection's
    path is spelled out, not ``Workspace.selection``: ``export_ab.py`` runs this under another
    checkout's curate, which may predate it."""
    with Workspace.open(ws).connect(read_only=True) as con:
        refs = con.sql("""SELECT image_path, image_offset, image_length FROM samples
                          WHERE sample_id IN (SELECT sample_id FROM
                          read_parquet($sel)) ORDER BY image_path, image_offset, sample_id""",
                       params={"sel": str(ws / "selections" / "all.parquet")}).fetchall()
    t = time.perf_counter()
    fds: dict[str, int] = {}
    with open(dest, "wb") as out:
        for path, offset, length in refs:
            fd = fds.get(path)
            if fd is None:
                fd = fds[path] = os.open(path, os.O_RDONLY)
            out.write(os.pread(fd, length, offset))
    seconds = time.perf_counter() - t
    for fd in fds.values():
        os.close(fd)
    return len(refs), sum(r[2] for r in refs), seconds


def cpu() -> float:
    """CPU seconds of this process, all threads (DuckDB's, the writer's) included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb(ws: Path, selection: str, out: Path) -> float:
    """Peak RSS of a fresh process that exports ``selection``."""
    code = ("from curate.export import export; "
            f"export({str(ws)!r}, {selection!r}, {str(out)!r}, shard_size=1000, card=False, "
            "progress=False); print(open('/proc/self/status').read())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=Path(__file__).resolve().parents[1])
    hwm = next(line for line in r.stdout.splitlines() if line.startswith("VmHWM"))
    return int(hwm.split()[1]) / 1024  # kB


def measure(n: int, image_size: int, repeats: int, root: Path,
            pool: Path | list[Path] | None = None) -> dict:
    """Export of an ``n``-sample pool (written, unless ``pool`` names one or several, and
    ingested under ``root`` once, then reused) against a raw copy, ``repeats`` alternating runs;
    the figures as a dict (see the module doc)."""
    pools = [pool] if isinstance(pool, Path) else pool or [root / f"pool-{n}-{image_size}"]
    ws = root / (f"ws-{n}-{image_size}" if pool is None or isinstance(pool, Path)
                 else f"ws-{'+'.join(p.name for p in pools)}")
    if not (pools[0] / "truth.parquet").exists():
        print(f"writing a {n}-sample pool of {image_size}px images ...", file=sys.stderr)
        make_pool(pools[0], n, seed=3, shard_size=2000, size=image_size)
    if not (ws / "selections" / "all.json").exists():
        shutil.rmtree(ws, ignore_errors=True)
        ingest([str(p) for p in pools], ws, progress=False)
        select(ws, "all", [("where", {"expr": "true"})])
        select(ws, "quarter", [("random", {"amount": "0.25"})])
    raw_rates, exp_rates, full_rates, raw_cpu, exp_cpu = [], [], [], [], []
    images = nbytes = 0
    raw_copy(ws, root / "raw.bin")  # warm up: page cache, imports, numba's cached kernels
    shutil.rmtree(root / "exported", ignore_errors=True)
    export(ws, "all", root / "exported", shard_size=1000, card=False, progress=False)
    for _ in range(repeats):
        (root / "raw.bin").unlink(missing_ok=True)
        os.sync()  # every run starts with no dirty pages of the one before to write back
        c = cpu()
        images, nbytes, s = raw_copy(ws, root / "raw.bin")
        raw_cpu.append(cpu() - c)
        raw_rates.append(images / s)
        for verify, rates in (("sample", exp_rates), ("all", full_rates)):
            shutil.rmtree(root / "exported", ignore_errors=True)
            os.sync()
            t, c = time.perf_counter(), cpu()
            export(ws, "all", root / "exported", shard_size=1000, verify=verify, card=False,
                   progress=False)
            rates.append(images / (time.perf_counter() - t))
            if verify == "sample":
                exp_cpu.append(cpu() - c)
    (root / "raw.bin").unlink()
    exported = sum(p.stat().st_size for p in (root / "exported").glob("*.tar"))
    shutil.rmtree(root / "exported")
    rss = {}
    for sel in ("quarter", "all"):
        rss[sel] = peak_rss_mb(ws, sel, root / "rss")
        shutil.rmtree(root / "rss")
    raw, exp, full = (statistics.median(r) for r in (raw_rates, exp_rates, full_rates))
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(), "images": images, "image_bytes": nbytes,
        "mean_image_kb": round(nbytes / images / 1e3, 1), "tar_bytes": exported,
        "raw_copy_samples_per_s": round(raw), "raw_copy_mb_per_s": round(raw * nbytes / images
                                                                          / 1e6),
        "export_samples_per_s": round(exp), "export_verify_all_samples_per_s": round(full),
        "ratio": round(exp / raw, 2), "ratio_verify_all": round(full / raw, 2),
        "ratio_median_of_pairs": round(statistics.median(
            e / r for e, r in zip(exp_rates, raw_rates, strict=True)), 2),
        "ratio_best_runs": round(max(exp_rates) / max(raw_rates), 2),
        "cpu_us_per_image": {"raw_copy": round(statistics.median(raw_cpu) / images * 1e6, 1),
                             "export": round(statistics.median(exp_cpu) / images * 1e6, 1)},
        "ratios_per_repeat": [round(e / r, 2) for e, r in zip(exp_rates, raw_rates,
                                                               strict=True)],
        "peak_rss_mb": {f"{sel} ({n} samples)": round(v) for (sel, v), n in
                        zip(rss.items(), (images // 4, images), strict=True)},
        }
    (root / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--image-size", type=int, default=256, help="img2dataset's default size")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default="bench/out/export")
    ap.add_argument("--pools", nargs="+", type=Path,
                    help="export these img2dataset pools (ingested together) instead of --n")
    a = ap.parse_args()
    print(json.dumps(measure(a.n, a.image_size, a.repeats, Path(a.out), a.pools), indent=2))


if __name__ == "__main__":
    main()
