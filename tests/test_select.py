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
from curate.params import Amount
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
    r = select(ws, "top30", [("top", {"column": "clip_score", "amount": 0.3})], overwrite=True)
    desc = np.sort(s)[::-1]
    threshold = desc[int(len(s) * 0.3)]  # the value at index int(N*f) of the descending sort
    assert r.kept == int((s >= threshold).sum()) == int(len(s) * 0.3) + 1
    kept = load_selection(Workspace.open(ws), "top30")
    by_id = dict(zip(scores(ws)["sample_id"], scores(ws)["clip_score"], strict=True))
    vals = [by_id[i] for i in kept]
    assert vals == sorted(vals, reverse=True) and min(vals) == pytest.approx(threshold)
    count = select(ws, "top100", [("top", {"column": "clip_score", "amount": 100})],
                   overwrite=True)
    assert count.kept == 100


def test_where_binds_parameters_and_composes(ws: Path) -> None:
    r = select(ws, "aligned", parse_rules(["where", "clip_score > $t AND n_words > 3",
                                           "param.t=1.5"]), overwrite=True)
    s = scores(ws)
    assert r.kept == s.filter(pl.col("clip_score") > 1.5).height
    sub = select(ws, "aligned_r", [("random", {"amount": 0.5, "seed": 3})], start="aligned",
                 overwrite=True)
    assert sub.kept == int(r.kept * 0.5)
    assert set(load_selection(Workspace.open(ws), "aligned_r")) <= set(
        load_selection(Workspace.open(ws), "aligned"))
    again = select(ws, "aligned_r2", [("random", {"amount": 0.5, "seed": 3})],
                   start="aligned", overwrite=True)
    assert again.kept == sub.kept
    assert load_selection(Workspace.open(ws), "aligned_r2") == load_selection(
        Workspace.open(ws), "aligned_r")
    m = json.loads((ws / "selections" / "aligned_r.json").read_text())
    assert m["start"] == "aligned" and m["rules"][0]["rule"] == "random"


def quality(ws: Path, pool: Path, selection: str) -> tuple[float, float, int]:
    """(precision, recall, drops) of a selection's duplicate drops against the pool's truth:
    a drop is right when it and its representative are copies of one planted original; a
    planted duplicate is found when the copy or its original was dropped."""
    keys = dict(pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "key")
                .iter_rows())
    truth = pl.read_parquet(pool / "truth.parquet")
    group = {r["key"]: r["duplicate_of"] or r["key"] for r in truth.iter_rows(named=True)}
    dropped = pl.read_parquet(ws / "selections" / "dropped" / f"{selection}.parquet")
    assert dropped["stage"].null_count() == 0 and dropped["representative"].null_count() == 0
    correct = [group[keys[a]] == group[keys[b]] for a, b in
               zip(dropped["sample_id"], dropped["representative"], strict=True)]
    gone = {keys[s] for s in dropped["sample_id"]}
    planted = [k for k in truth.filter(pl.col("duplicate_of").is_not_null())["key"]
               if k in set(keys.values())]
    assert len(planted) > 30  # the pool plants exact and near copies
    recall = float(np.mean([k in gone or group[k] in gone for k in planted]))
    return float(np.mean(correct)), recall, dropped.height


def test_dedup_finds_planted_duplicates(ws: Path, pool: Path) -> None:
    select(ws, "dedup", [("dedup", {"by": "clip_score"})], overwrite=True)
    precision, recall, _ = quality(ws, pool, "dedup")
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_semdedup_drops_planted_duplicates(ws: Path, pool: Path) -> None:
    """On the 600-sample pool (51 planted copies) eps 0.005 drops 49 samples, 46 of them the
    copy or the original of their representative (precision 0.94), and finds 46 of the 51
    (recall 0.90); at 0.05 it drops 60% of the pool, mostly distinct renders of a scene."""
    r = select(ws, "sd", [("semdedup", {"eps": "0.001,0.005,0.05", "use": 0.005})],
               overwrite=True)
    kept = r.steps[0]["kept_fraction_per_eps"]
    assert kept["0.001"] >= kept["0.005"] >= kept["0.05"]
    assert r.kept == round(kept["0.005"] * r.candidates)
    precision, recall, drops = quality(ws, pool, "sd")
    assert precision >= 0.9 and recall >= 0.85, (precision, recall)
    assert drops == r.candidates - r.kept
    loose = select(ws, "sd_loose", [("semdedup", {"eps": (0.05,)})], overwrite=True)
    precision, recall, _ = quality(ws, pool, "sd_loose")
    assert recall == 1.0 and precision < 0.5  # a loose eps drops what is merely similar
    assert loose.kept < r.kept


def test_null_scores_are_never_selected(tmp_path: Path, workspace: Path) -> None:
    shard = badinput.write_tar(tmp_path / "s.tar", [
        ("a.jpg", badinput.jpeg()), ("a.txt", b"a red square"),
        ("c.jpg", badinput.jpeg((0, 200, 0))), ("c.txt", b"a green square"),
        ("b.png", badinput.corrupt_png_body()), ("b.txt", b"a broken picture")])
    ingest([str(shard)], workspace, progress=False)
    score(workspace, "clip_score", progress=False)
    r = select(workspace, "all", [("top", {"column": "clip_score", "amount": 1.0})])
    assert r.kept == 2
    dropped = pl.read_parquet(workspace / "selections" / "dropped" / "all.parquet")
    assert dropped["reason"].to_list() == ["top: clip_score is null"]


def test_bad_requests_fail_with_a_message(ws: Path) -> None:
    cases = [([("top", {"column": "nope", "amount": 0.3})], "no column 'nope'"),
             ([("random", {"amount": 10**6})], "larger than"),
             ([("where", {"expr": "clip_score > 99"})], "keeps no samples"),
             ([("where", {"expr": "clip_score >"})],
              r'^Parser Error: syntax error at or near "\)"$'),
             ([("where", {"expr": "nope > 1"})], 'Binder Error: Referenced column "nope"'),
             ([("shuffle", {})], "unknown rule")]
    for rules, msg in cases:
        with pytest.raises(CurateError, match=msg):
            select(ws, "bad", rules)
    assert not (ws / "selections" / "bad.parquet").exists()
    with pytest.raises(CurateError, match="exists"):
        select(ws, "top30", [("random", {"amount": 0.1})])
    with pytest.raises(CurateError, match="no selection 'ghost'"):
        select(ws, "x", [("random", {"amount": 0.1})], start="ghost")


@pytest.mark.slow
def test_cli_select_and_info(ws: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "curate.cli", "select", "-w", str(ws), "cli30",
                        "--force", "top", "clip_score", "0.3", "random", "100", "seed=2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "selection cli30: 100 of" in r.stdout
    info = subprocess.run([sys.executable, "-m", "curate.cli", "info", "-w", str(ws)],
                          capture_output=True, text=True, timeout=120)
    assert "cli30: 100 of" in info.stdout


@pytest.mark.parametrize("rules, message, valid", [
    ([("dedup", {"foo": 1})], "rule 'dedup' has no parameter 'foo'",
     "by, stages, phash_bits, thumb_l1, semantic, model, seed, workers"),
    ([("coreset", {"amount": 0.3, "refresh": 0})], "rule 'coreset': refresh=0 must be at least 1",
     "amount, model, partition, k, easiness_weight, label_weight, refresh, threshold, "
     "max_partition, seed, device"),
    ([("random", {"amount": "0.1", "seed": "x"})],
     "rule 'random': parameter seed='x' is not a valid int", "amount, seed"),
    ([("semdedup", {"keep": "soft"})], "rule 'semdedup': keep='soft'",
     "eps, use, keep, k, model, seed"),
    ([("top", {"column": "clip_score", "amount": 1.5})],
     "rule 'top': amount 1.5 is neither a fraction in (0, 1] nor a count", "column, amount, per"),
    ([("random", {"amount": 0})], "rule 'random': amount 0 must be positive", "amount, seed"),
    ([("top", {"column": "clip_score"})], "rule 'top' needs amount", "column, amount, per"),
    ([("random", {"amount_": 0.3})], "rule 'random' has no parameter 'amount_'", "amount, seed"),
])
def test_bad_parameters_are_one_line_naming_the_valid_ones(
        ws: Path, rules: list, message: str, valid: str) -> None:
    with pytest.raises(CurateError) as e:
        select(ws, "badparam", rules)
    text = str(e.value)
    assert text.startswith(message) and text.endswith(f"; its parameters: {valid}"), text
    assert "\n" not in text
    assert not (ws / "selections" / "badparam.parquet").exists()


@pytest.mark.parametrize("chain, message", [
    (["dedup", "foo=1"], "rule 'dedup' has no parameter 'foo'"),
    (["coreset", "0.3", "refresh=0"], "rule 'coreset': refresh=0 must be at least 1"),
    (["top", "clip_score", "1.5"], "rule 'top': amount 1.5 is neither"),
    (["random", "abc"], "rule 'random': amount 'abc' is neither"),
])
def test_cli_bad_parameters_exit_2_with_one_line(ws: Path, chain: list[str], message: str
                                                 ) -> None:
    r = subprocess.run([sys.executable, "-m", "curate.cli", "select", "-w", str(ws), "badcli",
                        *chain], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"curate select: {message}") and "its parameters: " in r.stderr


def test_amount_is_a_fraction_with_a_dot_and_a_count_without() -> None:
    assert Amount.parse("0.3") == Amount.parse(0.3) == Amount(0.3)
    assert Amount.parse("1.0").of(40, "x") == 40 and Amount.parse(".5").of(41, "x") == 20
    assert Amount.parse("1").of(40, "x") == 1 and Amount.parse(np.int64(7)).of(40, "x") == 7
    assert Amount.parse("25").is_fraction is False and str(Amount.parse("0.25")) == "0.25"
    for bad, message in [("0", "positive"), (-2, "positive"), ("-0.5", "positive"),
                         (1.5, "neither"), ("2.0", "neither"), ("lots", "neither"),
                         (True, "neither"), (float("nan"), "positive")]:
        with pytest.raises(CurateError, match=message):
            Amount.parse(bad)
    with pytest.raises(CurateError, match="larger than the 40 candidates"):
        Amount.parse(41).of(40, "x")
    with pytest.raises(CurateError, match="selects nothing"):
        Amount.parse(0.01).of(40, "x")


def test_manifest_records_every_parameter_by_name_and_rebuilds_the_selection(ws: Path) -> None:
    chain = parse_rules(["where", "clip_score > $t", "param.t=1", "top", "clip_score", "0.5",
                         "random", "40", "seed=4"])
    first = select(ws, "recorded", chain, overwrite=True)
    m = json.loads((ws / "selections" / "recorded.json").read_text())
    assert [s["params"] for s in m["rules"]] == [
        {"expr": "clip_score > $t", "params": {"t": "1"}, "per": None},
        {"column": "clip_score", "amount": 0.5, "per": None}, {"amount": 40, "seed": 4}]
    assert "amount_" not in json.dumps(m)
    again = select(ws, "rebuilt", [(s["rule"], s["params"]) for s in m["rules"]],
                   overwrite=True)
    assert again.kept == first.kept == 40
    assert load_selection(Workspace.open(ws), "rebuilt") == load_selection(
        Workspace.open(ws), "recorded")
    assert pl.read_parquet(ws / "selections" / "rebuilt.parquet").equals(
        pl.read_parquet(ws / "selections" / "recorded.parquet"))
