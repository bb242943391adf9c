"""Every score computed from float16-stored embeddings against the same from float32 storage,
on the synthetic pool (not a test; tests/test_float16.py checks the tolerance).

    .venv/bin/python bench/float16.py [--n 2000] [--seed 0] [--out bench/out/float16]

Makes a pool (``curate synth``), ingests it once, copies the workspace, embeds one copy with
``--dtype float32`` and the other with ``--dtype float16`` (tiny-clip), runs every scoring pass
that works offline on both, and prints, per score column, the largest and the mean absolute
difference, and the AUROC against truth.parquet of each checked column (``score_aurocs``) under
both storages, plus the embeddings' size on disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate import passes  # noqa: E402
from curate.errors import CurateError  # noqa: E402
from curate.ingest import ingest  # noqa: E402
from curate.passes.embed import embed  # noqa: E402
from curate.passes.score import score  # noqa: E402
from curate.synth import make_pool  # noqa: E402
from curate.synth.truth import score_aurocs  # noqa: E402
from curate.workspace import Workspace  # noqa: E402


def scored(ws: Path, dtype: str) -> list[str]:
    """Embed ``ws`` storing ``dtype`` and run every offline pass; the passes that ran."""
    embed(ws, "tiny-clip", dtype=dtype, progress=False)
    ran = []
    for p in passes.list_passes():
        try:
            score(ws, p.name, progress=False)
            ran.append(p.name)
        except CurateError as e:  # a pass that needs weights this machine does not have
            print(f"{p.name}: not run ({e})")
    return ran


def columns(ws: Path) -> dict[str, np.ndarray]:
    """Every numeric score column of ``pairs`` (text ones, a reason, left out), by
    sample_id order."""
    with Workspace.open(ws).connect() as con:
        t = con.sql("SELECT * FROM pairs ORDER BY sample_id").to_arrow_table()
        base = {r[0] for r in con.sql("DESCRIBE samples").fetchall()}
    out = {}
    for name in t.column_names:
        if name in base:
            continue
        col = t[name]
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or \
                pa.types.is_boolean(col.type):
            out[name] = col.to_numpy(zero_copy_only=False).astype(float)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "float16")
    ap.add_argument("--reuse", action="store_true", help="report on the workspaces there")
    a = ap.parse_args()
    pool = a.out / "pool"
    if not a.reuse:
        shutil.rmtree(a.out, ignore_errors=True)
        make_pool(pool, a.n, a.seed)
        ingest([str(pool)], a.out / "f32", progress=False)
        shutil.copytree(a.out / "f32", a.out / "f16")
        ran = [scored(a.out / d, t) for d, t in (("f32", "float32"), ("f16", "float16"))][0]
        print(f"passes run: {', '.join(ran)}")
    ran = ("f32", "f16")
    size = {d: sum(p.stat().st_size for p in (a.out / d / "embeddings" / "tiny-clip").glob(
        "part-*.parquet")) for d in ran}
    print(f"embeddings on disk: float32 {size['f32'] / 2**20:.2f} MiB, float16 "
          f"{size['f16'] / 2**20:.2f} MiB ({size['f16'] / size['f32']:.2f}x)")
    c32, c16 = columns(a.out / "f32"), columns(a.out / "f16")
    print("| column | max abs diff | mean abs diff | float32 range |\n|---|---|---|---|")
    for name in sorted(c32):
        x, y = c32[name], c16[name]
        both = ~np.isnan(x) & ~np.isnan(y)
        assert (np.isnan(x) == np.isnan(y)).all(), f"{name}: nulls differ"
        if not both.any():  # a column null everywhere (no head for it, say)
            continue
        d = np.abs(x[both] - y[both])
        print(f"| {name} | {d.max():.3g} | {d.mean():.3g} | {np.nanmin(x):.3g} .. "
              f"{np.nanmax(x):.3g} |")
    au = {d: {r["column"]: r["auroc"] for r in score_aurocs(a.out / d, pool)} for d in ran}
    print("| AUROC against truth | float32 | float16 |\n|---|---|---|")
    for name in au["f32"]:
        print(f"| {name} | {au['f32'][name]:.4f} | {au['f16'][name]:.4f} |")


if __name__ == "__main__":
    main()
