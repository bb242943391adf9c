"""SQL over a workspace: named queries, bound parameters, read-only, text search, any client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.passes.score import score
from curate.sql import named_queries, run_sql, write_result
from tests.conftest import scored_with_selection

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded pool with clip_score and a selection that dedups then keeps the top half."""
    return scored_with_selection(embedded, tmp_path_factory.mktemp("sql") / "ws")


def pairs(ws: Path) -> pl.DataFrame:
    s = pl.read_parquet(ws / "samples" / "*.parquet")
    return s.join(pl.read_parquet(ws / "scores" / "clip_score" / "*.parquet")
                  .select("sample_id", "clip_score"), on="sample_id", how="left")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", "sql", *args],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_every_named_query_says_what_it_answers_and_its_parameters() -> None:
    names = named_queries()
    assert {"worst_aligned", "scores_by_cluster", "duplicate_groups", "caption_length_by_source",
            "selection_drops", "drops_by_rule", "similar_to_text", "errors_by_source"} <= set(names)
    for path in names.values():
        head = [line for line in path.read_text().splitlines() if line.startswith("--")]
        assert head and any("Parameters" in line for line in head), path.name


def test_worst_aligned_matches_polars(ws: Path) -> None:
    got = run_sql(ws, "worst_aligned", {"n": "7"})
    want = (pairs(ws).filter(pl.col("clip_score").is_not_null())
            .sort("clip_score", "sample_id").head(7))
    assert got.column("sample_id").to_pylist() == want["sample_id"].to_list()
    got = run_sql(ws, "worst_aligned", {"column": "clip_cosine", "n": "3"})
    cos = pl.read_parquet(ws / "scores" / "clip_score" / "*.parquet").sort("clip_cosine")
    assert got.column("score").to_pylist() == pytest.approx(cos["clip_cosine"][:3].to_list())


def test_caption_length_by_source_matches_polars(ws: Path) -> None:
    got = pl.from_arrow(run_sql(ws, "caption_length_by_source"))
    s = pl.read_parquet(ws / "samples" / "*.parquet")
    want = s.group_by("source").agg(pl.len().alias("n"),
                                    pl.col("caption").str.len_chars().median().alias("median"))
    joined = got.join(want, on="source")
    assert len(joined) == 3 and (joined["n"] == joined["n_right"]).all()
    assert (joined["median_chars"] == joined["median"]).all()


def test_selection_queries_agree_with_the_drop_log(ws: Path) -> None:
    dropped = pl.read_parquet(ws / "selections" / "dropped" / "clean.parquet")
    rows = run_sql(ws, "selection_drops", {"selection": "clean"})
    assert rows.num_rows == len(dropped)
    assert rows.column("sample_id").to_pylist() == dropped["sample_id"].to_list()
    by_rule = run_sql(ws, "drops_by_rule", {"selection": "clean"}).to_pylist()
    manifest = json.loads((ws / "selections" / "clean.json").read_text())
    per_rule: dict[str, int] = {}
    for r in by_rule:
        per_rule[r["rule"]] = per_rule.get(r["rule"], 0) + r["dropped"]
    assert per_rule == {s["rule"]: s["in"] - s["out"] for s in manifest["rules"]
                        if s["in"] > s["out"]}
    assert [r["rule"] for r in by_rule][0] == "where"  # in the order the rules ran
    groups = run_sql(ws, "duplicate_groups", {"selection": "clean"}).to_pylist()
    dups = dropped.filter(pl.col("group_id").is_not_null())
    assert sum(g["size"] - 1 for g in groups) == len(dups) > 0
    g = groups[0]
    assert set(g["dropped"]) == set(dups.filter(pl.col("group_id") == g["group_id"])
                                    ["sample_id"])


def test_parameters_are_bound_never_formatted(ws: Path) -> None:
    evil = "clean' OR 1=1 --"
    with pytest.raises(CurateError, match="No files found"):
        run_sql(ws, "selection_drops", {"selection": evil})
    t = run_sql(ws, "SELECT count(*) AS n FROM samples WHERE key = $k", {"k": "x' OR '1'='1"})
    assert t.column("n").to_pylist() == [0]
    t = run_sql(ws, "SELECT count(*) AS n FROM pairs WHERE clip_score > $t", {"t": "0.3"})
    assert t.column("n").to_pylist() == [(pairs(ws)["clip_score"] > 0.3).sum()]
    with pytest.raises(CurateError, match=r"needs --param selection"):
        run_sql(ws, "duplicate_groups")
    with pytest.raises(CurateError, match="takes no parameter 'nope'"):
        run_sql(ws, "worst_aligned", {"nope": "1"})


def test_writes_are_refused_and_change_nothing(ws: Path) -> None:
    before = sorted(p.name for p in ws.rglob("*"))
    for stmt in ["CREATE TABLE t AS SELECT 1", "DROP VIEW pairs", "COPY samples TO 'x.csv'",
                 "SELECT 1; DELETE FROM samples", "ATTACH 'other.duckdb' AS o"]:
        r = cli("-w", str(ws), stmt)
        assert r.returncode == 2 and "read-only" in r.stderr, stmt
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert sorted(p.name for p in ws.rglob("*")) == before
    assert run_sql(ws, "SELECT count(*) AS n FROM pairs").column("n").to_pylist() == [600]


def test_text_search_ranks_by_cosine_to_the_phrase(ws: Path) -> None:
    import torch

    from curate.models import load
    got = run_sql(ws, "similar_to_text", {"n": "5"}, text="a red circle").to_pylist()
    m = load("tiny-clip")
    with torch.no_grad():
        q = m.model.encode_text(m.tokenizer(["a red circle"]))[0].numpy()
    e = pl.read_parquet(ws / "embeddings" / "tiny-clip" / "*.parquet").filter(
        pl.col("image_emb").is_not_null())
    img = np.stack(e["image_emb"].to_numpy())
    cos = img @ q / np.linalg.norm(img, axis=1) / np.linalg.norm(q)
    top = np.argsort(-cos)[:5]
    assert [r["sample_id"] for r in got] == e["sample_id"].gather(top).to_list()
    assert [r["similarity"] for r in got] == pytest.approx(cos[top].tolist(), abs=1e-5)
    r = cli("-w", str(ws), "similar_to_text", "--text", "a red circle", "--format", "json")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 20  # the default $n
    assert "red" in json.loads(r.stdout.splitlines()[0])["caption"]


def test_outputs_round_trip(ws: Path, tmp_path: Path) -> None:
    q = "SELECT sample_id, clip_score FROM pairs ORDER BY sample_id LIMIT 10"
    t = run_sql(ws, q)
    write_result(t, "parquet", tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").equals(t)
    write_result(t, "csv", tmp_path / "r.csv")
    assert pl.read_csv(tmp_path / "r.csv")["sample_id"].to_list() == t["sample_id"].to_pylist()
    r = cli("-w", str(ws), q, "--format", "json")
    assert [json.loads(x)["sample_id"] for x in r.stdout.splitlines()] == \
        t["sample_id"].to_pylist()
    r = cli("-w", str(ws), "SELECT * FROM embeddings_tiny_clip LIMIT 2")
    assert r.returncode == 0 and "(64)" in r.stdout  # vectors shown short in tables


def test_any_client_reads_the_catalog_and_views_follow_new_passes(ws: Path,
                                                                  tmp_path: Path) -> None:
    own = tmp_path / "ws"
    shutil.copytree(ws, own)
    con = duckdb.connect(str(own / "catalog.duckdb"), read_only=True)
    n = con.sql("SELECT count(*) FROM pairs WHERE clip_score IS NOT NULL").fetchall()[0][0]
    df = con.sql("SELECT status, count(*) AS n FROM samples GROUP BY ALL").pl()
    con.close()
    assert n == 559 and df["n"].sum() == 600
    score(own, "text_stats", progress=False)  # a pass writes; no one rebuilds views by hand
    t = run_sql(own, "SELECT count(n_words) AS n FROM pairs")
    assert t.column("n").to_pylist() == [559]
