"""The notebooks without a browser: the marimo ones lint clean, run headless on the synthetic
pool (in-process as scripts, and once through ``marimo export html``) and explain bad input in
the page instead of raising; the Jupyter one runs top to bottom under nbclient; the library
functions both call (columns offered, cards, saving) against the workspace. In a browser:
``test_browser.py``."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path
from types import ModuleType

import duckdb
import nbformat
import numpy as np
import polars as pl
import pytest

from curate.files import read_json
from curate.ingest import ingest
from curate.maps import MapParams, load_points, make_map
from curate.maps.explore import cards, inside, save, useful_columns
from curate.maps.frames import catalog, colour_columns
from curate.passes.score import score
from curate.select import load_selection, select
from curate.sql import named_queries, run_sql
from curate.synth import make_pool
from curate.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MARIMO = [sys.executable, "-m", "marimo"]


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("nb") / "ws"
    shutil.copytree(embedded, w)
    score(w, "text_stats", progress=False)
    make_map(w, "default", params=MapParams(sample=300), progress=False)
    return w


def notebook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"notebook_{name}", NOTEBOOKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(monkeypatch: pytest.MonkeyPatch, name: str, *args: str) -> tuple[str, dict]:
    """Run a notebook as a script (any cell error raises); (all outputs as text, its defs)."""
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *args])
    outputs, defs = notebook(name).app.run()
    html = "\n".join(o.text if isinstance(getattr(o, "text", None), str) else repr(o)
                     for o in outputs if o is not None)
    return plain(html), defs


def plain(html: str) -> str:
    """The words of marimo's HTML outputs (callouts nest escaped, JSON-encoded HTML)."""
    for _ in range(3):
        html = unescape(re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), html))
    return re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", html))


@pytest.mark.slow
def test_marimo_check_strict() -> None:
    r = subprocess.run([*MARIMO, "check", "--strict", str(NOTEBOOKS)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_explore_brush_shows_the_brushed_samples(ws: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    frame = load_points(Workspace.open(ws), "default")
    x0, x1 = float(frame.x.min()), float(frame.x.quantile(0.4))
    y0, y1 = float(frame.y.min()), float(frame.y.max())
    text, d = run(monkeypatch, "explore", "-w", str(ws), "--color", "n_words",
                  "--brush", str(x0), str(x1), str(y0), str(y1))
    inside = frame[frame.x.between(x0, x1) & frame.y.between(y0, y1)]
    assert sorted(d["brushed"].sample_id) == sorted(inside.sample_id) and len(inside) > 50
    assert f"{len(inside):,} samples brushed" in text
    assert d["color_pick"].value == "n_words" and "n_words" in d["scores"]
    assert "No map yet" not in text and "warn" not in text


@pytest.mark.slow
def test_explore_explains_bad_input(ws: Path, embedded: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    text, d = run(monkeypatch, "explore", "-w", str(embedded))
    assert "No map yet" in text and "frame" not in d
    text, d = run(monkeypatch, "explore", "-w", str(tmp_path / "nowhere"))
    assert "Cannot open the workspace" in text and "is not a workspace" in text
    changed = tmp_path / "changed"
    shutil.copytree(ws, changed)
    ingest([str(make_pool(tmp_path / "more", 20, seed=99))], changed, progress=False)
    frame = load_points(Workspace.open(changed), "default")
    x0, y0 = float(frame.x.max()) + 0.05, float(frame.y.max()) + 0.05  # in the margin
    text, d = run(monkeypatch, "explore", "-w", str(changed), "--color", "nope", "--brush",
                  str(x0), str(x0 + 0.01), str(y0), str(y0 + 0.01))
    assert "No column nope to colour by in this workspace" in text
    assert d["color_pick"].value == "cluster"
    assert "the samples changed since map" in text and "no embeddings yet" in text
    assert "Choose box or lasso on the map" in text and d["brushed"].empty


@pytest.mark.slow
def test_headless_export(ws: Path, tmp_path: Path) -> None:
    """The way a user runs a notebook headless: `marimo export html NB -o OUT -- -w DIR`
    (non-zero on any cell error). explore.py runs in a separate process in the browser
    test; here sql.py, with a query that fails to show it is caught as a message."""
    out = tmp_path / "sql.html"
    queries = tmp_path / "sql"
    queries.mkdir()
    (queries / "broken.sql").write_text("-- Fails: no such table.\nSELECT * FROM nowhere;\n")
    r = subprocess.run([*MARIMO, "export", "html", str(NOTEBOOKS / "sql.py"), "-o", str(out),
                        "--", "-w", str(ws), "--sql-dir", str(queries)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    page = plain(out.read_text())
    assert "The query failed" in page and "nowhere" in page


def test_sql_notebook(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, d = run(monkeypatch, "sql", "-w", str(ws))
    assert "map_default" in text and "embeddings_tiny_clip" in text
    assert "errors_by_source" in d["queries"]
    assert d["longest"].height == 20 and "caption" in d["longest"].columns
    assert "The query failed" not in text


@pytest.mark.slow
def test_loop_notebook_runs_every_step(embedded: Path, pool: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    w = tmp_path / "ws"
    shutil.copytree(embedded, w)
    text, d = run(monkeypatch, "loop", "-w", str(w), "--source", str(pool), "--passes",
                  "text_stats", "--rule", "top n_words 0.5", "--steps", "3", "--heldout-n",
                  "64", "--export", str(tmp_path / "export"), "--run-all")
    assert "failed." not in text
    assert d["ingested"].already_present == d["ingested"].inputs  # resumed: nothing new
    wsp = Workspace.open(w)
    assert read_json(wsp.map_files("default").json)["points"] == 559
    kept = load_selection(wsp, "notebook")
    assert len(kept) == d["selected"].kept > 0
    assert d["evaluated"][0]["name"] == "notebook"
    sizes = json.loads((tmp_path / "export" / "sizes.json").read_text())
    assert sum(sizes.values()) == len(kept)




@pytest.mark.slow
def test_sql_notebook_runs_every_named_query(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each named query, picked with the form's defaults (the first selection, the phrase
    for similar_to_text), gives the rows ``curate sql``'s function gives."""
    mod = notebook("sql")
    select(ws, "clean", [("where", {"expr": "n_words > 3"}), ("dedup", {"by": "n_words"})],
           overwrite=True)
    for name in named_queries(Workspace.open(ws)):
        monkeypatch.setattr(sys, "argv", ["sql.py", "-w", str(ws), "--query", name,
                                          "--text", "a red circle"])
        _, d = mod.app.run()
        params = {f.name: f.default for f in d["query_form"].fields}
        want = run_sql(ws, name, params, text="a red circle" if d["query_form"].phrase
                       else None)
        assert d["result"] is not None, name
        assert d["result"].equals(pl.from_arrow(want)), name


def test_save_as_the_notebooks_save(ws: Path, tmp_path: Path) -> None:
    """The call both explore notebooks make (a Workspace, not a path: the issue's TypeError),
    the ids written as given, an existing name refused with a message, not an exception."""
    w = tmp_path / "ws"
    shutil.copytree(ws, w)
    wsp = Workspace.open(w)
    frame = load_points(wsp, "default")
    ids = frame["sample_id"][frame.x < frame.x.median()].tolist()
    kind, text = save(wsp, "left", ids, "default", None)
    assert kind == "success" and f"Saved **{len(ids):,}** samples" in text
    assert load_selection(wsp, "left") == ids
    kind, text = save(wsp, "left", ids[:3], "default", None)
    assert kind == "danger" and "Not saved" in text and load_selection(wsp, "left") == ids
    kind, text = save(wsp, "lefter", ids[:3], "default", None, rule='"n_words" BETWEEN 1 AND 9')
    steps = read_json(wsp.selection("lefter").json)["rules"]
    assert kind == "success" and steps[0]["params"]["where"] == '"n_words" BETWEEN 1 AND 9'
    assert save(wsp, "empty", [], "default", None)[0] == "danger"


def test_columns_offered_and_cards(ws: Path) -> None:
    """Colours and histograms leave out ids, hashes, paths, times and constant columns; the
    cards sort (missing last) and page as pandas does, reading captions from the workspace."""
    wsp = Workspace.open(ws)
    con = catalog(wsp)
    frame = load_points(wsp, "default", colour_columns(con)[1:], con)
    cols = useful_columns(frame)
    for bad in ("sample_id", "image_hash", "orig_key", "meta", "ingested_at", "image_path"):
        assert bad not in cols
    assert "n_words" in cols and cols[0] == "cluster"
    assert all(frame[c].nunique(dropna=False) > 1 for c in cols)
    assert "status" not in cols or frame["status"].nunique() > 1
    grid = cards(wsp, frame, "n_words", True, 1, 10, ["n_words"])
    want = frame.sort_values("n_words", ascending=False, kind="stable").iloc[10:20]
    assert [r["sample_id"] for r in grid.rows] == want["sample_id"].tolist()
    assert grid.pages == -(-len(frame) // 10) and grid.total == len(frame)
    truth = dict(duckdb.connect().execute(
        "SELECT sample_id, caption FROM read_parquet($g)",
        {"g": str(wsp.samples_dir) + "/part-*.parquet"}).fetchall())
    assert all(r["caption"] == truth[r["sample_id"]] for r in grid.rows)
    html = grid._repr_html_()
    assert html.count('class="curate-card"') == 10 and "page 2 of" in html
    box = {"type": "box", "x": [float(frame.x.min()), float(frame.x.median())],
           "y": [float(frame.y.min()), float(frame.y.max())]}
    assert inside(frame, box).sum() == (frame.x <= frame.x.median()).sum()
    tri = {"type": "lasso", "vertices": [[-1e3, -1e3], [1e3, -1e3], [0, 1e3]]}
    assert inside(frame, tri).all()


@pytest.mark.slow
def test_explore_ipynb_under_nbclient(ws: Path, tmp_path: Path) -> None:
    """explore.ipynb top to bottom under nbclient, its parameters cell given the workspace,
    a box, a phrase and a selection name: the widget, the histograms and the search's card
    grid render, and the selection
    holds exactly the map's points inside the box."""
    from nbclient import NotebookClient

    w = tmp_path / "ws"
    shutil.copytree(ws, w)
    frame = load_points(Workspace.open(w), "default")
    box = [float(frame.x.min()), float(frame.x.quantile(0.5)), float(frame.y.min()),
           float(frame.y.max())]
    nb = nbformat.read(NOTEBOOKS / "explore.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source += f"\nworkspace = {str(w)!r}\nbrush = {box}\nsave_as = 'nb'\n" \
        "phrase = 'a red circle'\n"
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in mimes and "image/png" in mimes
    grids = [o["data"]["text/html"] for o in outputs if "curate-card" in
             o.get("data", {}).get("text/html", "")]
    assert len(grids) == 1 and grids[0].count('class="curate-card"') == 24  # search results
    x, y = frame.x.to_numpy(), frame.y.to_numpy()
    want = frame["sample_id"][(x >= box[0]) & (x <= box[1]) & (y >= box[2]) & (y <= box[3])]
    assert sorted(load_selection(Workspace.open(w), "nb")) == sorted(want) and len(want) > 50
    assert np.any([f"Saved **{len(want):,}** samples" in o.get("text", "") for o in outputs])


def _run_ipynb(name: str, **params: object) -> list[dict]:
    """Notebook ``name`` top to bottom under nbclient with ``params`` appended to its
    parameters cell (as papermill injects them); every code cell's outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    cells[0].source += "\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _shown(outputs: list[dict]) -> str:
    return "\n".join(o.get("text", "") + o.get("data", {}).get("text/html", "")
                     + o.get("data", {}).get("text/plain", "") for o in outputs)


@pytest.mark.slow
def test_sql_ipynb_under_nbclient(ws: Path, tmp_path: Path) -> None:
    """sql.ipynb top to bottom under nbclient: a named query with a phrase and its form's
    defaults returns what ``curate sql`` returns (with thumbnails), the SQL box runs a
    reading statement; a second run shows a writing statement refused in one line and no
    error output in either."""
    from curate.sql.notebook import form

    w = tmp_path / "ws"
    shutil.copytree(ws, w)
    want = run_sql(w, "similar_to_text", text="a red circle")
    outputs = _run_ipynb("sql.ipynb", workspace=str(w), query="similar_to_text",
                         phrase="a red circle", sql="SELECT count(*) AS n FROM samples")
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = _shown(outputs)
    assert f"similar_to_text: {want.num_rows:,} rows" in text and want.num_rows > 0
    assert text.count("data:image/jpeg;base64,") == min(want.num_rows, 50)
    n = pl.read_parquet(w / "samples" / "*.parquet").height
    assert "your SQL: 1 rows" in text and f"<td>{n}</td>" in text
    assert "application/vnd.jupyter.widget-view+json" in {
        m for o in outputs for m in o.get("data", {})}

    con = duckdb.connect()
    Workspace.open(w).build_views(con)
    defaults = {f.name: f.default for f in form(Workspace.open(w), con, "worst_aligned").fields}
    want = run_sql(w, "worst_aligned", {k: v for k, v in defaults.items() if v})
    target = tmp_path / "written.csv"
    outputs = _run_ipynb("sql.ipynb", workspace=str(w), query="worst_aligned",
                         sql=f"COPY (SELECT * FROM samples) TO '{target}'")
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = _shown(outputs)
    assert f"worst_aligned: {want.num_rows:,} rows" in text
    assert "The SQL failed." in text and not target.exists()


@pytest.mark.slow
def test_loop_ipynb_runs_every_step_under_nbclient(embedded: Path, pool: Path,
                                                   tmp_path: Path) -> None:
    """loop.ipynb with ``run_all``: every step's summary in the page, no error output, and
    what the steps wrote is what the library's functions write (the map's points, the
    selection, the evaluation, the export's sizes)."""
    w = tmp_path / "ws"
    shutil.copytree(embedded, w)
    out = tmp_path / "export"
    outputs = _run_ipynb("loop.ipynb", workspace=str(w), sources=[str(pool)],
                         passes=["text_stats"], rules="top n_words 0.5", steps=3,
                         heldout_n=64, export_to=str(out), run_all=True)
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = _shown(outputs)
    assert "failed." not in text
    wsp = Workspace.open(w)
    assert read_json(wsp.map_files("default").json)["points"] == 559
    assert "map default: 559 points" in text and "image/png" in {
        m for o in outputs for m in o.get("data", {})}
    kept = load_selection(wsp, "notebook")
    assert f"selection notebook: {len(kept)} of" in text and len(kept) > 0
    assert "notebook" in text and list((w / "evaluations").glob("*"))
    sizes = json.loads((out / "sizes.json").read_text())
    assert sum(sizes.values()) == len(kept)
    # the workspace panel, as `curate info` prints it, after the last step
    assert f"notebook: {len(kept)} of 559 (top)" in text and "scores/text_stats: 559 rows" in text
