# ruff: noqa: B018, F841  (marimo: a cell shows its last expression; SQL cells name results)
import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="curate: the whole loop")

with app.setup:
    import argparse
    import contextlib
    import io
    import os
    import shlex
    import sys
    import time
    from pathlib import Path

    import marimo as mo
    import matplotlib.pyplot as plt

    from curate import passes
    from curate.errors import CurateError
    from curate.workspace import Workspace

    class PageProgress(io.TextIOBase):
        """stderr for a step: the progress lines the CLI prints (tqdm's samples/s and ETA,
        evaluate's steps) shown in the page as the step runs, the latest line of each bar."""

        def __init__(self, title: str) -> None:
            self.title, self.lines, self.t0, self.shown = title, {}, time.time(), 0.0

        def write(self, s: str) -> int:
            for part in s.replace("\r", "\n").split("\n"):
                part = part.strip()
                if part:  # a bar's line replaces that bar's last (keyed by its description)
                    self.lines[part.split(":")[0][:40]] = part
            if time.time() - self.shown > 0.5:
                self.show()
            return len(s)

        def show(self) -> None:
            self.shown = time.time()
            body = "\n".join(list(self.lines.values())[-6:]) or "starting"
            mo.output.replace(mo.vstack([
                mo.md(f"**{self.title}** running ({time.time() - self.t0:.0f} s)"),
                mo.md(f"```\n{body}\n```")]))


@app.function
def cli_args() -> argparse.Namespace:
    """`marimo run notebooks/loop.py -- -w DIR [--source POOL ...] [--run-all]`"""
    ap = argparse.ArgumentParser(prog="loop.py")
    ap.add_argument("-w", "--workspace", default=os.environ.get("CURATE_WORKSPACE", "workspace"),
                    help="workspace (default: $CURATE_WORKSPACE or ./workspace)")
    ap.add_argument("--source", nargs="*", default=[], help="shards, tables or folders")
    ap.add_argument("--model", default="tiny-clip")
    ap.add_argument("--passes", default=None, help="comma-separated (default: every pass)")
    ap.add_argument("--rule", default="top clip_score 0.5", help="`curate select` rules")
    ap.add_argument("--selection", default="notebook")
    ap.add_argument("--steps", type=int, default=300, help="proxy training steps")
    ap.add_argument("--heldout-n", type=int, default=1000, help="held-out pairs to measure on")
    ap.add_argument("--export", default=None, help="export folder (default: WS-export/NAME)")
    ap.add_argument("--run-all", action="store_true",
                    help="run every step without pressing its button (headless runs)")
    return ap.parse_known_args(sys.argv[1:])[0]


@app.function
def run_step(title: str, fn: object) -> tuple[object, object]:
    """(result, output to show): the step's progress in the page while ``fn`` runs (as the
    CLI shows it on a terminal); a user error as a callout."""
    out = PageProgress(title)
    try:
        with contextlib.redirect_stderr(out):
            out.show()
            result = fn()
    except CurateError as e:
        return None, mo.callout(mo.md(f"**{title} failed.** {e}"), kind="danger")
    finally:
        mo.output.clear()
    return result, None


@app.function
def shown(text: str) -> object:
    return mo.md(f"```\n{text}\n```")


@app.cell(hide_code=True)
def _():
    mo.md("""
    # The whole loop
    ingest → embed → score → map → select → evaluate → export, one button per step. Each
    step resumes: pressing it again only does the work that is missing.
    """)
    return


@app.cell
def _():
    args = cli_args()
    ws_path = mo.ui.text(value=args.workspace, label="workspace", full_width=True)
    sources = mo.ui.text(value=" ".join(args.source), label="sources (space-separated)",
                         full_width=True)
    model = mo.ui.text(value=args.model, label="embedding model")
    run_all = args.run_all
    mo.vstack([ws_path, sources, model])
    return args, model, run_all, sources, ws_path


@app.cell
def _():
    ingest_btn = mo.ui.run_button(label="Run ingest")
    ingest_btn
    return (ingest_btn,)


@app.cell
def _(ingest_btn, run_all, sources, ws_path):
    ingested = None
    _out = mo.md("Press **Run ingest** to add the sources' pairs to the workspace.")
    if (ingest_btn.value or run_all) and sources.value.strip():
        from curate.ingest import ingest
        ingested, _err = run_step("ingest", lambda: ingest(shlex.split(sources.value),
                                                           ws_path.value))
        _out = _err or shown(ingested.summary())
    elif ingest_btn.value or run_all:
        _out = mo.callout(mo.md("Give at least one source to ingest."), kind="warn")
    _out
    return (ingested,)


@app.cell
def _():
    embed_btn = mo.ui.run_button(label="Run embed")
    embed_btn
    return (embed_btn,)


@app.cell
def _(embed_btn, ingested, model, run_all, ws_path):
    embedded = None
    _out = mo.md("Press **Run embed** to compute image and text embeddings (once per model).")
    if embed_btn.value or run_all:
        from curate.passes.embed import embed
        embedded, _err = run_step("embed", lambda: embed(ws_path.value, model.value))
        _out = _err or shown(embedded.summary())
    _out
    return (embedded,)


@app.cell
def _(args):
    _names = [p.name for p in passes.list_passes()]
    _want = args.passes.split(",") if args.passes else _names
    pass_pick = mo.ui.multiselect(_names, value=[n for n in _want if n in _names],
                                  label="passes")
    score_btn = mo.ui.run_button(label="Run scoring")
    mo.hstack([pass_pick, score_btn], justify="start")
    return pass_pick, score_btn


@app.cell
def _(embedded, pass_pick, run_all, score_btn, ws_path):
    scored = None
    _out = mo.md("Press **Run scoring** to run the chosen passes.")
    if score_btn.value or run_all:
        from curate.passes.score import score
        _lines = []
        for _name in pass_pick.value:
            _rep, _err = run_step(f"score {_name}", lambda n=_name: score(ws_path.value, n))
            _lines.append(_rep.summary() if _rep else
                          f"{_name}: skipped (its weights or inputs are missing here)")
        scored = _lines
        _out = shown("\n".join(_lines) or "(no passes chosen)")
    _out
    return (scored,)


@app.cell
def _():
    map_kind = mo.ui.dropdown(["image", "text", "joint"], value="image", label="embedding")
    map_sample = mo.ui.number(start=100, stop=1_000_000, value=20000, label="UMAP sample")
    map_btn = mo.ui.run_button(label="Make the map")
    mo.hstack([map_kind, map_sample, map_btn], justify="start")
    return map_btn, map_kind, map_sample


@app.cell
def _(map_btn, map_kind, map_sample, model, run_all, scored, ws_path):
    from curate.maps import MapParams, check_map, list_maps, load_points, make_map
    from curate.maps.render import figure

    mapped = None
    _out = mo.md("Press **Make the map** to lay out every sample (UMAP) and cluster them.")
    _ws = Workspace(Path(ws_path.value).expanduser().resolve())
    _fresh = "default" in list_maps(_ws) and check_map(_ws, "default") is None
    if map_btn.value or (run_all and not _fresh):
        mapped, _err = run_step("map", lambda: make_map(
            ws_path.value, "default", map_kind.value, model.value,
            MapParams(sample=int(map_sample.value))))
        _out = _err
    elif run_all:
        mapped = {"name": "default", "up_to_date": True}
    if mapped:
        _frame = load_points(_ws, "default")
        _fig, _ = figure(_frame, "cluster", size=480)
        plt.close(_fig)
        _out = mo.vstack([mo.md(f"Map `default`: {len(_frame):,} points"
                                + (" (already up to date)" if "up_to_date" in mapped else "")
                                + ". Explore it in `notebooks/explore.py`."), _fig])
    _out
    return (mapped,)


@app.cell
def _(args):
    rule = mo.ui.text(value=args.rule, label="rules", full_width=True)
    sel_name = mo.ui.text(value=args.selection, label="selection name")
    select_btn = mo.ui.run_button(label="Run select")
    mo.vstack([rule, mo.hstack([sel_name, select_btn], justify="start")])
    return rule, sel_name, select_btn


@app.cell
def _(mapped, rule, run_all, sel_name, select_btn, ws_path):
    selected = None
    _out = mo.md("Press **Run select** to write the selection (replacing one of that name).")
    if select_btn.value or run_all:
        from curate.select import parse_rules, select
        selected, _err = run_step("select", lambda: select(
            ws_path.value, sel_name.value, parse_rules(shlex.split(rule.value)),
            overwrite=True))
        _out = _err or shown(selected.summary())
    _out
    return (selected,)


@app.cell
def _(args):
    steps = mo.ui.number(start=1, stop=100_000, value=args.steps, label="training steps")
    eval_btn = mo.ui.run_button(label="Run evaluate")
    mo.hstack([steps, eval_btn], justify="start")
    return eval_btn, steps


@app.cell
def _(args, eval_btn, run_all, sel_name, selected, steps, ws_path):
    evaluated = None
    _out = mo.md("Press **Run evaluate** to train a proxy CLIP on the selection and measure "
                 "zero-shot accuracy and retrieval on held-out pairs.")
    if (eval_btn.value or run_all) and selected is not None:
        from curate.evaluate import evaluate, format_table
        evaluated, _err = run_step("evaluate", lambda: evaluate(
            ws_path.value, [sel_name.value], steps=int(steps.value), heldout_n=args.heldout_n))
        _out = _err or shown(format_table(evaluated))
    elif eval_btn.value or run_all:
        _out = mo.callout(mo.md("Run **select** first."), kind="warn")
    _out
    return (evaluated,)


@app.cell
def _(args, sel_name, ws_path):
    _default = args.export or str(Path(ws_path.value).expanduser().resolve().parent
                                  / f"{Path(ws_path.value).name}-export" / sel_name.value)
    export_to = mo.ui.text(value=_default, label="export to", full_width=True)
    export_btn = mo.ui.run_button(label="Run export")
    mo.vstack([export_to, export_btn])
    return export_btn, export_to


@app.cell
def _(evaluated, export_btn, export_to, run_all, sel_name, selected, ws_path):
    exported = None
    _out = mo.md("Press **Run export** to write the selection as webdataset shards.")
    if (export_btn.value or run_all) and selected is not None:
        from curate.cli import main as _cli
        _rc, _ = run_step("export", lambda: _cli(["export", "-w", ws_path.value,
                                                   sel_name.value, export_to.value]))
        exported = _rc == 0
        _out = mo.callout(mo.md(f"Exported to `{export_to.value}`."), kind="success") \
            if exported else mo.callout(mo.md(f"**Export failed** (exit {_rc})."),
                                        kind="danger")
    elif export_btn.value or run_all:
        _out = mo.callout(mo.md("Run **select** first."), kind="warn")
    _out
    return (exported,)


@app.cell
def _(embedded, evaluated, exported, ingested, mapped, scored, selected, ws_path):
    from curate.info import format_info, info

    # refreshed after every step: the steps' results are this cell's inputs
    _after = (ingested, embedded, scored, mapped, selected, evaluated, exported)
    try:
        _text = format_info(info(ws_path.value))
    except CurateError as e:
        _text = str(e)
    mo.vstack([mo.md("## Workspace"), shown(_text)])
    return


if __name__ == "__main__":
    app.run()
