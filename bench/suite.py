"""Every benchmark in one run, as one table of figures and ratios measured side by side.

    .venv/bin/python bench/suite.py [--quick | --smoke] [--memory-full] [--device] [--scale]
                                    [--keep]
                                    [--only SECTION ...] [--out bench/out]

Sections (each a function returning rows of (measured, value, unit, against, against value,
ratio); one that fails prints its error on one line and the rest still run):

* ingest: samples/s against a raw ``tarfile`` scan of the same shards (bench/run.py);
* embed: tiny-clip samples/s against decode-only throughput, 1 and all decode workers;
* score: samples/s of every offline scoring pass (bench/run.py ``PASSES``);
* export: against a raw byte copy of the same images, and peak RSS of a whole and a quarter
  export (bench/export.py);
* maps: ``curate``'s layout against a full umap-learn fit of the same points, time and
  neighbourhood preservation (bench/maps.py ``quality``);
* coreset: ClipCov time and peak RSS at 100k and 1M samples, each N in its own process
  (bench/coreset.py; ``--quick`` leaves 1M out);
* sql: every named query on a fabricated 1M-row workspace, median of 3 (bench/sql_latency.py;
  ``--quick``: 100k rows);
* memory: peak RSS of ingest and embed as the pool grows (bench/memory.py; ``--memory-full``
  adds 1M samples to both);
* ray: embed and clip_score with ``--engine ray`` (a local Ray instance, one actor per CPU)
  against the local runner on the same pool, Ray's start-up apart;
* scale: with ``--scale``, every verb timed with its peak RSS on a fabricated workspace of 1M
  samples (bench/scale.py; ``--scale-n`` for 3M or 10M; ``--smoke``: 20k);
* gpu: with ``--device`` on a machine with a GPU, ViT-B-32 and ViT-L-14 shaped bf16 throughput
  against the compute bound (bench/gpu.py).

The defaults fit two cores and 24 GB in about ten minutes. The table is printed and written as
markdown to ``bench/out/suite.md``; fabricated workspaces and pools of the sql and memory
sections are deleted at the end unless ``--keep`` (the synthetic pools of the first sections
are kept and reused, as bench/run.py does).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".venv" / "numba-cache"))

NAN = float("nan")


class Skipped(Exception):
    """A section that does not apply on this machine or with these flags."""

Row = tuple[str, float, str, str, float, float]  # measured, value, unit, against, value, ratio


@dataclass
class Sizes:
    """Every size the suite runs at; printed with the table."""

    pool: int = 10_000  # ingest / embed / score pool
    image_size: int = 256  # img2dataset's default
    workers: list[int] = field(default_factory=lambda: sorted({1, os.cpu_count() or 1}))
    batch_size: int = 256
    export_repeats: int = 3
    map_n: int = 10_000
    map_dim: int = 512
    map_samples: list[int] = field(default_factory=lambda: [2_500])
    coreset: list[int] = field(default_factory=lambda: [100_000, 1_000_000])
    sql_rows: int = 1_000_000
    sql_parts: int = 10
    sql_dim: int = 64
    sql_repeats: int = 3
    ingest_mem: list[int] = field(default_factory=lambda: [10_000, 100_000])
    embed_mem: list[int] = field(default_factory=lambda: [10_000, 30_000])
    mem_px: int = 32
    ray_part_rows: int = 1_000
    scale_n: list[int] = field(default_factory=lambda: [1_000_000])


def bench(name: str) -> ModuleType:
    """bench/NAME.py as module ``bench_NAME`` (bench/ stays off sys.path, so its file names
    never shadow an installed package)."""
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@dataclass
class Context:
    sizes: Sizes
    out: Path
    keep: bool
    device: bool
    scale: bool = False


def section_ingest_embed_score(c: Context) -> list[Row]:
    """bench/run.py's three measurements on one synthetic pool and workspace."""
    run = bench("run")

    s = c.sizes
    shards = run.synthetic_pool(c.out, s.pool, s.image_size)
    ws = c.out / "suite-ws"
    try:
        return (run.ingest_rows(shards, ws) + run.embed_rows(ws, s.workers, s.batch_size)
                + run.vit_rows(ws, c.out) + run.score_rows(ws))
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def section_export(c: Context) -> list[Row]:
    """bench/export.py on the pool of the first section (no second pool to render)."""
    export = bench("export")

    s = c.sizes
    pool = c.out / f"pool-{s.pool}-{s.image_size}"
    run_pool = pool if (pool / "truth.parquet").exists() else None
    r = export.measure(s.pool, s.image_size, s.export_repeats, c.out / "suite-export", run_pool)
    raw = r["raw_copy_samples_per_s"]
    rss = list(r["peak_rss_mb"].items())  # quarter first, then all
    spread = r["ratios_per_repeat"]
    return [(f"export, verify sample (ratios {min(spread)}-{max(spread)})",
             r["export_samples_per_s"], "samples/s", "raw byte copy", raw, r["ratio"]),
            ("export, verify all", r["export_verify_all_samples_per_s"], "samples/s",
             "raw byte copy", raw, r["ratio_verify_all"]),
            (f"export peak RSS, {rss[1][0]}", rss[1][1], "MB", rss[0][0], rss[0][1],
             rss[1][1] / rss[0][1])]


def section_maps(c: Context) -> list[Row]:
    """bench/maps.py quality: curate's layout against a full UMAP fit on the same points."""
    maps = bench("maps")

    s = c.sizes
    x, _ = maps.manifold(s.map_n, s.map_dim)
    got = maps.compare(x, f"manifold {s.map_dim}-d", s.map_samples, False, 0)
    full = next(r for r in got if r["method"].startswith("umap-learn full fit"))
    rows = []
    for r in got:
        if r is full:
            continue
        rows.append((f"map {r['method']}: seconds", r["seconds"], "s",
                     "umap-learn full fit", full["seconds"], r["seconds"] / full["seconds"]))
        rows.append((f"map {r['method']}: preservation", r["preservation"], "15-NN kept",
                     "umap-learn full fit", full["preservation"],
                     r["preservation"] / full["preservation"]))
    return rows


def section_coreset(c: Context) -> list[Row]:
    """bench/coreset.py, one N per process so each peak RSS is that N's alone."""
    rows = []
    for n in c.sizes.coreset:
        p = subprocess.run([sys.executable, str(BENCH / "coreset.py"), "--n", str(n)],
                           capture_output=True, text=True, cwd=ROOT)
        if p.returncode:
            raise RuntimeError(f"coreset N={n}: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        rows += [(f"coreset ClipCov, {n:,} x {r['dim']}-d, budget {r['budget']:,}",
                  r["clipcov_s"], "s", f"k-means partition, k={r['k']}", r["kmeans_s"],
                  r["clipcov_s"] / r["kmeans_s"]),
                 (f"coreset peak RSS, {n:,} (whole run)", r["peak_rss_gib"], "GiB",
                  "input vectors (image + text)", r["input_gib"],
                  r["peak_rss_gib"] / r["input_gib"])]
    return rows


def section_sql(c: Context) -> list[Row]:
    """bench/sql_latency.py: every named query on a fabricated workspace."""
    sql_latency = bench("sql_latency")

    s = c.sizes
    return sql_latency.sql_rows(c.out, s.sql_rows, s.sql_parts, s.sql_dim, s.sql_repeats,
                                c.keep)


def section_memory(c: Context) -> list[Row]:
    """bench/memory.py: peak RSS of ingest and embed at growing pool sizes."""
    memory = bench("memory")

    s = c.sizes
    return memory.memory_rows(c.out, s.ingest_mem, s.embed_mem, s.mem_px, c.keep)


def section_ray(c: Context) -> list[Row]:
    """embed and score with --engine ray (a local Ray instance, one actor per CPU) against the
    local runner on the same workspace; Ray's start-up is timed apart."""
    try:
        import ray
    except ModuleNotFoundError:
        raise Skipped("Ray rows skipped: ray is not installed (pip install 'curate[ray]')"
                      ) from None
    from curate.ingest import ingest
    from curate.passes.embed import embed
    from curate.passes.score import score

    s = c.sizes
    shards = bench("run").synthetic_pool(c.out, s.pool, s.image_size)
    base, rows = c.out / "suite-ray", []
    shutil.rmtree(base, ignore_errors=True)
    try:
        ingest([str(p) for p in shards], base / "local", part_rows=s.ray_part_rows,
               progress=False)
        shutil.copytree(base / "local", base / "ray")
        t = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        start = time.perf_counter() - t
        for what, run in (("embed tiny-clip", lambda ws, **kw: embed(ws, "tiny-clip", **kw)),
                          ("score clip_score", lambda ws, **kw: score(ws, "clip_score", **kw))):
            local = run(base / "local", progress=False)
            remote = run(base / "ray", progress=False, engine="ray")
            rows.append((f"{what}, --engine ray ({remote.parts_written} parts)",
                         remote.samples_per_s, "samples/s", "local runner",
                         local.samples_per_s, remote.samples_per_s / local.samples_per_s))
        rows.append(("Ray start-up (local instance)", start, "s", "", NAN, NAN))
        return rows
    finally:
        ray.shutdown()
        shutil.rmtree(base, ignore_errors=True)


def section_scale(c: Context) -> list[Row]:
    """bench/scale.py: every verb on a fabricated workspace, only with --scale."""
    if not c.scale:
        raise Skipped("scale rows skipped: no --scale")
    scale = bench("scale")
    return [r for n in c.sizes.scale_n
            for r in scale.scale_table(c.out / "scale", n, keep=c.keep)[1]]


def section_gpu(c: Context) -> list[Row]:
    """bench/gpu.py with its defaults, only with --device and a GPU."""
    if not c.device:
        raise Skipped("GPU rows skipped: no --device")
    import torch

    if not torch.cuda.is_available():
        raise Skipped("GPU rows skipped: --device given, but torch sees no GPU")
    gpu = bench("gpu")

    peak = gpu.peak_tflops("cuda", None)
    rows = []
    for arch in ("ViT-B-32", "ViT-L-14"):
        r = gpu.throughput(arch, "cuda", 256, 20)
        bound = peak * 1e12 / (r["gflops_per_image"] * 1e9) if peak else NAN
        rows.append((f"{arch} bf16 encode_image, batch 256 ({r['tflops']:.0f} TFLOPs)",
                     r["images_per_s"], "images/s", f"compute bound at {peak or '?'} TFLOPs",
                     bound, r["images_per_s"] / bound))
    return rows


SECTIONS: dict[str, tuple[Callable[[Context], list[Row]], Callable[[Sizes], str]]] = {
    "ingest-embed-score": (section_ingest_embed_score, lambda s: (
        f"pool {s.pool:,} synthetic samples, {s.image_size}px JPEG, batch {s.batch_size}, "
        f"decode workers {s.workers}")),
    "export": (section_export, lambda s: (
        f"the same pool, {s.export_repeats} alternating repeats, medians")),
    "maps": (section_maps, lambda s: (
        f"{s.map_n:,} points on a {s.map_dim}-d manifold; curate samples {s.map_samples}")),
    "coreset": (section_coreset, lambda s: (
        f"N = {', '.join(f'{n:,}' for n in s.coreset)}, random 512-d unit vectors, 30% kept")),
    "sql": (section_sql, lambda s: (
        f"fabricated workspace of {s.sql_rows:,} rows, {s.sql_parts} parts, {s.sql_dim}-d "
        f"embeddings; median of {s.sql_repeats}")),
    "memory": (section_memory, lambda s: (
        f"{s.mem_px}px pools; ingest at {', '.join(f'{n:,}' for n in s.ingest_mem)}; "
        f"embed at {', '.join(f'{n:,}' for n in s.embed_mem)}")),
    "ray": (section_ray, lambda s: (
        f"the same pool in parts of {s.ray_part_rows:,}; local Ray instance, one actor per "
        "CPU")),
    "scale": (section_scale, lambda s: (
        f"fabricated workspaces of {', '.join(f'{n:,}' for n in s.scale_n)} samples, parts "
        "of 5,000, 64-d float16 embeddings; one curate process per verb")),
    "gpu": (section_gpu, lambda s: "ViT-B-32, ViT-L-14 shaped, random init, batch 256"),
}


def machine() -> str:
    """CPU count and model, RAM, platform and GPU (or none), in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal"))
        ram = f"{kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        ram = "RAM unknown"
    gpu = "none"
    if shutil.which("nvidia-smi"):
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpu = "; ".join(p.stdout.strip().splitlines()) or "none"
    return (f"{os.cpu_count()} CPUs ({cpu}), {ram}, {platform.platform()}, "
            f"Python {platform.python_version()}, GPU: {gpu}")


def fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if a >= 0.01 or a == 0 else f"{v:.2e}"


def ratio_fmt(r: float) -> str:
    return "" if math.isnan(r) else f"{r:.0f}" if abs(r) >= 100 else f"{r:.2f}"


def run_section(name: str, c: Context) -> tuple[list[Row], float, str | None]:
    """(rows, seconds, note: the error or why it was skipped, else None) of one section."""
    fn = SECTIONS[name][0]
    print(f"\n== {name}: {SECTIONS[name][1](c.sizes)}", flush=True)
    t = time.perf_counter()
    try:
        rows, err = fn(c), None
    except Skipped as e:
        rows, err = [], str(e)
        print(f"{name}: {err}", flush=True)
    except Exception as e:  # a failing section must not stop the others
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        rows, err = [], f"FAILED: {type(e).__name__}: {msg}"
        print(f"{name}: {err}", flush=True)
    return rows, time.perf_counter() - t, err


HEAD = ("measured", "value", "unit", "against", "value", "ratio")


def text_table(done: list[tuple[str, list[Row], float, str | None]], sizes: Sizes) -> str:
    """The fixed-width table: a header line per section (its sizes and wall time)."""
    w = (60, 10, 12, 36, 10, 7)
    line = (f"{HEAD[0]:<{w[0]}}{HEAD[1]:>{w[1]}}{HEAD[2]:>{w[2]}}  {HEAD[3]:<{w[3]}}"
            f"{HEAD[4]:>{w[4]}}{HEAD[5]:>{w[5]}}")
    out = [line, "-" * len(line)]
    for name, rows, secs, err in done:
        out.append(f"[{name}] {SECTIONS[name][1](sizes)}; {secs:.0f}s")
        if err:
            out.append(f"  {err}")
        for m, v, unit, ref, rv, ratio in rows:
            out.append(f"  {m:<{w[0] - 2}}{fmt(v):>{w[1]}}{unit:>{w[2]}}  {ref:<{w[3]}}"
                       f"{fmt(rv):>{w[4]}}{ratio_fmt(ratio):>{w[5]}}")
    return "\n".join(out)


def markdown(done: list[tuple[str, list[Row], float, str | None]], sizes: Sizes,
             header: list[str]) -> str:
    lines = ["# Benchmark suite", ""] + [f"- {h}" for h in header] + [
        "", "| " + " | ".join(HEAD) + " |", "|---|--:|---|---|--:|--:|"]
    for name, rows, secs, err in done:
        lines.append(f"| **{name}**: {SECTIONS[name][1](sizes)}; {secs:.0f}s | | | | | |")
        if err:
            lines.append(f"| {err.replace('|', '/')} | | | | | |")
        for m, v, unit, ref, rv, ratio in rows:
            lines.append(f"| {m} | {fmt(v)} | {unit} | {ref} | {fmt(rv)} | {ratio_fmt(ratio)} |")
    return "\n".join(lines) + "\n"


def sizes_for(a: argparse.Namespace) -> Sizes:
    s = Sizes()
    if a.smoke:  # every section at a size that only checks it runs
        s = Sizes(pool=2_000, image_size=64, export_repeats=1, map_n=3_000, map_samples=[1_000],
                  coreset=[20_000], sql_rows=20_000, sql_parts=2, sql_repeats=1,
                  ingest_mem=[10_000, 20_000], embed_mem=[10_000], ray_part_rows=500,
                  scale_n=[20_000])
    if a.quick:
        s.coreset, s.sql_rows = [100_000], 100_000
    if a.scale_n:
        s.scale_n = a.scale_n
    if a.memory_full:
        s.ingest_mem = sorted({*s.ingest_mem, 1_000_000})
        s.embed_mem = sorted({*s.embed_mem, 1_000_000})
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="coreset at 100k only, SQL on 100k rows")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes: checks that every section runs (figures mean little)")
    ap.add_argument("--memory-full", action="store_true",
                    help="measure ingest and embed memory at 1M samples too (slow)")
    ap.add_argument("--device", action="store_true", help="also run the GPU rows (bench/gpu.py)")
    ap.add_argument("--scale", action="store_true",
                    help="also time every verb on a fabricated 1M-sample workspace (slow)")
    ap.add_argument("--scale-n", type=int, nargs="+", help="--scale sizes (default 1000000)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the fabricated SQL workspace and memory pools")
    ap.add_argument("--only", nargs="+", choices=list(SECTIONS), help="run only these sections")
    ap.add_argument("--out", default=str(BENCH / "out"))
    a = ap.parse_args()
    c = Context(sizes_for(a), Path(a.out).resolve(), a.keep, a.device, a.scale)
    c.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else (
        sys.executable)
    header = [f"command: {shlex.join([exe, *sys.argv])}",
              f"machine: {machine()}",
              f"started {started:%Y-%m-%d %H:%M} UTC; load average at start "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"]
    print("\n".join(header), flush=True)
    t0 = time.perf_counter()
    done = [(name, *run_section(name, c)) for name in (a.only or SECTIONS)]
    total = time.perf_counter() - t0
    header.append(f"wall time {total / 60:.1f} min; load average at end "
                  f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine is shared: "
                  "a load above the core count means other jobs ran alongside)")
    print("\n" + "\n".join(header) + "\n" + text_table(done, c.sizes))
    md = c.out / "suite.md"
    md.write_text(markdown(done, c.sizes, header))
    print(f"\nwritten {md}")


if __name__ == "__main__":
    main()
