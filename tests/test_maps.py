"""Maps: layout quality, clusters and their labels against the pool's ground truth, rendering,
brushes saved as selections, and the bad inputs the notebooks must explain."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from curate.cli import main
from curate.errors import CurateError
from curate.files import read_json
from curate.ingest import ingest
from curate.maps import MapParams, check_map, load_points, make_map, render_map, save_brush
from curate.maps.brush import keep_by_cluster, rule_sql, thumbnails
from curate.maps.io import load_vectors
from curate.maps.labels import cluster_labels
from curate.maps.layout import fuzzy_weights, knn, preservation
from curate.passes.score import score
from curate.select import load_selection
from curate.synth import make_pool
from curate.workspace import Workspace


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded pool with scores and two maps: ``default`` (UMAP fitted on 300 of the
    559 decodable images, the rest placed) and ``fine`` (30 clusters)."""
    w = tmp_path_factory.mktemp("maps") / "ws"
    shutil.copytree(embedded, w)
    score(w, "text_stats", progress=False)
    make_map(w, "default", params=MapParams(sample=300), progress=False)
    make_map(w, "fine", params=MapParams(sample=300, clusters=30), progress=False)
    return w


@pytest.fixture(scope="module")
def truth(ws: Path, pool: Path) -> pd.DataFrame:
    con = duckdb.connect()
    return con.execute("SELECT s.sample_id, t.* FROM read_parquet($s) s JOIN read_parquet($t) t "
                       "USING (key)", {"s": [str(p) for p in Workspace.open(ws).sample_parts()],
                                       "t": str(pool / "truth.parquet")}).df().set_index(
        "sample_id")


def points(ws: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(Workspace.open(ws).map_files(name).parquet)


def manifest(ws: Path, name: str) -> dict:
    return read_json(Workspace.open(ws).map_files(name).json)


def test_map_file_and_manifest(ws: Path, truth: pd.DataFrame) -> None:
    m = manifest(ws, "default")
    p = points(ws, "default")
    assert list(p.columns) == ["sample_id", "x", "y", "cluster", "cluster_label"]
    decodable = truth[truth.expected_status == "ok"]
    assert set(p.sample_id) <= set(decodable.index) and p.sample_id.is_unique
    ids, _ = load_vectors(Workspace.open(ws), "tiny-clip", "image")
    assert len(p) == len(ids) == m["points"] == m["sample"] + m["placed"]
    assert (m["method"], m["sample"], m["seed"], m["params"]["n_neighbors"]) == (
        "umap-sample-place", 300, 0, 15)
    assert m["embedding"]["model"] == "tiny-clip" and m["embedding"]["kind"] == "image"
    assert np.isfinite(p[["x", "y"]].to_numpy()).all()
    assert [c["id"] for c in m["clusters"]] == list(range(8))  # sqrt(559) / 3 rounds to 8
    sizes = [c["size"] for c in m["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(p)
    assert set(m["seconds"]) >= {"read", "fit", "place", "cluster", "label", "total"}


def test_layout_preserves_neighbourhoods(ws: Path) -> None:
    ids, x = load_vectors(Workspace.open(ws), "tiny-clip", "image")
    y = points(ws, "default").set_index("sample_id").loc[ids, ["x", "y"]].to_numpy()
    kept = preservation(x, y, k=15, queries=None)
    shuffled = preservation(x, np.random.default_rng(0).permutation(y), k=15, queries=None)
    assert kept > 0.6  # measured 0.716; chance is 15/559 = 0.027
    assert shuffled < 0.06


def test_layout_is_deterministic(ws: Path, tmp_path: Path) -> None:
    again = make_map(ws, "again", params=MapParams(sample=300), progress=False)
    a, b = points(ws, "default"), points(ws, "again")
    assert np.array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())
    assert again["clusters"] == manifest(ws, "default")["clusters"]


def test_clusters_follow_the_scenes(ws: Path, truth: pd.DataFrame) -> None:
    """tiny-clip's image embeddings separate colour x background; shapes hardly at all."""
    p = points(ws, "fine").set_index("sample_id")
    t = truth.loc[p.index]
    scene = t["colour"] + "/" + t["background"]
    assert adjusted_rand_score(scene, p.cluster) > 0.45  # measured 0.59
    assert adjusted_rand_score(t["shape"], p.cluster) < 0.05


def test_cluster_labels_name_their_colour(ws: Path, truth: pd.DataFrame) -> None:
    p = points(ws, "fine").set_index("sample_id")
    t = truth.loc[p.index]
    checked = named = 0
    for _, g in p.groupby("cluster"):
        colours = t.loc[g.index, "colour"].value_counts()
        if len(g) >= 10 and colours.iloc[0] >= 0.8 * len(g):
            checked += 1
            named += colours.index[0] in g.cluster_label.iloc[0].split()
    assert checked >= 15 and named >= 0.9 * checked


def test_labels_by_hand() -> None:
    t = pa.table({"cluster": [0, 0, 0, 1, 1, 1],
                  "caption": ["A photo of a red circle", "the red circle, big", "red circles",
                              "a photo of a blue square", "Blue square on the left", None]})
    got = cluster_labels(t)
    assert got[0]["words"][:2] == ["red", "circle"] and got[0]["size"] == 3
    assert got[1]["words"][:2] == ["blue", "square"]
    assert "photo" not in got[0]["words"] + got[1]["words"]  # used evenly: no lift
    assert not {"a", "the", "of", "on"} & set(got[0]["words"] + got[1]["words"])


def test_placement_weights_follow_distance() -> None:
    w = fuzzy_weights(np.array([[0.1, 0.2, 0.4, 0.8]], np.float32))
    assert w[0, 0] == 1.0 and np.all(np.diff(w[0]) < 0)
    assert w.sum() == pytest.approx(np.log2(4), rel=1e-3)
    base = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    idx, dist = knn(base[:5], base, 3)
    assert (idx[:, 0] == np.arange(5)).all() and np.allclose(dist[:, 0], 0, atol=5e-3)


def test_text_and_joint_maps_cover_their_samples(ws: Path, truth: pd.DataFrame) -> None:
    m = make_map(ws, "text", "text", params=MapParams(sample=200), progress=False)
    n_ok = int((truth.expected_status == "ok").sum())
    assert m["points"] == n_ok  # captions of images that fail to decode still have vectors
    j = make_map(ws, "joint", "joint", params=MapParams(sample=200), progress=False)
    assert j["points"] == manifest(ws, "default")["points"]
    assert j["embedding"]["dim"] == 128


@pytest.mark.slow
def test_render_categorical_and_continuous(ws: Path, tmp_path: Path) -> None:
    out = render_map(ws, "fine", "cluster", tmp_path / "clusters.png", size=400)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    saturated = img[(img.max(2) - img.min(2)) > 80]
    assert len(np.unique(saturated // 32, axis=0)) >= 12  # many distinct legend colours
    out = render_map(ws, "default", "n_words", tmp_path / "words.png", size=400)
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    yellow = (img[..., 0] > 200) & (img[..., 1] > 200) & (img[..., 2] < 80)  # viridis top
    purple = (img[..., 0] > 50) & (img[..., 1] < 30) & (img[..., 2] > 70)  # viridis bottom
    assert yellow.sum() > 50 and purple.sum() > 50  # both ends: points and colour bar


def test_cli_map_render_and_bad_columns(ws: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["map", "-w", str(ws), "--name", "cli", "--sample", "200",
                 "--clusters", "5"]) == 0
    out = capsys.readouterr().out
    assert "map cli: 559 points" in out and len(out.splitlines()) == 6
    assert main(["render", "-w", str(ws), "--map", "cli", "-o", str(tmp_path / "m.png")]) == 0
    assert Image.open(tmp_path / "m.png").size[0] > 400
    assert main(["render", "-w", str(ws), "--map", "cli", "--color", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no column 'nope'" in err and "n_words" in err and "Traceback" not in err
    assert main(["render", "-w", str(ws), "--map", "nomap"]) == 2
    assert "no map 'nomap'" in capsys.readouterr().err


def test_no_map_and_no_embeddings(ingested: Path, embedded: Path) -> None:
    with pytest.raises(CurateError, match="no embeddings yet"):
        make_map(ingested, progress=False)
    with pytest.raises(CurateError, match="has no map yet"):
        load_points(Workspace.open(embedded), "default")
    with pytest.raises(CurateError, match="--embedding"):
        make_map(embedded, "x", "pixels", progress=False)
    with pytest.raises(CurateError, match="map name '../x': use letters"):
        make_map(embedded, "../x", progress=False)  # it would become a path outside maps/


def test_map_of_changed_samples_says_so(ws: Path, tmp_path: Path) -> None:
    w = tmp_path / "ws"
    shutil.copytree(ws, w)
    wsp = Workspace.open(w)
    assert check_map(wsp, "default") is None
    ingest([str(make_pool(tmp_path / "more", 20, seed=99))], w, progress=False)
    msg = check_map(wsp, "default")
    assert "samples have no embeddings yet" in msg and "curate map" in msg
    assert len(load_points(wsp, "default")) == manifest(w, "default")["points"]


def test_brush_saved_as_selection(ws: Path) -> None:
    wsp = Workspace.open(ws)
    frame = load_points(wsp, "default", ["n_words"])
    box = {"type": "box", "x": [float(frame.x.min()), float(frame.x.median())],
           "y": [float(frame.y.min()), float(frame.y.max())]}
    inside = frame[(frame.x <= frame.x.median())]
    r = save_brush(ws, "left", list(inside.sample_id), "default", box)
    assert r.kept == len(inside) and load_selection(wsp, "left") == list(inside.sample_id)
    m = json.loads(wsp.selection("left").json.read_text())
    assert m["rules"][0]["rule"] == "brush" and m["rules"][0]["params"]["geometry"] == box
    assert m["candidates"] == len(frame)
    with pytest.raises(CurateError, match="exists"):
        save_brush(ws, "left", list(inside.sample_id), "default", box)
    with pytest.raises(CurateError, match="no points"):
        save_brush(ws, "empty", [], "default", box)
    thumbs = thumbnails(wsp, list(inside.sample_id[:3]))
    assert [Image.open(io.BytesIO(b)).size for b in thumbs.values()] == [(64, 64)] * 3


def test_rule_counts_per_cluster(ws: Path) -> None:
    frame = load_points(Workspace.open(ws), "default", ["n_words", "n_chars"])
    ranges = {"n_words": (8.0, 30.0), "n_chars": (0.0, 60.0)}
    table = keep_by_cluster(frame, ranges)
    keep = frame.n_words.between(8, 30) & frame.n_chars.between(0, 60)
    assert table.iloc[-1]["kept"] == keep.sum() and table.iloc[-1]["samples"] == len(frame)
    per = frame[keep].groupby("cluster").size()
    assert table.set_index("cluster").loc[per.index, "kept"].tolist() == per.tolist()
    assert rule_sql(ranges) == '"n_words" BETWEEN 8 AND 30 AND "n_chars" BETWEEN 0 AND 60'


def test_sample_index_finds_the_nearest_points() -> None:
    """The inverted file over a large sample returns (almost) the exact neighbours."""
    from curate.maps.layout import SampleIndex

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 16)).astype(np.float32) * 3
    base = (centres[rng.integers(40, size=10_000)] + rng.normal(size=(10_000, 16))).astype(
        np.float32)
    queries = (centres[rng.integers(40, size=1000)] + rng.normal(size=(1000, 16))).astype(
        np.float32)
    index = SampleIndex(base, seed=0)
    assert index.cent is not None and len(index.members) == 100
    got, gd = index.query(queries, 15)
    want, wd = knn(queries, base, 15)
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(got, want, strict=True)])
    assert recall > 0.97 and np.all(gd[:, 0] >= wd[:, 0] - 1e-4)
