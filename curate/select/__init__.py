"""``curate select``: named selections built by a chain of rules over the catalog.

A selection is ``selections/NAME.parquet`` (``sample_id``, ``rank``, ``reason``), the samples a
rule chain dropped with the rule, stage, group and representative in
``selections/dropped/NAME.parquet``, and ``selections/NAME.json``, the manifest (rules and
parameters, counts at each step, what each rule measured, the inputs' manifests). A chain starts
from every ok sample or from another selection. Rules over scores never select nulls.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.errors import CurateError
from curate.files import read_json, write_json, write_parquet
from curate.select.rules import RULES, Step
from curate.workspace import Workspace

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class SelectReport:
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


def selection_path(ws: Workspace, name: str) -> Path:
    return ws.root / "selections" / f"{name}.parquet"


def load_selection(ws: Workspace, name: str) -> list[str]:
    """The sample ids of a selection, in rank order."""
    path = selection_path(ws, name)
    if not path.exists():
        have = sorted(p.stem for p in (ws.root / "selections").glob("*.parquet"))
        raise CurateError(f"no selection {name!r} in {ws.root} (have: {', '.join(have) or 'none'})")
    t = pq.read_table(path, columns=["sample_id", "rank"]).sort_by("rank")
    return t["sample_id"].to_pylist()


def _ok_samples(ws: Workspace) -> list[str]:
    ids: list[str] = []
    for part in ws.sample_parts():
        t = pq.read_table(part, columns=["sample_id", "status"])
        ids += t.filter(pa.compute.equal(t["status"], "ok"))["sample_id"].to_pylist()
    return ids


def select(workspace: str | Path, name: str, rules: list[tuple[str, dict[str, Any]]],
           start: str | None = None, overwrite: bool = False,
           progress: Callable[[str], None] | None = None) -> SelectReport:
    """Apply ``rules`` in order to every ok sample (or to selection ``start``) and write
    selection ``name``. Each rule is ``(rule name, parameters)``; see ``select_rules``."""
    t0 = time.time()
    ws = Workspace.open(workspace)
    if not NAME.match(name):
        raise CurateError(f"selection name {name!r}: use letters, digits, '_', '-', '.'")
    if selection_path(ws, name).exists() and not overwrite:
        raise CurateError(f"selection {name!r} exists; pick another name or pass --force")
    if not rules:
        raise CurateError("give at least one rule (where, top, dedup, semdedup, coreset, "
                          "random)")
    for rule, _ in rules:
        if rule not in RULES:
            raise CurateError(f"unknown rule {rule!r}; rules: {', '.join(RULES)}")
    ids = load_selection(ws, start) if start else _ok_samples(ws)
    report = SelectReport(name, len(ids), 0)
    dropped: list[dict] = []
    reasons = {i: "" for i in ids}
    with ws.connect(read_only=True) as con:
        for rule, params in rules:
            step = Step(ws, con, ids)
            kept, info = RULES[rule](step, **params)
            kept_set = set(kept)
            for row in step.dropped:
                row.setdefault("rule", rule)
            dropped += step.dropped
            missing = [i for i in ids if i not in kept_set and i not in step.dropped_ids]
            dropped += [{"sample_id": i, "rule": rule, "reason": f"{rule}: not kept"}
                        for i in missing]
            for i in kept:
                reasons[i] = (reasons[i] + "; " if reasons[i] else "") + step.reason_for(i)
            report.steps.append({"rule": rule, "params": params, "in": len(ids),
                                 "out": len(kept), **info})
            if progress:
                progress(f"{rule}: {len(ids)} -> {len(kept)}")
            ids = kept
            if not ids:
                raise CurateError(f"rule {rule} keeps no samples, so selection {name!r} would "
                                  "be empty; nothing written")
    report.kept = len(ids)
    _write(ws, name, ids, reasons, dropped, report, start)
    report.seconds = time.time() - t0
    return report


def _write(ws: Workspace, name: str, ids: list[str], reasons: dict[str, str],
           dropped: list[dict], report: SelectReport, start: str | None) -> None:
    cols = ("sample_id", "rule", "stage", "reason", "group_id", "representative")
    write_parquet(pa.table({c: pa.array([d.get(c) for d in dropped], pa.string())
                            for c in cols}), ws.root / "selections" / "dropped" / f"{name}.parquet")
    inputs = {}
    for kind in ("scores", "embeddings"):
        for d in ws.pass_dirs(kind):
            m = read_json(d / "manifest.json")
            inputs[f"{kind}/{d.name}"] = {k: m.get(k) for k in ("pass", "params", "rows",
                                                                 "updated_at")}
    write_json({"name": name, "start": start, "rules": report.steps, "candidates":
                report.candidates, "kept": len(ids), "curate_version": __version__,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "inputs": inputs}, ws.root / "selections" / f"{name}.json")
    write_parquet(pa.table({"sample_id": pa.array(ids, pa.string()),
                            "rank": pa.array(range(len(ids)), pa.int64()),
                            "reason": pa.array([reasons[i] for i in ids], pa.string())}),
                  selection_path(ws, name))
    ws.refresh()


POSITIONAL = {"where": ["expr"], "top": ["column", "amount_"], "random": ["amount_"],
              "coreset": ["amount_"], "dedup": [], "semdedup": []}


def parse_rules(tokens: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """CLI rule chain: ``where EXPR``, ``top COLUMN AMOUNT [per=COL]``, ``random AMOUNT
    [seed=S]``, ``dedup [by=COL] [stages=exact,perceptual]``, ``semdedup [eps=0.01,0.05]
    [use=0.05]``, ``coreset AMOUNT [k=N]``; ``k=v`` options follow their rule and a ``$name``
    parameter of ``where`` is given as ``param.name=value``."""
    rules: list[tuple[str, dict[str, Any]]] = []
    for tok in tokens:
        if tok in POSITIONAL:
            rules.append((tok, {}))
            continue
        if not rules:
            raise CurateError(f"expected a rule ({', '.join(POSITIONAL)}), got {tok!r}")
        rule, params = rules[-1]
        key, eq, value = tok.partition("=")
        if eq and key.startswith("param."):
            params.setdefault("params", {})[key[6:]] = value
        elif eq and key.isidentifier() and rule != "where":
            params[key] = _number(value)
        else:
            free = [p for p in POSITIONAL[rule] if p not in params]
            if not free:
                raise CurateError(f"{rule}: unexpected argument {tok!r}")
            params[free[0]] = tok
    for rule, params in rules:
        missing = [p.rstrip("_") for p in POSITIONAL[rule] if p not in params]
        if rule in ("where", "top") and missing:
            raise CurateError(f"{rule}: missing {', '.join(missing)}")
    return rules


def _number(value: str) -> Any:
    """An option value as int or float when it looks like one (else the string)."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?(\d+\.\d*|\.\d+)(e-?\d+)?", value):
        return float(value)
    return value


def list_selections(ws: Workspace) -> list[dict]:
    """Every selection with its size and rule chain, for ``curate info``."""
    out = []
    for m in sorted((ws.root / "selections").glob("*.json")):
        d = read_json(m)
        out.append({"name": d["name"], "kept": d["kept"], "candidates": d["candidates"],
                    "rules": " -> ".join(s["rule"] for s in d["rules"]), "start": d["start"]})
    return out
