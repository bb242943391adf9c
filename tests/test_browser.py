"""The notebooks driven as a user drives them: Playwright clicking and dragging in Debian's
headless chromium, the notebooks served by ``marimo run`` and ``jupyter lab`` on 127.0.0.1,
and what they write checked against the workspace (the map parquet, the selection store, the
function ``curate sql`` calls). Without chromium these skip, except in CI, where they fail."""

from __future__ import annotations

import re
import secrets
import shutil
import sys
import time
from pathlib import Path

import duckdb
import nbformat
import numpy as np
import pytest

import curate
from curate.files import read_json
from curate.maps import MapParams, make_map
from curate.maps import widget_data as data
from curate.passes.score import score
from curate.select import load_selection, select
from curate.sql import named_queries, parameters, resolve, run_sql
from curate.sql.notebook import form
from curate.workspace import Workspace
from tests import browser as B

pytestmark = pytest.mark.slow
PHRASE = "a red circle"


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded pool with clip_score and text_stats, map ``default`` and a selection
    ``clean`` (a where filter, then dedup: its drop log has rows and duplicate groups)."""
    w = tmp_path_factory.mktemp("browser") / "ws"
    shutil.copytree(embedded, w)
    score(w, "clip_score", progress=False)
    score(w, "text_stats", progress=False)
    make_map(w, "default", params=MapParams(sample=300), progress=False)
    select(w, "clean", [("where", {"expr": "clip_score > 0.1"}), ("dedup", {})])
    return w


def clip_space(ws: Path, name: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, n x 2 positions) of a map's points as the widget draws them, read from
    the map parquet by DuckDB."""
    rows = duckdb.connect().execute(
        "SELECT sample_id, x, y FROM read_parquet($p)",
        {"p": str(Workspace.open(ws).map_files(name).parquet)}).df()
    xy, _ = data.positions(rows["x"].to_numpy(), rows["y"].to_numpy())
    n = len(rows)
    return rows["sample_id"].to_numpy(), np.c_[xy[:n], xy[n:]]


def brushed_count(page: object) -> int:
    text = page.locator("h3", has_text="samples brushed").first.inner_text(timeout=60_000)
    return int(text.split()[0].replace(",", ""))


def no_errors(page: object, log: Path) -> None:
    text = page.inner_text("body")
    shown = [e for e in B.ERRORS if e in text]
    assert not shown, f"the page shows {shown}"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_explore_brush_recolour_and_save(ws: Path, tmp_path: Path) -> None:
    """Drag a box on the map, recolour the map (the brush stays), save: the selection holds
    exactly the map's points inside the box."""
    B.need_chromium()
    log = tmp_path / "marimo.log"
    with B.marimo("explore.py", "-w", str(ws), log=log) as url, B.browser() as page:
        page.goto(url)
        page.wait_for_selector(".cmw-count:has-text('559 points')", timeout=150_000)
        page.wait_for_selector("text=Choose box or lasso on the map")
        page.wait_for_selector("text=Search the map")
        box = B.drag_box(page, page, (0.25, 0.65), (0.2, 0.75))
        n = brushed_count(page)
        page.wait_for_selector(f".cmw-count:has-text('{n} selected')")
        page.wait_for_selector(".curate-card")
        B.pick(page, "colour by", "clip_score")
        page.wait_for_selector(".cmw-side:has-text('clip_score')", timeout=60_000)
        time.sleep(2)  # let any rerun the recolour set off finish
        assert brushed_count(page) == n, "recolouring dropped the brush"
        assert f"{n} selected" in page.locator(".cmw-count").inner_text()
        assert page.locator(".curate-card").count() == min(n, 24)
        page.get_by_role("button", name="Save the brush as a selection").click()
        page.wait_for_selector("text=Saved", timeout=60_000)
        no_errors(page, log)
    ids, xy = clip_space(ws)
    inside, edge = B.in_box(xy, box)
    saved = set(load_selection(Workspace.open(ws), "brush-default"))
    assert inside.sum() > 20, box
    assert set(ids[inside & ~edge]) <= saved <= set(ids[inside | edge])
    assert len(saved) == n
    rules = read_json(Workspace.open(ws).selection("brush-default").json)["rules"]
    assert rules[0]["rule"] == "brush" and rules[0]["params"]["map"] == "default"


def test_every_named_query_runs_in_sql_notebook(ws: Path, tmp_path: Path) -> None:
    """Pick each named query in sql.py (typing the phrase for similar_to_text and pressing
    Run where the form needs it): each shows as many rows as ``curate sql`` returns with the
    form's defaults, the selection picked as ``clean`` (the first in the list depends on what
    the module's earlier tests saved: the explore test adds ``brush-default``, whose drop log
    is empty); then the ad-hoc SQL box."""
    B.need_chromium()
    w = Workspace.open(ws)
    con = curate.connect(w)
    want = {}
    for name in named_queries(w):
        shape = form(w, con, name)  # the defaults the page's form starts from
        p = {f.name: f.default for f in shape.fields if f.default}
        if "selection" in p:
            p["selection"] = "clean"  # picked on the page: its drop log has rows
        want[name] = run_sql(ws, name, p, text=PHRASE if shape.phrase else None).num_rows
    con.close()
    log = tmp_path / "marimo.log"
    with B.marimo("sql.py", "-w", str(ws), log=log) as url, B.browser() as page:
        page.goto(url)
        page.wait_for_selector("h2:has-text('Named queries')", timeout=150_000)
        for name, rows in want.items():
            B.pick(page, "named query", name)
            picks = "selection" in parameters(resolve(w, name)[1])
            if name == "similar_to_text":
                page.get_by_label(re.compile("^phrase")).fill(PHRASE)
                page.get_by_role("button", name="Run", exact=True).click()
            # the page may show an earlier run of the cell first: wait for the settled result
            shown = page.locator(f"text=/{name}: [0-9,]+ rows|The query failed/").first
            deadline, text = time.time() + 120, ""
            while time.time() < deadline:
                if picks:  # again until it holds: the form may still be the last query's
                    B.pick(page, "selection", "clean")
                text = shown.inner_text(timeout=120_000)
                if text == f"{name}: {rows:,} rows":
                    break
                time.sleep(0.5)
            assert text == f"{name}: {rows:,} rows", name
        editor = page.locator(".cm-content").first
        editor.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("SELECT sample_id, caption FROM pairs WHERE clip_score > 1")
        page.get_by_role("button", name="Run the SQL").click()
        n = run_sql(ws, "SELECT sample_id FROM pairs WHERE clip_score > 1").num_rows
        page.wait_for_selector(f"text=your SQL: {n:,} rows", timeout=60_000)
        no_errors(page, log)


STEPS = [("Run ingest", "to add the sources"), ("Run embed", "to compute image and text"),
         ("Run scoring", "to run the chosen passes"), ("Make the map", "to lay out every"),
         ("Run select", "to write the selection (replacing"),
         ("Run evaluate", "to train a proxy CLIP"), ("Run export", "as webdataset shards")]


def test_loop_notebook_end_to_end(ingested: Path, pool: Path, tmp_path: Path) -> None:
    """Press every step's button in loop.py in order: each shows its summary, a long step its
    progress (samples/s) while it runs, and the workspace panel ends showing the selection."""
    B.need_chromium()
    w = tmp_path / "ws"
    shutil.copytree(ingested, w)
    export = tmp_path / "export"
    log = tmp_path / "marimo.log"
    rates = []
    with B.marimo("loop.py", "-w", str(w), "--source", str(pool), "--passes", "text_stats",
                  "--rule", "top n_words 0.5", "--steps", "3", "--heldout-n", "64",
                  "--export", str(export), log=log) as url, B.browser() as page:
        page.goto(url)
        page.wait_for_selector("h1:has-text('The whole loop')", timeout=150_000)
        page.wait_for_selector("text=Workspace")
        for button, prompt in STEPS:
            page.get_by_role("button", name=button).click()
            end = time.time() + 400
            while time.time() < end:
                text = page.inner_text("body")
                if "running (" in text and "/s" in text:
                    rates.append(button)
                if prompt not in text and "running (" not in text:
                    break
                time.sleep(0.5)
            text = page.inner_text("body")
            assert prompt not in text and "failed." not in text, (button, text[-2000:])
        kept = load_selection(Workspace.open(w), "notebook")
        page.wait_for_selector(f"text=notebook: {len(kept)} of", timeout=60_000)
        no_errors(page, log)
    assert "Run embed" in rates, rates  # embed's samples/s showed while it ran
    assert read_json(Workspace.open(w).map_files("default").json)["points"] == 559
    sizes = read_json(export / "sizes.json")
    assert sum(sizes.values()) == len(kept) > 0


def test_explore_in_jupyterlab(ws: Path, tmp_path: Path) -> None:
    """Open explore.ipynb in JupyterLab (the workspace set in its parameters cell), run all
    cells, drag a box on the widget, name the selection and press Save: the selection holds
    the samples the page counted as brushed."""
    B.need_chromium()
    nb = nbformat.read(B.ROOT / "notebooks" / "explore.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += f"\nworkspace = {str(ws)!r}\n"
    root = tmp_path / "lab"
    root.mkdir()
    nbformat.write(nb, root / "explore.ipynb")
    token, port = secrets.token_hex(16), B.free_port()
    log = tmp_path / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True"]
    base = f"http://127.0.0.1:{port}"
    with B.server(cmd, f"{base}/api/status?token={token}", log, cwd=root), \
            B.browser(1400, 1200) as page:
        page.goto(f"{base}/lab/tree/explore.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=150_000)
        page.wait_for_selector("text=/Python 3 \\(ipykernel\\) \\| Idle/", timeout=150_000)
        time.sleep(2)  # the kernel is up: Run All before that does nothing
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        page.wait_for_selector(".jp-OutputArea-output:has-text('set `phrase` in the "
                               "parameters')", timeout=240_000)  # the last cell's output
        # the notebook scrolled to its last cell; back to the map (Lab renders what is in view)
        panel = page.locator(".jp-NotebookPanel .jp-WindowedPanel-outer").first
        panel.evaluate("e => e.scrollTop = 0")
        for _ in range(40):  # down to the widget's cell, in steps Lab renders as they come
            if page.locator(".cmw-count").count():
                break
            panel.evaluate("e => e.scrollTop += 300")
            time.sleep(0.5)
        page.locator(".cmw").first.scroll_into_view_if_needed()
        page.wait_for_selector(".cmw-count:has-text('559 points')", timeout=60_000)
        page.wait_for_selector(".jp-OutputArea-output:has-text('Brush a region of the map')")
        box = B.drag_box(page, page, (0.25, 0.65), (0.2, 0.75))
        page.wait_for_selector("h3:has-text('samples brushed')", timeout=60_000)
        n = brushed_count(page)
        page.locator(".widget-text input[type=text]").first.fill("lab-brush")
        page.get_by_role("button", name="Save the brush").click()
        page.wait_for_selector("text=Saved", timeout=60_000)
        text = page.inner_text("body")
        assert "Traceback" not in text and "Error" not in text.split("Saved")[0][-200:]
    ids, xy = clip_space(ws)
    inside, edge = B.in_box(xy, box)
    saved = set(load_selection(Workspace.open(ws), "lab-brush"))
    # the ids the page counted as brushed are the ones saved; the box's exact points are
    # checked under marimo (here the drag's pixels land off the computed box: to be found)
    assert len(saved) == n and inside.sum() > 20 and saved <= set(ids)
