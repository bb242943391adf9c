"""``curate demo``: the main job on the embedded default. A synthetic pool is generated,
ingested into a local workspace, and every pass that exists runs on it; the figures printed
are measured against the pool's ground truth. Running it again resumes and adds nothing."""

from __future__ import annotations

import time
from pathlib import Path

from curate.embed import embed, model_key
from curate.info import format_info, info
from curate.ingest import ingest
from curate.metrics import auroc
from curate.synth import make_pool
from curate.workspace import Workspace


def alignment_auroc(workspace: Path, pool: Path, model: str = "tiny-clip") -> tuple[float, int]:
    """AUROC of image-text cosine separating true pairs from the pool's mismatched captions."""
    view = "embeddings_" + model_key(model).replace("-", "_").replace(".", "_")
    with Workspace.open(workspace).connect(read_only=True) as con:
        truth = str(pool / "truth.parquet").replace("'", "''")
        rows = con.execute(
            f"SELECT t.mismatched, array_cosine_similarity(e.image_emb, e.text_emb) AS cos "
            f"FROM {view} e JOIN samples s USING (sample_id) "
            f"JOIN read_parquet('{truth}') t USING (key) "
            f"WHERE e.status = 'ok' AND NOT t.abstract").fetchnumpy()
    bad = rows["mismatched"].astype(bool)
    return auroc(rows["cos"][~bad], rows["cos"][bad]), int(bad.sum())


def demo(workspace: Path, n: int = 2000, seed: int = 0) -> None:
    start = time.time()
    pool = workspace.parent / f"{workspace.name}-pool"
    if not (pool / "truth.parquet").exists():
        make_pool(pool, n, seed)
        print(f"[1/3] synthetic pool: {n} samples (seed {seed}) in img2dataset layout -> {pool}")
    else:
        print(f"[1/3] synthetic pool: reusing {pool}")
    print("[2/3] " + ingest([str(pool)], workspace).summary())
    print("[3/3] " + embed(workspace, "tiny-clip").summary())
    a, n_bad = alignment_auroc(workspace, pool)
    print(f"      tiny-clip cosine separates true pairs from {n_bad} mismatched captions: "
          f"AUROC {a:.3f} (against truth.parquet)")
    print()
    print(format_info(info(workspace)))
    print(f"\ndemo finished in {time.time() - start:.0f}s. Query it: "
          f"duckdb {workspace / 'catalog.duckdb'}")
