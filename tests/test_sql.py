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
from curate.sql.sandbox import check
from curate.workspace import Workspace
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
    for name in (evil, "../selections/clean", "nope", "/etc/passwd"):  # a name, never a path
        with pytest.raises(CurateError, match=r"no drop log of a selection '.*' in this "
                                              r"workspace \(there are: clean\)$") as e:
            run_sql(ws, "selection_drops", {"selection": name})
        assert name in str(e.value)
    t = run_sql(ws, "SELECT count(*) AS n FROM samples WHERE key = $k", {"k": "x' OR '1'='1"})
    assert t.column("n").to_pylist() == [0]
    t = run_sql(ws, "SELECT count(*) AS n FROM pairs WHERE clip_score > $t", {"t": "0.3"})
    assert t.column("n").to_pylist() == [(pairs(ws)["clip_score"] > 0.3).sum()]
    with pytest.raises(CurateError, match=r"needs --param selection"):
        run_sql(ws, "duplicate_groups")
    with pytest.raises(CurateError, match="takes no parameter 'nope'"):
        run_sql(ws, "worst_aligned", {"nope": "1"})


@pytest.mark.slow
def test_writes_are_refused_and_change_nothing(ws: Path) -> None:
    before = sorted(p.name for p in ws.rglob("*"))
    for stmt in ["CREATE TABLE t AS SELECT 1", "DROP VIEW pairs", "COPY samples TO 'x.csv'",
                 "SELECT 1; DELETE FROM samples", "ATTACH 'other.duckdb' AS o"]:
        r = cli("-w", str(ws), stmt)
        assert r.returncode == 2 and "read-only" in r.stderr, stmt
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert sorted(p.name for p in ws.rglob("*")) == before
    assert run_sql(ws, "SELECT count(*) AS n FROM pairs").column("n").to_pylist() == [600]


@pytest.mark.slow
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


# --- the sandbox ---------------------------------------------------------------------------

def files(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and mtime: what a refused statement must keep."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for r in roots
            for p in sorted(r.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def target(ws: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(a copy of ``ws``, a sibling workspace whose name starts with the copy's, an empty
    folder outside both); the copy holds a symlink ``out`` to the sibling."""
    base = tmp_path_factory.mktemp("attack")
    own, sibling, outside = base / "ws", base / "ws-other", base / "outside"
    shutil.copytree(ws, own)
    shutil.copytree(ws / "samples", sibling / "samples")
    outside.mkdir()
    (own / "out").symlink_to(sibling)
    return own, sibling, outside


ATTACKS = [  # issue 18's: each must be refused by the check, before anything runs
    "EXPLAIN ANALYZE COPY (SELECT caption, url FROM samples) TO '{outside}/x.csv'",
    "EXPLAIN ANALYZE COPY (SELECT sample_id, 'ok' AS status, NULL AS error, 9.9 AS clip_score, "
    "1.0 AS clip_cosine FROM samples) TO '{ws}/scores/clip_score/part-000000.parquet' "
    "(FORMAT parquet)",
    "/* c */ EXPLAIN (FORMAT json) COPY samples TO '{ws}/samples.csv'",
    "explain analyze load '{outside}/evil.duckdb_extension'",
    "EXPLAIN ANALYZE INSTALL httpfs",
    "COPY samples TO '{ws}/x.csv'",
    "ATTACH '{ws}/other.duckdb' AS o",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP MACRO m() AS 1",
    "DROP VIEW pairs",
    "SELECT 1; DELETE FROM samples",
    "SELECT 1; COPY (SELECT 1) TO '{outside}/second.csv'",
    "INSERT INTO samples SELECT * FROM samples",
    "UPDATE samples SET caption = 'x'",
    "ALTER VIEW pairs RENAME TO p",
    "SET enable_external_access = true",
    "RESET allowed_directories",
    "SET VARIABLE v = 1",
    "LOAD httpfs",
    "PRAGMA profiling_output = '{outside}/profile.txt'",
    "PRAGMA enable_profiling",
    "CALL checkpoint()",
    "CHECKPOINT;",
    "EXPORT DATABASE '{outside}/db'",
    "IMPORT DATABASE '{outside}/db'",
    "PREPARE p AS COPY samples TO '{outside}/p.csv'",
    "USE memory",
    "DETACH memory",
    "VACUUM;",
    "BEGIN TRANSACTION",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_writing_statements_are_refused_in_one_line(target: tuple[Path, Path, Path],
                                                    attack: str) -> None:
    own, sibling, outside = target
    before = files(own, sibling, outside)
    sql = attack.format(ws=own, outside=outside)
    with pytest.raises(CurateError, match="^read-only: ") as e:
        run_sql(own, sql)
    assert "\n" not in str(e.value)
    assert files(own, sibling, outside) == before


@pytest.mark.slow
def test_the_cli_refuses_in_one_line(target: tuple[Path, Path, Path]) -> None:
    own, sibling, outside = target
    before = files(own, sibling, outside)
    for sql in ATTACKS[:3]:
        r = cli("-w", str(own), sql.format(ws=own, outside=outside))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "read-only: EXPLAIN of a COPY statement" in r.stderr
    assert files(own, sibling, outside) == before
    clip = pl.read_parquet(own / "scores" / "clip_score" / "*.parquet")
    assert clip["clip_score"].max() < 9.9  # what `select top` reads was never rewritten


@pytest.mark.parametrize("read", [
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/root/x')",
    "SELECT * FROM glob('/root/*')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT count(*) FROM read_parquet('{sibling}/samples/*.parquet')",  # ws-other beside ws
    "SELECT count(*) FROM read_parquet('{ws}/../ws-other/samples/part-000000.parquet')",
    "SELECT count(*) FROM read_parquet('{ws}/out/samples/part-000000.parquet')",  # a symlink out
    "SELECT * FROM glob('{ws}/../*')",
    "SELECT count(*) FROM read_parquet('samples/*.parquet')",  # relative: not resolved here
    "SELECT * FROM sniff_csv('/etc/passwd')",
])
def test_reads_outside_the_workspace_fail_on_duckdbs_own_wall(
        target: tuple[Path, Path, Path], read: str) -> None:
    """These pass the statement check (they are SELECTs): DuckDB, which may open no file in
    the sandbox, stops them with its permission error in one line."""
    own, sibling, outside = target
    sql = read.format(ws=own, sibling=sibling)
    assert check(sql) == [sql]
    with pytest.raises(CurateError, match="Permission Error: Cannot access") as e:
        run_sql(own, sql)
    assert "\n" not in str(e.value) and "names no file" in str(e.value)
    assert pl.read_parquet(sibling / "samples" / "*.parquet").height == 600  # it was there


def test_connect_is_locked_and_reads_only_the_workspace(target: tuple[Path, Path, Path]
                                                        ) -> None:
    import curate

    own, sibling, outside = target
    before = files(own, sibling, outside)
    con = curate.connect(own)
    try:
        views = {r[0] for r in con.sql("SELECT view_name FROM duckdb_views() "
                                       "WHERE NOT internal").fetchall()}
        assert {"samples", "pairs", "embeddings_tiny_clip", "scores_clip_score",
                "selection_clean"} <= views
        kept = pl.read_parquet(own / "selections" / "clean.parquet")
        assert con.sql("SELECT * FROM selection_clean").pl().equals(kept)
        assert con.sql("SELECT * FROM selection('clean')").pl().equals(kept)
        assert con.sql("SELECT count(*) FROM drop_log('clean')").fetchall() == [
            (pl.read_parquet(own / "selections" / "dropped" / "clean.parquet").height,)]
        # the bare connection runs no statement check: DuckDB's own wall stops writes and
        # reads of any file, the workspace's own included
        clip = own / "scores" / "clip_score" / "part-000000.parquet"
        for stmt in (f"COPY (SELECT 1) TO '{outside}/x.csv'", "SELECT * FROM read_text("
                     "'/etc/passwd')", f"ATTACH '{outside}/x.duckdb' AS x", "LOAD httpfs",
                     f"COPY (SELECT * FROM scores_clip_score) TO '{clip}' (FORMAT parquet)",
                     f"COPY samples TO '{own}/leak.csv'", f"ATTACH '{own}/x.duckdb' AS x",
                     f"SELECT count(*) FROM read_parquet('{clip}')",
                     f"EXPLAIN ANALYZE COPY samples TO '{own}/samples/part-999999.parquet'",
                     f"SELECT * FROM glob('{own}/*')", "INSTALL httpfs"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(stmt)
        con.execute("CREATE TABLE planted AS SELECT 1")  # the connection's own memory only
        for stmt in ("SET enable_external_access = true", "SET allowed_directories = ['/']",
                     "RESET enable_external_access", "SET autoload_known_extensions = true",
                     "SET temp_directory = '/tmp'"):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                con.execute(stmt)
        assert con.sql("SELECT count(*) FROM pairs").fetchall() == [(600,)]
    finally:
        con.close()
    assert files(own, sibling, outside) == before


def test_reading_statements_pass_the_check(ws: Path) -> None:
    for sql in ("DESCRIBE samples", "SHOW TABLES", "SUMMARIZE SELECT 1", "FROM samples LIMIT 1",
                "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT count(*) FROM pairs",
                "EXPLAIN (FORMAT json) SELECT 1", "PRAGMA table_info('samples')",
                "CALL pragma_version()", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
                "SELECT 1; SELECT 2"):
        assert run_sql(ws, sql).num_rows >= 1, sql


def test_a_workspace_cannot_shadow_a_named_query(ws: Path, tmp_path: Path) -> None:
    """A received workspace's sql/worst_aligned.sql is never read; a folder passed
    explicitly is the only other source of named queries."""
    own = tmp_path / "ws"
    shutil.copytree(ws, own)
    (own / "sql").mkdir()
    (own / "sql" / "worst_aligned.sql").write_text(
        f"-- Parameters: $n.\nCOPY (SELECT * FROM samples LIMIT $n) TO '{own}/leak.csv'")
    before = files(own)
    assert named_queries(Workspace.open(own))["worst_aligned"].parent == ROOT / "sql"
    assert run_sql(own, "worst_aligned", {"n": "3"}).column_names == [
        "sample_id", "key", "source", "caption", "score"]
    r = cli("-w", str(own), "worst_aligned", "--param", "n=3", "--format", "json")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
    assert files(own) == before
    mine = tmp_path / "queries"
    mine.mkdir()
    (mine / "ok_count.sql").write_text("-- Parameters: none.\nSELECT count(*) AS n FROM samples "
                                       "WHERE status = 'ok'")
    assert list(named_queries(queries=mine)) == ["ok_count"]
    assert run_sql(own, "ok_count", queries=mine).column("n").to_pylist() == [559]
    with pytest.raises(CurateError, match="no named query 'worst_aligned'"):
        run_sql(own, "worst_aligned", queries=mine)
    with pytest.raises(CurateError, match="no such folder"):
        named_queries(queries=tmp_path / "nowhere")


@pytest.mark.slow
def test_a_held_connection_blocks_no_writer(ws: Path, tmp_path: Path) -> None:
    """``curate.connect`` never opens catalog.duckdb: score and select write while it is
    open, and ``curate sql`` runs while another process holds the catalog read-write."""
    import curate

    own = tmp_path / "ws"
    shutil.copytree(ws, own)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    catalog = (own / "catalog.duckdb").read_bytes()
    assert run_sql(own, "SELECT count(*) AS n FROM pairs").column("n").to_pylist() == [600]
    assert (own / "catalog.duckdb").read_bytes() == catalog  # a reader changes nothing
    con = curate.connect(own)
    try:
        for verb in (["score", "-w", str(own), "text_stats"],
                     ["select", "-w", str(own), "held", "top", "clip_score", "0.5"]):
            r = subprocess.run([sys.executable, "-m", "curate.cli", *verb], capture_output=True,
                               text=True, timeout=300, env=env)
            assert r.returncode == 0, r.stderr
        assert con.sql("SELECT count(*) FROM samples").fetchall() == [(600,)]
    finally:
        con.close()
    held = pl.read_parquet(own / "selections" / "held.parquet")["sample_id"]
    clip = pl.read_parquet(own / "scores" / "clip_score" / "*.parquet").drop_nulls("clip_score")
    assert len(held) in (279, 280)  # the top half of the 559 scored
    assert set(held) == set(clip.sort("clip_score", descending=True)["sample_id"][:len(held)])
    holder = duckdb.connect(str(own / "catalog.duckdb"))  # a writer's lock, in this process
    try:
        r = cli("-w", str(own), "SELECT count(n_words) AS n FROM pairs", "--format", "json")
        assert r.returncode == 0 and json.loads(r.stdout) == {"n": 559}, r.stderr
    finally:
        holder.close()


def test_every_named_query_runs_in_the_sandbox(tmp_path: Path) -> None:
    """bench/sql_latency.py's path on a small fabricated workspace: every named query runs
    (similar_to_text with --text), none fails."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sql_latency", ROOT / "bench" / "sql_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    w = bench.fabricate(tmp_path / "ws", 3000, 2, 64)
    rows = bench.query_rows(w, 1, 64)
    assert sorted(r[0].split(" (")[0].removeprefix("sql ").split(" ")[0] for r in rows) == \
        sorted(named_queries())
    assert all(int(r[0].rsplit("(", 1)[1].split()[0]) > 0 for r in rows), rows
    points = run_sql(w.root, "SELECT count(*) AS n FROM map_default").column("n").to_pylist()
    assert points == [pl.read_parquet(w.root / "maps" / "default.parquet").height]
