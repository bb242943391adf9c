"""Driving the notebooks as a user does: a server (``marimo run`` or ``jupyter lab``) on
127.0.0.1 in its own process group, Debian's chromium driven by Playwright (never a downloaded
browser), and the map widget's gestures (a box dragged on its canvas, and that box read back
in clip space through the plot's own view scales)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # WebGL without a GPU
# what a notebook page shows when a cell failed (marimo and JupyterLab)
ERRORS = ("An internal error occurred", "This cell wasn't run because it has errors",
          "Ancestor prevented from running", "Traceback (most recent call last)")


def need_chromium() -> None:
    """Skip without chromium, except in CI, where its absence is a failure."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI (.ci/run installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): "
                               f"{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> None:
    """End the process group this test started (by its id)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextmanager
def server(cmd: list[str], url: str, log: Path, cwd: Path = ROOT,
           timeout: float = 120) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` (a server bound to 127.0.0.1) until ``url`` answers; stop it after."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
    try:
        wait_http(url, timeout, proc, log)
        yield proc
    finally:
        stop(proc)


@contextmanager
def marimo(notebook: str, *args: str, log: Path) -> Iterator[str]:
    """``marimo run notebooks/NOTEBOOK --headless -- ARGS`` on a free port; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with server([sys.executable, "-m", "marimo", "run", str(ROOT / "notebooks" / notebook),
                 "--headless", "--host", "127.0.0.1", "--port", str(port), "--no-token",
                 "--", *args], url, log):
        yield url


@contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A Playwright page in headless Debian chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = b.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            b.close()


def drag_box(page: object, scope: object, fx: tuple[float, float],
             fy: tuple[float, float]) -> list[float]:
    """Choose the widget's box tool and drag a box over fractions ``fx``, ``fy`` of its
    canvas; the box in clip space ``[x0, x1, y0, y1]`` as the plot's view scales read it."""
    scope.locator("button[data-mode=box]").first.click()
    canvas = scope.locator(".cmw-main canvas").first
    canvas.scroll_into_view_if_needed()
    b, end = None, time.time() + 30
    while time.time() < end:  # the page still laying out moves the canvas under the drag
        time.sleep(0.5)
        now = canvas.bounding_box()
        if now == b:
            break
        b = now
    x0, y0 = b["x"] + b["width"] * fx[0], b["y"] + b["height"] * fy[0]
    x1, y1 = b["x"] + b["width"] * fx[1], b["y"] + b["height"] * fy[1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    time.sleep(0.05)  # the plot starts its rectangle at the first move after a short delay
    page.mouse.move(x0 + 0.5, y0 + 0.5)
    time.sleep(0.05)
    for t in np.linspace(0, 1, 24)[1:]:
        page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
        time.sleep(0.03)
    page.mouse.up()
    assert canvas.bounding_box() == b, "the canvas moved while the box was dragged"
    return canvas.evaluate("""(c, r) => {
        const p = c.closest('.cmw').parentElement.curatePlot;
        const xs = p.get('xScale'), ys = p.get('yScale');
        const [ya, yb] = [ys.invert(r[1]), ys.invert(r[3])];
        return [xs.invert(r[0]), xs.invert(r[2]), Math.min(ya, yb), Math.max(ya, yb)];
    }""", [x0 - b["x"], y0 - b["y"], x1 - b["x"], y1 - b["y"]]) + [b["width"] * (fx[1] - fx[0])]


def in_box(xy: np.ndarray, box: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(inside, near an edge) per point of clip-space positions ``xy`` (n x 2) for a box
    from ``drag_box`` (its last item: the box's width in pixels): a point within a pixel
    of the edge may fall either way."""
    x, y = xy[:, 0], xy[:, 1]
    x0, x1, y0, y1, width_px = box
    px = (x1 - x0) / width_px
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    edge = ((np.abs(x - x0) < px) | (np.abs(x - x1) < px) | (np.abs(y - y0) < px)
            | (np.abs(y - y1) < px))
    return inside, edge


def pick(page: object, label: str, value: str, timeout: float = 60) -> None:
    """Choose ``value`` in the dropdown whose label starts with ``label`` (waiting for it to
    render)."""
    end = time.time() + timeout
    while time.time() < end:
        for sel in page.locator("select").all():
            if sel.evaluate("(e, l) => e.parentElement.innerText.trim().startsWith(l)", label):
                sel.select_option(value)
                return
        time.sleep(0.5)
    raise AssertionError(f"no dropdown labelled {label!r} on the page")
