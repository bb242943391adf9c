"""Shared fixtures: one small synthetic pool and its workspace per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CURATE_CACHE", str(ROOT / ".venv" / "curate-cache"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".venv" / "numba-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# torch's threads sleep instead of spinning while they wait: on a loaded machine spinning cost
# proxy training 9x (27 against 245 samples/s); results are the same
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

POOL_N, POOL_SHARD, POOL_SEED = 600, 200, 7


@pytest.fixture(scope="session")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-sample synthetic pool in img2dataset layout (3 shards) with truth.parquet."""
    from curate.synth import make_pool
    return make_pool(tmp_path_factory.mktemp("pool"), POOL_N, POOL_SEED, shard_size=POOL_SHARD)


@pytest.fixture(scope="session")
def ingested(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pool ingested into a workspace in parts of 100 rows (treat as read-only)."""
    from curate.ingest import ingest
    ws = tmp_path_factory.mktemp("ws") / "ws"
    ingest([str(pool)], ws, part_rows=100, progress=False)
    return ws


@pytest.fixture(scope="session")
def embedded(ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ingested workspace with tiny-clip embeddings (treat as read-only)."""
    from curate.passes.embed import embed
    ws = tmp_path_factory.mktemp("emb") / "ws"
    shutil.copytree(ingested, ws)
    embed(ws, "tiny-clip", batch_size=64, workers=1, progress=False)
    return ws


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def scored_with_selection(embedded: Path, dest: Path) -> Path:
    """A copy of ``embedded`` with clip_score and selection ``clean`` (a where filter, a
    dedup, then the top half): the workspace SQL and card tests read."""
    from curate.passes.score import score
    from curate.select import select
    shutil.copytree(embedded, dest)
    score(dest, "clip_score", progress=False)
    select(dest, "clean", [("where", {"expr": "clip_score > 0.3"}),
                           ("dedup", {"stages": "exact,perceptual"}),
                           ("top", {"column": "clip_score", "amount": 0.5})])
    return dest
