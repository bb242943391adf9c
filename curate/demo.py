"""``curate demo``: the main job on the embedded default. A synthetic pool is generated,
ingested into a local workspace, embedded, and every scoring pass that can run offline runs
on it; the figures printed are measured against the pool's ground truth. It ends by making
the map and printing the command that opens it in the explore notebook. Running it again
resumes and adds nothing."""

from __future__ import annotations

import time
from pathlib import Path

from curate import passes
from curate.errors import CurateError
from curate.info import format_info, info
from curate.ingest import ingest
from curate.maps import check_map, list_maps, make_map
from curate.maps.widget_notebook import explore_command, shell_line
from curate.passes.embed import embed
from curate.passes.score import score
from curate.select import select
from curate.synth import make_pool
from curate.synth.truth import dedup_quality, score_aurocs
from curate.workspace import Workspace

SELECTIONS = [("dedup", [("dedup", {"by": "clip_score"})], None),
              ("top30", [("top", {"column": "clip_score", "amount": 0.3})], None),
              ("semdedup", [("semdedup", {"eps": "0.0005,0.001,0.005"})], "dedup"),
              ("coreset30", [("coreset", {"amount": 0.3})], "dedup")]


def demo(workspace: Path, n: int = 2000, seed: int = 0) -> None:
    start = time.time()
    pool = workspace.parent / f"{workspace.name}-pool"
    if not (pool / "truth.parquet").exists():
        make_pool(pool, n, seed)
        print(f"[1/5] synthetic pool: {n} samples (seed {seed}) in img2dataset layout -> {pool}")
    else:
        print(f"[1/5] synthetic pool: reusing {pool}")
    print("[2/5] " + ingest([str(pool)], workspace).summary())
    print("[3/5] " + embed(workspace, "tiny-clip").summary())
    print("[4/5] scoring passes")
    for p in passes.list_passes():
        try:
            print("      " + score(workspace, p.name).summary())
        except CurateError as e:  # a pass that needs weights this machine does not have
            print(f"      {p.name}: skipped: {e}")
    print("[5/5] selections")
    for name, rules, parent in SELECTIONS:
        try:
            print("      " + select(workspace, name, rules, parent, overwrite=True)
                  .summary().replace("\n", "\n      "))
        except (CurateError, ImportError) as e:
            print(f"      {name}: skipped: {e}")
    print("\nmeasured against truth.parquet (AUROC: 1.0 = perfect, 0.5 = chance)")
    for r in score_aurocs(workspace, pool):
        print(f"      {r['column']:<14} flags {r['flags']:<11} AUROC {r['auroc']:.3f} "
              f"({r['positives']} with the defect, {r['clean']} clean)")
    q = dedup_quality(workspace, pool, "dedup")
    print(f"      dedup finds {q['planted']} planted duplicates: precision "
          f"{q['precision']:.3f}, recall {q['recall']:.3f}")
    print()
    print(format_info(info(workspace)))
    print(_map(workspace))
    print(f"\ndemo finished in {time.time() - start:.0f}s. Query it: "
          f"duckdb {workspace / 'catalog.duckdb'} \"SELECT * FROM pairs LIMIT 5\"")
    print(f"Explore it (the interactive map): {shell_line(explore_command(workspace, 'default'))}")


def _map(workspace: Path) -> str:
    """Make map ``default`` unless it exists and still covers the workspace's samples."""
    ws = Workspace.open(workspace)
    if "default" in list_maps(ws) and check_map(ws, "default") is None:
        return "map default: up to date"
    m = make_map(workspace, "default")
    return (f"map default: {m['points']:,} points, {len(m['clusters'])} clusters in "
            f"{m['seconds']['total']:.1f}s")
