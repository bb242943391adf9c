"""Verbs that draw the pool: ``map`` (coordinates and clusters), ``render`` (a PNG) and
``explore`` (the interactive map in the explore notebook)."""

from __future__ import annotations

import argparse

from curate.cli.declare import ALLOW_PARTIAL, WORKSPACE, Lib, Verb, arg


def _map(a: argparse.Namespace) -> None:
    from curate.maps import MapParams, make_map
    from curate.maps.io import summary
    from curate.workspace import Workspace
    m = make_map(a.workspace, name=a.name, embedding=a.embedding, model=a.model,
                 params=MapParams(sample=a.sample, clusters=a.clusters, seed=a.seed),
                 allow_partial=a.allow_partial)
    print(summary(m, Workspace.open(a.workspace)))


def _render(a: argparse.Namespace) -> None:
    from curate.maps import render_map
    color = None if a.color.lower() == "none" else a.color
    print(render_map(a.workspace, a.map, color=color, out=a.out, size=a.size))


def _explore(a: argparse.Namespace) -> int:
    import subprocess

    from curate.maps.widget_notebook import explore_command, shell_line
    cmd = explore_command(a.workspace, a.map)
    if a.print:
        print(shell_line(cmd))
        return 0
    print(f"curate explore: {shell_line(cmd)}", flush=True)
    return subprocess.run(cmd).returncode


MAKE = "curate.maps:make_map"
PARAMS = "curate.maps:MapParams"
RENDER = "curate.maps:render_map"

VERBS = (
    Verb("map", "2-D map of the embeddings (UMAP on a sample, the rest placed by neighbours) "
         "with labelled clusters", _map, (
             WORKSPACE,
             arg("--embedding", choices=("image", "text", "joint"),
                 default=Lib(MAKE, "embedding"), help="which embedding to lay out"),
             arg("--name", default=Lib(MAKE, "name"), help="map name"),
             arg("--model", help="embedding model (default: the only one embedded)"),
             arg("--sample", type=int, default=Lib(PARAMS, "sample"),
                 help="points UMAP is fitted on"),
             arg("--clusters", type=int, default=Lib(PARAMS, "clusters"),
                 help="k-means clusters, 0 to choose automatically"),
             arg("--seed", type=int, default=Lib(PARAMS, "seed"), help="random seed"),
             ALLOW_PARTIAL,
         )),
    Verb("render", "draw a map with datashader into a PNG", _render, (
        WORKSPACE,
        arg("--map", default=Lib(RENDER, "name"), help="map name"),
        arg("--color", default=Lib(RENDER, "color"),
            help="column of `pairs` or `cluster`; `none` for density"),
        arg("-o", "--out", help="PNG path (default: maps/NAME-COLOR.png)"),
        arg("--size", type=int, default=Lib(RENDER, "size"), help="image side in pixels"),
    )),
    Verb("explore", "open the explore notebook (the interactive map) on a workspace under "
         "marimo", _explore, (
             WORKSPACE,
             arg("--map", help="map to open (default: the notebook's first)"),
             arg("--print", action="store_true",
                 help="print the command instead of running it"),
         )),
)
