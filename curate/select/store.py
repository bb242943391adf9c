"""Selection files: the only code that writes, reads and lists them (paths from
``Workspace.selection``). A selection is ``selections/NAME.parquet`` (``sample_id``, ``rank``,
``reason``), its drop log ``selections/dropped/NAME.parquet`` (``sample_id``, ``rule``,
``stage``, ``reason``, ``group_id``, ``representative``) and its manifest
``selections/NAME.json`` (the rules with their parameters by name, the counts at each step, what
each rule measured, the inputs' manifests). The three files are replaced together
(``Workspace.replace_together``): a reader, or a run after a kill, sees the old selection or
the new one, never a mix.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.errors import CurateError
from curate.files import read_json
from curate.select.step import DROPPED, Ids, drop_table, id_array
from curate.workspace import Selection, Workspace


@dataclass
class SelectReport:
    """What a rule chain did: candidates, kept, and one manifest entry per step."""

    name: str
    candidates: int
    kept: int
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"selection {self.name}: {self.kept} of {self.candidates} samples kept "
                 f"({self.seconds:.1f}s)"]
        lines += [f"  {s['rule']:<9} {s['in']:>8} -> {s['out']:<8} {s.get('note', '')}"
                  for s in self.steps]
        return "\n".join(lines)


def check_free(ws: Workspace, name: str, overwrite: bool, hint: str = "pass --force"
               ) -> Selection:
    """The files of a new selection ``name`` (a valid name); one that exists is an error
    unless ``overwrite``."""
    sel = ws.selection(name)
    if sel.parquet.exists() and not overwrite:
        raise CurateError(f"selection {name!r} exists; pick another name or {hint}")
    return sel


def write_selection(ws: Workspace, name: str, ids: Ids, reasons: dict[str, str] | pa.Array,
                    dropped: list[dict] | pa.Table, report: SelectReport, start: str | None
                    ) -> None:
    """Write selection ``name``: ``ids`` in rank order with their ``reasons`` (a dict by id,
    or an array in the order of ``ids``), the ``dropped`` rows (dicts or a table of
    ``DROPPED``'s columns), and a manifest of ``report``'s steps and the workspace's pass
    manifests."""
    ids = id_array(ids)
    if isinstance(reasons, dict):
        reasons = pa.array([reasons[i] for i in ids.to_pylist()], pa.string())
    if not isinstance(dropped, pa.Table):
        dropped = drop_table({c: [d.get(c) for d in dropped] for c in DROPPED}, len(dropped))
    sel = ws.selection(name)
    inputs = {}
    for kind in ("scores", "embeddings"):
        for d in ws.pass_dirs(kind):
            m = ws.manifest(kind, d.name) or {}
            inputs[f"{kind}/{d.name}"] = {k: m.get(k) for k in ("pass", "params", "rows",
                                                                 "updated_at")}
    manifest = {"name": name, "start": start, "rules": report.steps, "candidates":
                report.candidates, "kept": len(ids), "curate_version": __version__,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "inputs": inputs}
    # the three files appear together: a kill leaves the old selection or the new one
    with ws.replace_together(f"selection-{name}", [sel.dropped, sel.json, sel.parquet]
                             ) as (dropped_tmp, json_tmp, ids_tmp):
        pq.write_table(dropped.select(list(DROPPED)), dropped_tmp, compression="zstd")
        json_tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        pq.write_table(pa.table({"sample_id": pa.array(ids, pa.string()),
                                 "rank": pa.array(np.arange(len(ids), dtype=np.int64)),
                                 "reason": reasons}),
                       ids_tmp, compression="zstd")
    ws.refresh()


def selection_ids(ws: Workspace, name: str) -> pa.Array:
    """The sample ids of a selection, in rank order, as an Arrow array."""
    path = ws.selection(name).parquet
    if not path.exists():
        have = ws.selection_names()
        raise CurateError(f"no selection {name!r} in {ws.root} (have: {', '.join(have) or 'none'})")
    t = pq.read_table(path, columns=["sample_id", "rank"]).sort_by("rank")
    return t["sample_id"].combine_chunks()


def load_selection(ws: Workspace, name: str) -> list[str]:
    """The sample ids of a selection, in rank order."""
    return selection_ids(ws, name).to_pylist()


def list_selections(ws: Workspace) -> list[dict]:
    """Every selection with its size and rule chain, for ``curate info``."""
    out = []
    for name in ws.selection_names():
        d = read_json(ws.selection(name).json)
        out.append({"name": d["name"], "kept": d["kept"], "candidates": d["candidates"],
                    "rules": " -> ".join(s["rule"] for s in d["rules"]), "start": d["start"]})
    return out
