"""Selections: rule semantics by hand, dedup against planted duplicates, composition, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.errors import CurateError
from curate.ingest import ingest
from curate.passes.score import score
from curate.select import load_selection, parse_rules, select
from curate.workspace import Workspace
from tests import badinput


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("sel") / "ws"
    shutil.copytree(embedded, w)
    score(w, "clip_score", progress=False)
    score(w, "text_stats", progress=False)
    return w


def scores(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(ws / "scores" / "clip_score" / "*.parquet")


def test_top_fraction_has_datacomp_semantics(ws: Path) -> None:
    s = scores(ws)["clip_score"].drop_nulls().to_numpy()
    r = select(ws, "top30", [("top", {"column": "clip_score", "amount_": 0.3})], overwrite=True)
    desc = np.sort(s)[::-1]
    threshold = desc[int(len(s) * 0.3)]  # the value at index int(N*f) of the descending sort
    assert r.kept == int((s >= threshold).sum()) == int(len(s) * 0.3) + 1
    kept = load_selection(Workspace.open(ws), "top30")
    by_id = dict(zip(scores(ws)["sample_id"], scores(ws)["clip_score"], strict=True))
    vals = [by_id[i] for i in kept]
    assert vals == sorted(vals, reverse=True) and min(vals) == pytest.approx(threshold)
    count = select(ws, "top100", [("top", {"column": "clip_score", "amount_": 100})],
                   overwrite=True)
    assert count.kept == 100


def test_where_binds_parameters_and_composes(ws: Path) -> None:
    r = select(ws, "aligned", parse_rules(["where", "clip_score > $t AND n_words > 3",
                                           "param.t=1.5"]), overwrite=True)
    s = scores(ws)
    assert r.kept == s.filter(pl.col("clip_score") > 1.5).height
    sub = select(ws, "aligned_r", [("random", {"amount_": 0.5, "seed": 3})], start="aligned",
                 overwrite=True)
    assert sub.kept == int(r.kept * 0.5)
    assert set(load_selection(Workspace.open(ws), "aligned_r")) <= set(
        load_selection(Workspace.open(ws), "aligned"))
    again = select(ws, "aligned_r2", [("random", {"amount_": 0.5, "seed": 3})],
                   start="aligned", overwrite=True)
    assert again.kept == sub.kept
    assert load_selection(Workspace.open(ws), "aligned_r2") == load_selection(
        Workspace.open(ws), "aligned_r")
    m = json.loads((ws / "selections" / "aligned_r.json").read_text())
    assert m["start"] == "aligned" and m["rules"][0]["rule"] == "random"


def test_dedup_finds_planted_duplicates(ws: Path, pool: Path) -> None:
    select(ws, "dedup", [("dedup", {"by": "clip_score"})], overwrite=True)
    keys = dict(pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "key")
                .iter_rows())
    truth = pl.read_parquet(pool / "truth.parquet")
    group = {r["key"]: r["duplicate_of"] or r["key"] for r in truth.iter_rows(named=True)}
    dropped = pl.read_parquet(ws / "selections" / "dropped" / "dedup.parquet")
    assert dropped["stage"].null_count() == 0 and dropped["representative"].null_count() == 0
    correct = [group[keys[a]] == group[keys[b]] for a, b in
               zip(dropped["sample_id"], dropped["representative"], strict=True)]
    precision = float(np.mean(correct))
    gone = {keys[s] for s in dropped["sample_id"]}
    planted = [k for k in truth.filter(pl.col("duplicate_of").is_not_null())["key"]
               if k in set(keys.values())]
    recall = float(np.mean([k in gone or group[k] in gone for k in planted]))
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_semdedup_reports_kept_fraction_per_eps(ws: Path) -> None:
    r = select(ws, "sd", [("semdedup", {"eps": "0.001,0.01,0.05", "use": 0.01})],
               overwrite=True)
    kept = r.steps[0]["kept_fraction_per_eps"]
    assert kept["0.001"] >= kept["0.01"] >= kept["0.05"]
    n = r.candidates
    assert r.kept == round(kept["0.01"] * n)


def test_null_scores_are_never_selected(tmp_path: Path, workspace: Path) -> None:
    shard = badinput.write_tar(tmp_path / "s.tar", [
        ("a.jpg", badinput.jpeg()), ("a.txt", b"a red square"),
        ("c.jpg", badinput.jpeg((0, 200, 0))), ("c.txt", b"a green square"),
        ("b.png", badinput.corrupt_png_body()), ("b.txt", b"a broken picture")])
    ingest([str(shard)], workspace, progress=False)
    score(workspace, "clip_score", progress=False)
    r = select(workspace, "all", [("top", {"column": "clip_score", "amount_": 1.0})])
    assert r.kept == 2
    dropped = pl.read_parquet(workspace / "selections" / "dropped" / "all.parquet")
    assert dropped["reason"].to_list() == ["top: clip_score is null"]


def test_bad_requests_fail_with_a_message(ws: Path) -> None:
    cases = [([("top", {"column": "nope", "amount_": 0.3})], "no column 'nope'"),
             ([("random", {"amount_": 10**6})], "larger than"),
             ([("where", {"expr": "clip_score > 99"})], "keeps no samples"),
             ([("where", {"expr": "clip_score >"})], "rror"),
             ([("shuffle", {})], "unknown rule")]
    for rules, msg in cases:
        with pytest.raises(CurateError, match=msg):
            select(ws, "bad", rules)
    assert not (ws / "selections" / "bad.parquet").exists()
    with pytest.raises(CurateError, match="exists"):
        select(ws, "top30", [("random", {"amount_": 0.1})])
    with pytest.raises(CurateError, match="no selection 'ghost'"):
        select(ws, "x", [("random", {"amount_": 0.1})], start="ghost")


def test_cli_select_and_info(ws: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "curate.cli", "select", "-w", str(ws), "cli30",
                        "--force", "top", "clip_score", "0.3", "random", "100", "seed=2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "selection cli30: 100 of" in r.stdout
    info = subprocess.run([sys.executable, "-m", "curate.cli", "info", "-w", str(ws)],
                          capture_output=True, text=True, timeout=120)
    assert "cli30: 100 of" in info.stdout
