"""``curate evaluate``: a proxy CLIP trained from scratch on each selection, measured on a clean
held-out set. The shape asserted here (curation beats random at equal size; the truth-clean
oracle is not worse than random on any metric) is loose on purpose: the margins come from the
spread seen over several pool and training seeds (see the MARGIN comment), and the pool is never
tuned."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.errors import CurateError
from curate.evaluate import evaluate, format_table
from curate.synth import Defects
from curate.workspace import Workspace

pytestmark = pytest.mark.slow  # the whole module: see `make test-fast`

# 30% defects, as the issue asks (fixed before any result was seen; never tuned)
DEFECTS = Defects(mismatched=0.15, abstract=0.05, near_duplicate=0.03, exact_duplicate=0.02,
                  corrupt=0.02, odd_image=0.02, empty_caption=0.01, failed_download=0.0)
POOL_N, POOL_SEED, FRACTION, STEPS = 1500, 1, 0.3, 300
# MARGIN: top-30% by clip_score must beat random-30% by this much (absolute) on zero-shot
# accuracy or on mean retrieval R@1. Observed over pool seeds 1, 2, 3 (x training seeds 0, 1 for
# pool 1) before it was set: retrieval gap +0.0195, +0.0305, +0.0185, +0.0205 (zero-shot gap
# -0.005, +0.030, +0.009, +0.018: too noisy to assert alone); about half the smallest gap.
MARGIN = 0.01
# CORESET_SLACK: "coreset is at least as good as top by clip_score", loosely: its mean retrieval
# R@1 over two training seeds may trail top's by at most this. Set from bench/evaluate.py (5000
# pool, three seeds) before this test was run: per-seed sd of retrieval 0.3-1.3 points, so a
# difference of two-seed means has sd about 1 point; 1.5 points is 1.5 sd.
CORESET_SLACK = 0.015
SEEDS = [0, 1]


def write_selection(ws: Path, name: str, ids: list[str]) -> None:
    pq.write_table(pa.table({"sample_id": pa.array(ids, pa.string()),
                             "rank": pa.array(range(len(ids)), pa.int64()),
                             "reason": pa.array([name] * len(ids), pa.string())}),
                   Workspace.open(ws).selection(name).parquet)


def _samples(ws: Path) -> list[dict]:
    return pa.concat_tables([pq.read_table(p, columns=["sample_id", "key", "status"])
                             for p in Workspace.open(ws).sample_parts()]).to_pylist()


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1500-sample pool with 30% defects, embedded and clip-scored, with selections random,
    top (30% by clip_score), oracle (truth-clean) of equal size, a small one and an empty one."""
    from curate.ingest import ingest
    from curate.passes.embed import embed
    from curate.passes.score import score
    from curate.synth import make_pool

    root = tmp_path_factory.mktemp("evaluate")
    pool = make_pool(root / "pool", POOL_N, POOL_SEED, shard_size=500, defects=DEFECTS)
    ws = root / "ws"
    ingest([str(pool)], ws, progress=False)
    embed(ws, "tiny-clip", progress=False)
    score(ws, "clip_score", progress=False)
    w = Workspace.open(ws)
    w.selections_dir.mkdir()
    rows, k = _samples(ws), round(FRACTION * POOL_N)
    ok = sorted(r["sample_id"] for r in rows if r["status"] == "ok")
    write_selection(ws, "random", random.Random(0).sample(ok, k))
    scores = pa.concat_tables([pq.read_table(p, columns=["sample_id", "clip_score"]) for p in
                               sorted(w.scores_dir("clip_score").glob("part-*.parquet"))])
    ranked = sorted((r for r in scores.to_pylist() if r["clip_score"] is not None),
                    key=lambda r: (-r["clip_score"], r["sample_id"]))
    write_selection(ws, "top", [r["sample_id"] for r in ranked[:k]])
    truth = pq.read_table(pool / "truth.parquet", columns=["key", "defect"]).to_pylist()
    clean = {r["key"] for r in truth if r["defect"] == "none"}
    write_selection(ws, "oracle", random.Random(0).sample(
        sorted(r["sample_id"] for r in rows if r["status"] == "ok" and r["key"] in clean), k))
    from curate.select import parse_rules, select
    select(ws, "coreset", parse_rules(["coreset", str(k)]))
    select(ws, "top_coreset", parse_rules(["top", "clip_score", "0.5", "coreset", str(k)]))
    write_selection(ws, "small", ok[:40])
    write_selection(ws, "empty", [])
    return ws


@pytest.fixture(scope="module")
def results(curated: Path) -> dict[str, dict]:
    got = evaluate(curated, ["random", "top", "oracle", "coreset", "top_coreset"], steps=STEPS,
                   seeds=SEEDS)
    print("\n" + format_table(got))
    return {r["name"]: r for r in got}


def _retrieval(r: dict) -> float:
    return (r["i2t_r1"] + r["t2i_r1"]) / 2


def test_same_budget_and_size_for_every_selection(results: dict[str, dict]) -> None:
    assert {r["size"] for r in results.values()} == {round(FRACTION * POOL_N)}
    for r in results.values():
        assert (r["steps"], r["batch_size"], r["seed"]) == (STEPS, 128, 0)
        assert 0 <= r["zero_shot_acc"] <= 1 and 0 <= r["i2t_r1"] <= 1 and 0 <= r["t2i_r1"] <= 1
    # the proxy learns something: well above chance (1/40 zero-shot, 1/1000 retrieval)
    assert results["oracle"]["zero_shot_acc"] > 0.1


@pytest.mark.parametrize("name", ["top", "coreset", "top_coreset"])
def test_curated_subsets_beat_random_at_equal_size(name: str, results: dict[str, dict]) -> None:
    cur, rnd = results[name], results["random"]
    assert (cur["zero_shot_acc"] >= rnd["zero_shot_acc"] + MARGIN
            or _retrieval(cur) >= _retrieval(rnd) + MARGIN), (cur, rnd)


@pytest.mark.parametrize("name", ["coreset", "top_coreset"])
def test_coreset_is_about_as_good_as_top_by_clip_score(name: str,
                                                       results: dict[str, dict]) -> None:
    assert _retrieval(results[name]) >= _retrieval(results["top"]) - CORESET_SLACK, (
        results[name], results["top"])


# The oracle against random, means over training seeds 0 and 1, when this test was made to
# hold on every metric (it passed if either did): zero-shot 0.1365 vs 0.0935, i2t R@1 0.0465
# vs 0.0205, t2i R@1 0.0465 vs 0.019, the oracle ahead in each seed on each metric; every gap
# is larger than either selection's spread between its two seeds.
@pytest.mark.parametrize("metric", ["zero_shot_acc", "i2t_r1", "t2i_r1"])
def test_truth_clean_oracle_is_not_worse_than_random(metric: str,
                                                     results: dict[str, dict]) -> None:
    oracle, rnd = results["oracle"], results["random"]
    assert oracle[metric] >= rnd[metric], (metric, oracle, rnd)


def test_evaluation_is_written(curated: Path, results: dict[str, dict]) -> None:
    files = sorted(Workspace.open(curated).evaluations_dir.glob("*.json"))
    assert files
    written = [json.loads(f.read_text()) for f in files]
    match = [w for w in written if [r["name"] for r in w["results"]] == list(results)]
    assert match and match[0]["heldout"]["kind"] == "synthetic"
    assert match[0]["results"][1] == results["top"]


def test_same_selection_twice_gives_identical_numbers(curated: Path) -> None:
    a, b = (evaluate(curated, ["top"], steps=12, heldout_n=200, seed=3)[0] for _ in range(2))
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_several_seeds_report_the_mean_of_single_seed_runs(curated: Path) -> None:
    import statistics
    single = [evaluate(curated, ["top"], steps=12, heldout_n=200, seed=s)[0] for s in (3, 4)]
    (both,) = evaluate(curated, ["top"], steps=12, heldout_n=200, seeds=[3, 4])
    assert both["seeds"] == [3, 4] and [r["seed"] for r in both["per_seed"]] == [3, 4]
    for k in ("zero_shot_acc", "i2t_r1", "t2i_r1"):
        assert [r[k] for r in both["per_seed"]] == [r[k] for r in single]
        assert both[k] == pytest.approx((single[0][k] + single[1][k]) / 2)
        assert both["sd"][k] == pytest.approx(statistics.stdev([r[k] for r in single]))
    assert "±" in format_table([both]) and "training seeds: 3, 4" in format_table([both])
    assert main(["evaluate", "-w", str(curated), "top", "--seeds", "x,1"]) == 2


def test_selection_smaller_than_a_batch_and_workspace_heldout(
        curated: Path, tmp_path: Path) -> None:
    """A 40-sample selection still sees steps x batch samples; a held-out workspace with
    labels.parquet gets retrieval and zero-shot over its labels."""
    from curate.ingest import ingest
    from curate.synth import make_pool

    pool = make_pool(tmp_path / "pool", 60, seed=4242, defects=Defects(*[0.0] * 8))
    held = tmp_path / "held"
    ingest([str(pool)], held, progress=False)
    truth = {r["key"]: f"{r['colour']} {r['shape']}" for r in pq.read_table(
        pool / "truth.parquet", columns=["key", "colour", "shape"]).to_pylist()}
    rows = _samples(held)
    pq.write_table(pa.table({"sample_id": [r["sample_id"] for r in rows],
                             "label": [truth[r["key"]] for r in rows]}),
                   held / "labels.parquet")  # where the docs tell a user to put labels
    (r,) = evaluate(curated, ["small"], steps=6, heldout=str(held))
    assert r["size"] == 40 and r["epochs"] == pytest.approx(6 * 128 / 40, abs=0.01)
    assert r["zero_shot_acc"] is not None and r["i2t_r1"] is not None
    (held / "labels.parquet").unlink()
    (r,) = evaluate(curated, ["small"], steps=2, heldout=str(held))
    assert r["zero_shot_acc"] is None


def test_missing_and_empty_selections_fail_with_their_name(
        curated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CurateError, match="nope"):
        evaluate(curated, ["random", "nope"], steps=1)
    with pytest.raises(CurateError, match="'empty' is empty"):
        evaluate(curated, ["empty"], steps=1)
    with pytest.raises(CurateError, match="training workspace"):
        evaluate(curated, ["small"], steps=1, heldout=str(curated))
    assert main(["evaluate", "-w", str(curated), "nope"]) == 2
    assert "nope" in capsys.readouterr().err
