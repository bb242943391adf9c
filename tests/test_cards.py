"""Data cards: Hugging Face front matter and Datasheets sections, every number from manifests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from PIL import Image

from curate.cards import write_card
from curate.export import export
from curate.maps import make_map
from curate.workspace import Workspace
from tests.conftest import scored_with_selection

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded pool with clip_score and a selection that dedups then keeps the top half."""
    return scored_with_selection(embedded, tmp_path_factory.mktemp("cards") / "ws")


def split(card: str) -> tuple[dict, str]:
    _, front, body = card.split("---\n", 2)
    return yaml.safe_load(front), body


def test_front_matter_and_sections(ws: Path, pool: Path, tmp_path: Path) -> None:
    meta, body = split(write_card(ws, "clean", tmp_path / "card.md").read_text())
    manifest = json.loads(Workspace.open(ws).selection("clean").json.read_text())
    assert meta["pretty_name"].startswith("clean") and meta["license"] == "other"
    assert meta["size_categories"] == ["n<1K"] and "webdataset" in meta["tags"]
    assert meta["source_datasets"] == [pool.name] and "configs" not in meta  # no export yet
    for section in ("Motivation", "Composition", "Collection process", "Preprocessing: scores",
                    "Preprocessing: selection", "Uses", "Distribution and maintenance"):
        assert f"## {section}\n" in body
    assert f"{manifest['kept']:,} image-text pairs kept" in body
    assert f"from {manifest['candidates']:,} candidates" in body


def test_every_number_comes_from_the_manifests(ws: Path, tmp_path: Path) -> None:
    body = write_card(ws, "clean", tmp_path / "card.md").read_text()
    wsp = Workspace.open(ws)
    manifest = json.loads(wsp.selection("clean").json.read_text())
    for i, s in enumerate(manifest["rules"], 1):
        params = json.dumps(s["params"], sort_keys=True)
        assert f"| {i} | {s['rule']} | {params} | {s['in']} | {s['out']} | " \
               f"{s['in'] - s['out']} |" in body
    samples = pl.read_parquet(wsp.sample_parts())
    codes = (samples["error"].drop_nulls().str.split("; ").explode()
             .str.split(":").list.first().value_counts())
    for code, n in codes.iter_rows():
        assert f"| {code} | {n} |" in body
    assert f"{(samples['status'] == 'failed').sum()} failed" in body
    clip = wsp.manifest("scores", "clip_score")
    assert "| clip_score | clip_score, clip_cosine | tiny-clip | curate-tiny-clip |" in body
    assert clip["model"]["weights_sha256"] in body
    dropped = pl.read_parquet(wsp.selection("clean").dropped)
    for stage in ("exact", "perceptual"):
        d = dropped.filter(pl.col("stage") == stage)
        assert f"| {stage} | {len(d)} | {d['group_id'].n_unique()} |" in body
    assert "kept against dropped" in body
    assert Image.open(tmp_path / "clean_files" / "scores.png").size[0] > 300


@pytest.mark.slow
def test_regenerating_gives_the_same_bytes_and_the_export_a_copy(ws: Path,
                                                                 tmp_path: Path) -> None:
    own = tmp_path / "ws"
    shutil.copytree(ws, own)
    first = write_card(own, "clean")
    files = {p: p.read_bytes() for p in first.parent.rglob("*") if p.is_file()}
    assert first == own / "data_cards" / "clean.md" and len(files) == 2
    assert {p: p.read_bytes() for p in first.parent.rglob("*") if p.is_file()} == files
    write_card(own, "clean")
    assert {p: p.read_bytes() for p in first.parent.rglob("*") if p.is_file()} == files
    out = tmp_path / "shards"
    export(own, "clean", out, shard_size=100, progress=False)
    readme = (out / "README.md").read_text()
    meta, _ = split(readme)
    assert meta["configs"][0]["data_files"][0]["path"] == "clean-*.tar"
    assert meta["dataset_info"]["splits"][0]["num_examples"] == json.loads(
        (out / "export.json").read_text())["samples"]
    r = subprocess.run([sys.executable, "-m", "curate.cli", "card", "-w", str(own), "clean"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0 and r.stdout.strip() == str(first)
    assert first.read_text() == readme == (out / "README.md").read_text()
    assert (out / "clean_files" / "scores.png").read_bytes() == \
        (first.parent / "clean_files" / "scores.png").read_bytes()


@pytest.mark.slow
def test_proxy_training_and_the_map_appear_when_they_exist(ws: Path, tmp_path: Path) -> None:
    own = tmp_path / "ws"
    shutil.copytree(ws, own)
    body = write_card(own, "clean").read_text()
    assert "## Evaluation" not in body and "map.png" not in body
    evaluations = Workspace.open(own).evaluations_dir
    evaluations.mkdir()
    results = [{"name": n, "size": k, "steps": 300, "zero_shot_acc": a, "i2t_r1": 0.1,
                "t2i_r1": 0.2} for n, k, a in (("clean", 200, 0.5), ("random", 200, 0.25))]
    (evaluations / "20260101T000000_000000Z.json").write_text(json.dumps(
        {"created_at": "2026-01-01T00:00:00+00:00", "arch": "curate-tiny-clip",
         "heldout": {"kind": "synthetic", "n": 1000}, "results": results}))
    make_map(own, "default", progress=False)
    card = write_card(own, "clean")
    body = card.read_text()
    assert "## Evaluation: proxy training" in body
    assert "(evaluations/20260101T000000_000000Z.json)" in body
    assert "| clean | 200 | 300 | 0.5 | 0.1 | 0.2 |" in body
    assert "| random | 200 | 300 | 0.25 |" in body
    assert "(clean_files/map.png)" in body
    assert Image.open(card.parent / "clean_files" / "map.png").size[0] > 300
