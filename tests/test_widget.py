"""The interactive map widget and map search: what the widget sends the browser against the
map's parquet, selection and hover against the workspace, search against brute-force NumPy
cosine, the ``explore`` verb, and one drive of the widget in chromium under marimo."""

from __future__ import annotations

import base64
import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.cli import main
from curate.errors import CurateError
from curate.images import decode_rgb, read_bytes
from curate.maps import MapParams, make_map
from curate.maps import widget_data as data
from curate.maps.search import by_phrase, more_like
from curate.maps.widget import MapWidget
from curate.passes.score import score
from curate.workspace import Workspace

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded pool with clip_score and text_stats, map ``default`` (8 clusters) and
    ``many`` (64 clusters, the legend's hard case)."""
    w = tmp_path_factory.mktemp("widget") / "ws"
    shutil.copytree(embedded, w)
    score(w, "clip_score", progress=False)
    score(w, "text_stats", progress=False)
    make_map(w, "default", params=MapParams(sample=300), progress=False)
    make_map(w, "many", params=MapParams(sample=300, clusters=64), progress=False)
    return w


def map_rows(ws: Path, name: str, columns: str = "") -> pd.DataFrame:
    """The map parquet joined to ``pairs`` by DuckDB, in the file's order (the widget's)."""
    w = Workspace.open(ws)
    con = duckdb.connect()
    w.build_views(con)
    return con.execute(f"SELECT m.* EXCLUDE (file_row_number) {columns} FROM read_parquet("
                       "$m, file_row_number = true) m JOIN pairs p USING (sample_id) "
                       "ORDER BY m.file_row_number",
                       {"m": str(w.map_files(name).parquet)}).df()


def decoded(w: MapWidget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = np.frombuffer(w._xy, np.float32)
    n = len(xy) // 2
    return xy[:n], xy[n:], np.frombuffer(w._codes, np.uint16)


def test_points_buffer_is_the_map(ws: Path) -> None:
    w = MapWidget(ws)
    m = map_rows(ws, "default")
    assert w.frame["sample_id"].tolist() == m["sample_id"].tolist()
    x, y, codes = decoded(w)
    assert len(x) == len(m) == len(codes)
    # one scale for both axes, centred, inside clip space
    span = max(np.ptp(m["x"]), np.ptp(m["y"]))
    s = 0.98 / (span / 2)
    cx, cy = (m["x"].min() + m["x"].max()) / 2, (m["y"].min() + m["y"].max()) / 2
    np.testing.assert_allclose(x, (m["x"] - cx) * s, atol=1e-5)
    np.testing.assert_allclose(y, (m["y"] - cy) * s, atol=1e-5)
    assert max(np.abs(x).max(), np.abs(y).max()) == pytest.approx(0.98, abs=1e-5)


def test_clusters_legend_and_labels_at_centroids(ws: Path) -> None:
    w = MapWidget(ws, "many")
    m = map_rows(ws, "many")
    _, _, codes = decoded(w)
    ks = np.unique(m["cluster"])
    assert len(ks) == 64
    np.testing.assert_array_equal(ks[codes], m["cluster"])  # code i is the i-th cluster
    items = w._legend["items"]
    assert [it["count"] for it in items] == np.bincount(m["cluster"])[ks].tolist()
    assert len({it["colour"] for it in items}) == 64 == len(set(w._palette))
    names = m.groupby("cluster")["cluster_label"].first()
    assert [it["name"] for it in items] == [f"{k}: {names[k]}" for k in ks]
    # every label sits at its cluster's median point, in the buffer's coordinates
    med = m.groupby("cluster")[["x", "y"]].median()
    c, s = w.transform["center"], w.transform["scale"]
    assert sorted(lab[3] for lab in w._labels) == ks.tolist()
    for lx, ly, text, k in w._labels:
        assert text == names[k]
        assert lx == pytest.approx((med.loc[k, "x"] - c[0]) * s, abs=1e-6)
        assert ly == pytest.approx((med.loc[k, "y"] - c[1]) * s, abs=1e-6)
    sizes = m["cluster"].value_counts()
    assert w._labels[0][3] == sizes.index[0]  # the largest cluster's label is placed first


def test_numeric_colour_is_binned_on_the_ramp(ws: Path) -> None:
    w = MapWidget(ws, color="clip_score")
    m = map_rows(ws, "default", ', p."clip_score"')
    v = m["clip_score"].to_numpy(float)
    lo, hi = np.percentile(v, [1, 99])
    want = 1 + np.minimum(((np.clip((v - lo) / (hi - lo), 0, 1)) * data.RAMP_STEPS)
                          .astype(int), data.RAMP_STEPS - 1)
    _, _, codes = decoded(w)
    np.testing.assert_array_equal(codes, want)
    assert w._legend["kind"] == "numeric" and w._legend["span"] == pytest.approx([lo, hi])
    assert len(w._palette) == data.RAMP_STEPS + 1 and w._palette[-1] == "#fde725"  # viridis
    # a missing value is code 0, grey
    c = data.colouring(pd.DataFrame({"s": [0.0, np.nan, 1.0]}), "s")
    assert c.codes.tolist() == [1, 0, data.RAMP_STEPS] and c.legend["missing"] == 1


def test_every_colour_column_is_the_pairs_column(ws: Path) -> None:
    """A score's column is read from its own view (not through every join of ``pairs``), a
    sample's own column through ``pairs``: each equals ``pairs``, point for point."""
    w = MapWidget(ws)
    cols = [c for c in w.color_choices() if c != "cluster"]
    assert {"clip_score", "n_words"} <= set(cols) and w._sources["clip_score"] == (
        "scores_clip_score", "clip_score")
    m = map_rows(ws, "default", "".join(f', p."{c}"' for c in cols))
    for c in cols:
        got, want = w.column(c), m[c]
        assert len(got) == len(want), c
        if want.dtype.kind in "iufb":
            np.testing.assert_array_equal(got.to_numpy(float), want.to_numpy(float), c)
        else:
            assert got.tolist() == want.tolist(), c


def test_categorical_colour_many_values(ws: Path) -> None:
    frame = pd.DataFrame({"c": [f"v{i % 300}" for i in range(3000)] + [None] * 5})
    c = data.colouring(frame, "c")
    assert len(c.legend["items"]) == data.MAX_CATEGORIES  # 255 values, then "other"
    other = c.legend["items"][-1]
    assert other["name"] == "other" and other["count"] == 3005 - sum(
        it["count"] for it in c.legend["items"][:-1])
    for it in c.legend["items"]:
        assert (c.codes == it["code"]).sum() == it["count"]
    w = MapWidget(ws, color="download_status")
    m = map_rows(ws, "default", ", p.download_status")
    counts = m["download_status"].value_counts()
    assert {it["name"]: it["count"] for it in w._legend["items"]} == counts.to_dict()


def test_colour_choices_leave_out_ids_and_constants(ws: Path) -> None:
    w = MapWidget(ws)
    got = w.color_choices()
    m = map_rows(ws, "default", ", p.* EXCLUDE (sample_id)")
    assert got[0] == "cluster" and "clip_score" in got and "n_words" in got
    for c in ("sample_id", "image_hash", "orig_key", "meta", "ingested_at", "image_path",
              "caption", "url", "sha256", "image_offset"):
        assert c not in got
    for c in got[1:]:
        assert m[c].nunique() >= 2, c  # constant columns (on this map) are left out
    constant = [c for c in m.columns if m[c].nunique(dropna=False) == 1]
    assert constant and not set(constant) & set(got)  # e.g. status: every point is ok


def test_selection_to_ids_survives_colour_and_map_change(ws: Path) -> None:
    w = MapWidget(ws)
    m = map_rows(ws, "default")
    rows = [7, 3, 3, 200, 10_000, -1]  # as the browser might send them, out of range too
    w.selection = np.asarray(rows, "<i4").tobytes()
    assert w.selected_ids == m["sample_id"].iloc[[3, 7, 200]].tolist()
    before = w.selected_ids
    w.color = "clip_score"
    w.color = "n_words"
    assert w.selected_ids == before and w.selection == np.asarray(rows, "<i4").tobytes()
    with pytest.raises(CurateError, match="cannot colour by"):
        w.color = "no_such_column"
    assert w.color == "n_words"
    w.map_name = "many"  # the same samples, other rows
    assert sorted(w.selected_ids) == sorted(before)
    other = map_rows(ws, "many")
    assert w.frame["sample_id"].tolist() == other["sample_id"].tolist()
    assert w.select([before[0], "not-a-sample"]) == 1 and w.selected_ids == [before[0]]


def test_highlight_marks_ids_on_the_map(ws: Path) -> None:
    w = MapWidget(ws)
    m = map_rows(ws, "default")
    ids = m["sample_id"].iloc[[5, 50, 500]].tolist()
    assert w.highlight([*ids, "missing"]) == 3
    assert sorted(w.highlighted_ids) == sorted(ids)
    assert np.frombuffer(w._highlight, "<i4").tolist() == [5, 50, 500]
    assert w.highlight([]) == 0 and w._highlight == b""


def test_hover_card_is_the_sample(ws: Path) -> None:
    w = MapWidget(ws, color="clip_score")
    w.hovered = 11
    card = w.hover_card
    sid = w.frame["sample_id"].iat[11]
    con = duckdb.connect()
    Workspace.open(ws).build_views(con)
    caption, path, off, length, clip = con.execute(
        "SELECT caption, image_path, image_offset, image_length, clip_score FROM pairs "
        "WHERE sample_id = ?", [sid]).fetchone()
    assert card["index"] == 11 and card["sample_id"] == sid and card["caption"] == caption
    assert card["values"]["clip_score"] == pytest.approx(clip)
    assert card["values"]["cluster"] == w.frame["cluster_label"].iat[11]
    jpeg = base64.b64decode(card["thumbnail"].split(",", 1)[1])
    thumb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), float)
    ref = decode_rgb(read_bytes(path, off, length))
    ref.thumbnail((160, 160), Image.Resampling.LANCZOS)
    assert thumb.shape == np.asarray(ref).shape
    assert np.abs(thumb - np.asarray(ref, float)).mean() < 6  # the image, JPEG-compressed


def embeddings(ws: Path) -> tuple[list[str], np.ndarray]:
    """Every ok image vector of tiny-clip, read straight from its parquet parts."""
    w = Workspace.open(ws)
    t = pq.ParquetDataset(sorted(w.pass_dir("embeddings", "tiny-clip").glob("part-*.parquet"))
                          ).read(columns=["sample_id", "status", "image_emb"]).to_pandas()
    t = t[t["status"] == "ok"]
    x = np.stack(t["image_emb"].to_numpy()).astype(np.float64)
    return t["sample_id"].tolist(), x / np.linalg.norm(x, axis=1, keepdims=True)


def test_search_by_phrase_is_exact_cosine(ws: Path) -> None:
    import torch

    from curate import models
    ids, x = embeddings(ws)
    m = models.load("tiny-clip")
    with torch.no_grad():
        q = m.model.encode_text(m.tokenizer(["a red circle"]))[0].double().numpy()
    sims = x @ (q / np.linalg.norm(q))
    want = np.argsort(-sims, kind="stable")[:10]
    got = by_phrase(ws, "default", "a red circle", 10)
    assert got["sample_id"].tolist() == [ids[i] for i in want]
    np.testing.assert_allclose(got["score"], sims[want], atol=1e-5)
    assert got["rank"].tolist() == list(range(1, 11))
    assert by_phrase(ws, "tiny-clip", "a red circle", 10).equals(got)  # a model, not a map
    with pytest.raises(CurateError, match="phrase"):
        by_phrase(ws, "default", "  ", 5)
    with pytest.raises(CurateError, match="no embeddings for model"):
        by_phrase(ws, "nope", "red", 5)


def test_more_like_this_is_exact_cosine(ws: Path) -> None:
    ids, x = embeddings(ws)
    sims = x @ x[42]
    sims[42] = -np.inf
    want = np.argsort(-sims, kind="stable")[:8]
    got = more_like(ws, ids[42], 8)
    assert got["sample_id"].tolist() == [ids[i] for i in want] and ids[42] not in set(
        got["sample_id"])
    np.testing.assert_allclose(got["score"], sims[want], atol=1e-5)
    assert len(more_like(ws, ids[0], 10_000)) == len(ids) - 1
    with pytest.raises(CurateError, match="no image embedding"):
        more_like(ws, "not-a-sample", 5)
    with pytest.raises(CurateError, match="positive"):
        more_like(ws, ids[0], 0)


def test_explore_verb(ws: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["explore", "-w", str(ws), "--map", "many", "--print"]) in (0, None)
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"-m marimo run {Path('notebooks/explore.py').resolve()} -- -w "
                         f"{Workspace.open(ws).root} --map many")
    assert shlex.split(line)[:4] == [sys.executable, "-m", "marimo", "run"]
    assert main(["explore", "-w", str(ws), "--map", "nope", "--print"]) == 2
    assert "no map 'nope'" in capsys.readouterr().err
    bare = tmp_path / "bare"
    shutil.copytree(ws, bare, ignore=shutil.ignore_patterns("maps"))
    assert main(["explore", "-w", str(bare), "--print"]) == 2
    assert "has no map yet" in capsys.readouterr().err


NOTEBOOK = '''
import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo
    from curate.maps.widget import MapWidget
    w = MapWidget({ws!r})
    wid = mo.ui.anywidget(w)
    wid
    return mo, w, wid


@app.cell
def _(mo, w, wid):
    _ = wid.value
    mo.md(f"<span id='python-ids'>{{','.join(w.selected_ids)}}</span>")
    return
'''


def chromium_or_skip() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI installs chromium for the browser tests")
        pytest.skip(f"{CHROMIUM} is not installed")


@pytest.mark.slow
def test_box_selection_in_the_browser_reaches_python(ws: Path, tmp_path: Path) -> None:
    """marimo serves a notebook holding the widget; chromium draws a box on it; the ids
    Python then holds are exactly the points whose positions fall inside that box."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    nb = tmp_path / "nb.py"
    nb.write_text(NOTEBOOK.format(ws=str(ws)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    server = subprocess.Popen([sys.executable, "-m", "marimo", "run", "--headless", "--host",
                               "127.0.0.1", "--port", str(port), str(nb)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".cmw-count:has-text('559 points')", timeout=90_000)
            page.locator("button[data-mode=box]").click()
            canvas = page.locator(".cmw-main canvas").first
            b = canvas.bounding_box()
            x0, y0, x1, y1 = (b["x"] + b["width"] * 0.25, b["y"] + b["height"] * 0.2,
                              b["x"] + b["width"] * 0.6, b["y"] + b["height"] * 0.7)
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + 1, y0 + 1)  # the lasso starts at the first move after the press
            time.sleep(0.03)
            for t in np.linspace(0, 1, 12)[1:]:
                page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
                time.sleep(0.03)
            page.mouse.up()
            page.wait_for_selector(".cmw-count:has-text('selected')", timeout=20_000)
            # the box in clip space, through the plot's own view scales
            box = canvas.evaluate("""(c, r) => {
                const p = c.closest('.cmw').parentElement.curatePlot;
                const xs = p.get('xScale'), ys = p.get('yScale');
                const [ya, yb] = [ys.invert(r[1]), ys.invert(r[3])];
                return [xs.invert(r[0]), xs.invert(r[2]), Math.min(ya, yb), Math.max(ya, yb)];
            }""", [x0 + 1 - b["x"], y0 + 1 - b["y"], x1 - b["x"], y1 - b["y"]])
            shown = page.locator(".cmw-count").inner_text()
            deadline = time.time() + 20
            ids: list[str] = []
            while time.time() < deadline:
                text = page.locator("#python-ids").inner_text(timeout=5_000).strip()
                ids = text.split(",") if text else []
                if ids:
                    break
                time.sleep(0.3)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    w = MapWidget(ws)
    x, y, _ = decoded(w)
    inside = (x >= box[0]) & (x <= box[1]) & (y >= box[2]) & (y <= box[3])
    # points within two pixels of the edge may fall either way
    px = 2 * (box[1] - box[0]) / (b["width"] * 0.35 - 1)
    edge = ((np.abs(x - box[0]) < px) | (np.abs(x - box[1]) < px) |
            (np.abs(y - box[2]) < px) | (np.abs(y - box[3]) < px))
    want = set(w.frame["sample_id"][inside & ~edge])
    maybe = set(w.frame["sample_id"][inside | edge])
    assert inside.sum() > 20, box
    assert want <= set(ids) <= maybe, (len(want), len(ids), len(maybe))
    assert f"{len(ids)} selected" in shown
