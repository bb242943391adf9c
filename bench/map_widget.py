"""Interaction latencies of the interactive map (``curate.maps.widget.MapWidget``) against the
same operations on the datashader path it replaces, and screenshots of the widget (not a test).

    .venv/bin/python bench/map_widget.py [--n 100000 1000000] [--repeats 3] [--screenshots]
                                         [--screenshots-only] [--keep] [--out bench/out]

Each workspace is fabricated by ``bench/sql_latency.py``'s ``fabricate`` (curate's layout,
random schema-correct Parquet, 64-d tiny-clip-shaped embeddings), then given a map laid out
as 64 Gaussian clusters of uneven sizes, labelled by ``curate.maps.labels`` from the
captions, and image pointers that cycle through the images of a real 200-sample synthetic
pool (so hover cards have thumbnails). Operations, each the median of ``--repeats`` runs:

* payload: ``MapWidget(ws)`` (points read, buffers, labels, colour choices, cluster colours)
  against the datashader path: ``load_points`` and the shaded figure explore.py drew.
* brush -> ids: a box over ~10% of the map turned into sample ids (widget: the int32 rows
  the browser sends, decoded, to ids; datashader: ``curate.maps.explore.inside`` on the frame).
* colour change: ``w.color = "clip_score"`` (column read once, cached after) against
  ``load_points`` with that column and a new shaded figure.
* search: ``by_phrase`` (tiny-clip's text embedding, exact cosine over every image vector;
  the first call reads the vectors) and ``more_like``, against ``curate sql similar_to_text
  --text`` (the SQL path, the only search before); highlighting the 100 results.
* the same searches through the model's vector index (``curate.ann``, built here as
  ``curate index`` builds it): first use opens the index and reads the parts' id columns.
* save: ``save_brush`` of the brushed ids (the same call on both paths).
* hover card: ``w.card(i)`` (thumbnail, caption, scores from the workspace).

``--screenshots`` serves the widget at the largest ``--n`` under ``marimo run`` and takes
two PNGs with Playwright driving ``/usr/bin/chromium`` (WebGL by SwiftShader, on the CPU):
zoomed out, and zoomed in with a hover card (``bench/map_widget_*.png``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sql_latency import fabricate  # noqa: E402

from curate.files import write_json, write_parquet  # noqa: E402
from curate.workspace import Workspace  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PHRASE = "a red circle on a blue background"


def real_images(out: Path) -> pa.Table:
    """(image_path, image_offset, image_length) of a small ingested synthetic pool."""
    from curate.ingest import ingest
    from curate.synth import make_pool

    ws = out / "map-widget-images" / "ws"
    if not (ws / "samples").exists():
        pool = make_pool(out / "map-widget-images" / "pool", 200, 3, shard_size=100)
        ingest([str(pool)], ws, progress=False)
    t = pq.ParquetDataset(sorted((ws / "samples").glob("part-*.parquet"))).read(
        columns=["status", "image_path", "image_offset", "image_length"])
    return t.filter(pa.compute.equal(t["status"], "ok"))


def build(root: Path, n: int) -> Workspace:
    """The fabricated workspace with a clustered map and real image pointers."""
    from curate.maps.labels import cluster_labels

    ws_dir = root / f"map-widget-ws-{n}"
    done = ws_dir / "maps" / "default.json"
    if done.exists():
        return Workspace.open(ws_dir)
    t = time.time()
    fabricate(ws_dir, n, max(1, n // 100_000), 64)
    imgs = real_images(root)
    for part in sorted((ws_dir / "samples").glob("part-*.parquet")):
        s = pq.read_table(part)
        pick = np.arange(s.num_rows) % imgs.num_rows
        for c in ("image_path", "image_offset", "image_length"):
            s = s.set_column(s.schema.get_field_index(c), c, imgs[c].take(pick))
        write_parquet(s, part)
    m = pq.read_table(ws_dir / "maps" / "default.parquet", columns=["sample_id"])
    rng = np.random.default_rng(1)
    k = 64
    sizes = rng.dirichlet(np.full(k, 0.7))
    cluster = rng.choice(k, m.num_rows, p=sizes).astype(np.int32)
    centres = rng.uniform(-20, 20, (k, 2))
    spread = rng.uniform(0.4, 2.0, k)
    xy = centres[cluster] + rng.standard_normal((m.num_rows, 2)) * spread[cluster, None]
    caps = pq.ParquetDataset(sorted((ws_dir / "samples").glob("part-*.parquet"))).read(
        columns=["sample_id", "caption"])
    caps = dict(zip(caps["sample_id"].to_pylist(), caps["caption"].to_pylist(), strict=True))
    ids = m["sample_id"].to_pylist()
    labels = cluster_labels(pa.table({"cluster": cluster, "caption": [caps[i] for i in ids]}))
    write_parquet(pa.table({"sample_id": m["sample_id"], "x": xy[:, 0].astype(np.float32),
                            "y": xy[:, 1].astype(np.float32), "cluster": cluster,
                            "cluster_label": [labels[c]["label"] for c in cluster]}),
                  ws_dir / "maps" / "default.parquet")
    write_json({"name": "default", "points": m.num_rows, "embedding": {"model": "tiny-clip",
                                                                      "kind": "image"},
                "clusters": [{"id": c, **labels[c]} for c in range(k)],
                "note": "fabricated by bench/map_widget.py"}, done)
    w = Workspace.open(ws_dir)
    w.refresh()
    print(f"built {n:,} rows in {time.time() - t:.0f}s at {ws_dir}", flush=True)
    return w


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def datashader_figure(frame, color: str) -> None:
    import io

    import matplotlib.pyplot as plt

    from curate.maps.render import figure

    fig, _ = figure(frame, color, size=600)
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


def measure(ws: Workspace, repeats: int) -> list[tuple[str, float, float | None]]:
    """(operation, widget seconds, datashader-path seconds or None)."""
    from curate.maps import load_points, save_brush
    from curate.maps.explore import inside
    from curate.maps.search import by_phrase, image_vectors, more_like
    from curate.maps.widget import MapWidget
    from curate.maps.widget_data import encode_indices
    from curate.sql import run_sql

    rows = []
    holder: dict = {}

    def make() -> None:
        holder["w"] = MapWidget(ws)

    def shade() -> None:
        holder["f"] = load_points(ws, "default")
        datashader_figure(holder["f"], "cluster")

    rows.append(("payload (widget built / points read and drawn)",
                 median_time(make, repeats), median_time(shade, repeats)))
    w, frame = holder["w"], holder["f"]
    x0, x1 = np.quantile(frame["x"], [0.3, 0.62])
    y0, y1 = np.quantile(frame["y"], [0.3, 0.62])
    box = {"type": "box", "x": [float(x0), float(x1)], "y": [float(y0), float(y1)]}
    mask = inside(w.frame, box)
    sent = encode_indices(np.flatnonzero(mask))  # what the browser sends for that box

    def widget_brush() -> None:
        w.selection = sent
        holder["ids"] = w.selected_ids

    def shader_brush() -> None:
        holder["ids_ds"] = frame["sample_id"][inside(frame, box)].tolist()

    rows.append((f"brush -> ids ({int(mask.sum()):,} points)", median_time(widget_brush, repeats),
                 median_time(shader_brush, repeats)))
    assert sorted(holder["ids"]) == sorted(holder["ids_ds"])
    first = median_time(lambda: setattr(w, "color", "clip_score"), 1)
    w.color = "cluster"

    def recolour() -> None:
        w.color = "clip_score"
        w.color = "cluster"

    def shader_recolour() -> None:
        datashader_figure(load_points(ws, "default", ["clip_score"]), "clip_score")

    rows.append(("colour change, first (reads the column)", first,
                 median_time(shader_recolour, repeats)))
    rows.append(("colour change and back, cached", median_time(recolour, repeats), None))
    assert w.selected_ids == holder["ids"]
    rows.append(("search: first read of the image vectors (then cached)",
                 median_time(lambda: image_vectors(ws, "tiny-clip"), 1), None))
    rows.append(("search by phrase, first (loads the text model)",
                 median_time(lambda: by_phrase(ws, "default", PHRASE, 100), 1), None))
    rows.append(("search by phrase (k=100)",
                 median_time(lambda: holder.update(hits=by_phrase(ws, "default", PHRASE, 100)),
                             repeats),
                 median_time(lambda: run_sql(ws.root, "similar_to_text", text=PHRASE,
                                             model="tiny-clip"), repeats)))
    rows.append(("more like this (k=100)", median_time(
        lambda: more_like(ws, holder["ids"][0], 100), repeats), None))
    from curate import ann  # the same searches once `curate index` has built the index
    ann.build(ws.root, "tiny-clip", progress=False)
    ann._load.cache_clear()
    ann._ids_of.cache_clear()
    rows.append(("search by phrase through the index, first (opens it)", median_time(
        lambda: by_phrase(ws, "default", PHRASE, 100), 1), None))
    rows.append(("search by phrase through the index (k=100)", median_time(
        lambda: by_phrase(ws, "default", PHRASE, 100), repeats), None))
    rows.append(("more like this through the index, first (reads the ids)", median_time(
        lambda: more_like(ws, holder["ids"][1], 100), 1), None))
    rows.append(("more like this through the index (k=100)", median_time(
        lambda: more_like(ws, holder["ids"][0], 100), repeats), None))
    assert by_phrase(ws, "default", PHRASE, 100).attrs["via"] == "index"
    rows.append(("highlight 100 results", median_time(
        lambda: w.highlight(holder["hits"]["sample_id"].tolist()), repeats), None))
    rows.append(("hover card (thumbnail, caption, scores)",
                 median_time(lambda: w.card(len(w.frame) // 2), repeats), None))
    names = iter(range(1000))
    rows.append((f"save the brush ({len(holder['ids']):,} ids, save_brush)", median_time(
        lambda: save_brush(ws.root, f"bench-brush-{next(names)}", holder["ids"], "default",
                           box, overwrite=True), repeats), None))
    print(f"payload sent to the browser: {(len(w._xy) + len(w._codes)) / 1e6:.1f} MB "
          "(float32 positions, uint16 colour codes)", flush=True)
    w.close()
    return rows


NOTEBOOK = '''
import marimo

app = marimo.App(width="full")


@app.cell
def _():
    import marimo as mo
    from curate.maps.widget import MapWidget
    w = MapWidget({ws!r}, height=700, point_size=2.0)
    mo.ui.anywidget(w)
    return
'''


def screenshots(ws: Workspace, out: Path) -> list[Path]:
    """Zoomed out, then zoomed in with a hover card, in chromium under ``marimo run``."""
    from playwright.sync_api import sync_playwright

    nb = Path(tempfile.mkdtemp()) / "map.py"
    nb.write_text(NOTEBOOK.format(ws=str(ws.root)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "marimo", "run", "--headless", "--host",
                               "127.0.0.1", "--port", str(port), str(nb)],
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shots = [out / "map_widget_1m_zoomed_out.png", out / "map_widget_1m_zoomed_in_hover.png"]
    try:
        for _ in range(300):
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
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            t = time.time()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".cmw-count:has-text('points')", timeout=300_000)
            page.wait_for_timeout(3000)
            print(f"screenshots: widget drawn {time.time() - t:.0f}s after the page opened",
                  flush=True)
            page.screenshot(path=str(shots[0]))
            canvas = page.locator(".cmw-main canvas").first
            b = canvas.bounding_box()
            cx, cy = b["x"] + b["width"] * 0.45, b["y"] + b["height"] * 0.45
            page.mouse.move(cx, cy)
            for _ in range(5):
                page.mouse.wheel(0, -300)
                page.wait_for_timeout(300)
            page.wait_for_timeout(1500)
            # hover the point nearest the middle of the view
            pos = canvas.evaluate("""(c, n) => {
                const p = c.closest('.cmw').parentElement.curatePlot;
                const w = c.clientWidth, h = c.clientHeight;
                let best = null, d = 1e9;
                for (let i = 0; i < n; i += 7) {
                  const [x, y] = p.getScreenPosition(i);
                  const e = Math.abs(x - w / 2) + Math.abs(y - h / 2);
                  if (e < d) { d = e; best = [x, y]; }
                }
                return best;
            }""", ws_points(ws))
            page.mouse.move(b["x"] + pos[0], b["y"] + pos[1])
            page.wait_for_selector(".cmw-card img", state="visible", timeout=60_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(shots[1]))
            browser.close()
    finally:
        server.terminate()
        server.wait(20)
    return shots


def ws_points(ws: Workspace) -> int:
    return pq.read_metadata(ws.map_files("default").parquet).num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--screenshots", action="store_true")
    ap.add_argument("--screenshots-only", action="store_true", help="skip the timings")
    ap.add_argument("--keep", action="store_true", help="keep the fabricated workspaces")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    a = ap.parse_args()
    out = Path(a.out)
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    table = []
    for n in [] if a.screenshots_only else a.n:
        ws = build(out, n)
        for op, wt, dt in measure(ws, a.repeats):
            table.append((n, op, wt, dt))
            print(f"{n:>9,}  {op:<58} {wt:8.3f}s" + (f"  datashader path {dt:8.3f}s"
                                                      if dt is not None else ""), flush=True)
    print(f"load average at end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("\n| points | operation | widget path (s) | datashader path (s) |\n|--:|---|--:|--:|")
    for n, op, wt, dt in table:
        print(f"| {n:,} | {op} | {wt:.3f} | {'' if dt is None else f'{dt:.3f}'} |")
    if a.screenshots or a.screenshots_only:
        for p in screenshots(build(out, max(a.n)), ROOT / "bench"):
            print(f"screenshot: {p}")
    if not a.keep:
        for n in a.n:
            shutil.rmtree(out / f"map-widget-ws-{n}", ignore_errors=True)


if __name__ == "__main__":
    main()
