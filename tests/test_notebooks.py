"""The marimo notebooks: lint clean, run headless on the synthetic pool (in-process as scripts,
and once through ``marimo export html``), explain bad input in the page instead of raising,
and render in a real browser (``marimo run`` + headless Chromium over the DevTools protocol).
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html import unescape
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

from curate.files import read_json
from curate.ingest import ingest
from curate.maps import MapParams, load_points, make_map
from curate.passes.score import score
from curate.select import load_selection
from curate.synth import make_pool
from curate.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MARIMO = [sys.executable, "-m", "marimo"]
ERRORS = ("An internal error occurred", "This cell wasn't run because it has errors",
          "Ancestor prevented from running", "Traceback (most recent call last)")


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
    assert "No column nope in this workspace" in text and d["color_pick"].value == "cluster"
    assert "the samples changed since map" in text and "no embeddings yet" in text
    assert "The brush holds no points" in text and d["brushed"].empty


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


# --- in a browser ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


class DevTools:
    """Just enough of the Chrome DevTools protocol: call a method, evaluate JavaScript."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        i = next(self.ids)
        self.sock.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.sock.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def eval(self, js: str) -> object:
        r = self.call("Runtime.evaluate", expression=js, returnByValue=True)
        return r["result"].get("value")


def chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Headless Debian chromium with a DevTools port; (process, its page's websocket URL)."""
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,2000",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    port_file = profile / "DevToolsActivePort"
    end = time.time() + 60
    while not (port_file.exists() and port_file.read_text().count("\n")) and time.time() < end:
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    wait_http(f"http://127.0.0.1:{port}/json/version", 30)
    pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
    return proc, next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]


MAP_PIXELS = """(() => {
  const el = document.querySelector("marimo-matplotlib");
  const c = el && el.shadowRoot && el.shadowRoot.querySelector("canvas");
  if (!c || !c.width) return 0;
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 60) n++;
  return n;
})()"""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started, by its id
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_explore_in_a_browser(ws: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium here (apt-get install -y chromium)")
    from websockets.sync.client import connect

    port = free_port()
    log = tmp_path / "marimo.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*MARIMO, "run", str(NOTEBOOKS / "explore.py"), "--headless", "--host",
             "127.0.0.1", "--port", str(port), "--no-token", "--", "-w", str(ws)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    browser = None
    try:
        wait_http(f"http://127.0.0.1:{port}/", 90)
        browser, url = chromium(tmp_path / "profile")
        with connect(url, max_size=None, open_timeout=30) as sock:
            page = DevTools(sock)
            page.call("Page.enable")
            page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            end, coloured = time.time() + 150, 0
            while time.time() < end and coloured < 500:
                time.sleep(1)
                coloured = page.eval(MAP_PIXELS) or 0
            time.sleep(1)
            shot = page.call("Page.captureScreenshot", format="png",
                             captureBeyondViewport=True)
            (tmp_path / "explore.png").write_bytes(base64.b64decode(shot["data"]))
            text = page.eval("document.body.innerText") or ""
    finally:
        for p in (browser, server):
            if p is not None:
                stop(p)
    assert coloured >= 500, f"the map never rendered; screenshot {tmp_path / 'explore.png'}"
    assert "559 points" in text and "Explore a map" in text
    shown = [e for e in ERRORS if e in text]
    assert not shown, f"the page shows {shown}; screenshot {tmp_path / 'explore.png'}"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_export_to_jupyter(tmp_path: Path) -> None:
    """JupyterLab users get the same notebooks through `marimo export ipynb`."""
    out = tmp_path / "explore.ipynb"
    r = subprocess.run([*MARIMO, "export", "ipynb", str(NOTEBOOKS / "explore.py"), "-o",
                        str(out), "--sort", "top-down"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from curate.maps import" in code and "mo.ui.matplotlib" in code
