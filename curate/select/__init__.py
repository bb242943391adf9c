"""``curate select``: named selections built by a chain of rules over the catalog.

A chain starts from every ok sample or from another selection; each rule (``rules.RULES``:
where, top, dedup, semdedup, coreset, random) keeps some of the candidates and records why it
dropped the others. Rules over scores never select nulls. The files a selection is made of, and
the only code that writes and reads them, are in ``store``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.integrity import require_complete
from curate.lock import writes
from curate.params import as_dict
from curate.select.rules import RULES, Rule, get
from curate.select.step import Step, drop_table, id_array
from curate.select.store import (
    SelectReport,
    check_free,
    list_selections,
    load_selection,
    selection_ids,
    write_selection,
)
from curate.workspace import Workspace

__all__ = ["RULES", "Rule", "SelectReport", "list_selections", "load_selection", "parse_rules",
           "select", "write_selection"]


def _ok_samples(ws: Workspace) -> pa.Array:
    chunks = []
    for part in ws.sample_parts():
        t = pq.read_table(part, columns=["sample_id", "status"])
        chunks.append(t.filter(pc.equal(t["status"], "ok"))["sample_id"].combine_chunks())
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


def _append(prior: pa.Array, reason: pa.Array) -> pa.Array:
    """Each kept sample's reasons so far with this rule's appended, joined by "; "."""
    joined = pc.binary_join_element_wise(prior, reason, "; ")
    return pc.if_else(pc.equal(prior, ""), reason, joined)


@writes("select")
def select(workspace: str | Path, name: str, rules: list[tuple[str, dict[str, Any]]],
           start: str | None = None, overwrite: bool = False,
           progress: Callable[[str], None] | None = None,
           allow_partial: bool = False) -> SelectReport:
    """Apply ``rules`` in order to every ok sample (or to selection ``start``) and write
    selection ``name``. Each rule is ``(rule name, parameters)``, the parameters by the field
    names of the rule's parameter dataclass (``rules.RULES``); all are checked before any
    runs. A pass the catalog joins that is incomplete (a killed run, a deleted part) is
    refused in one line naming the command that resumes it, unless ``allow_partial``; the
    workspace's writer lock is held throughout (``curate.lock``)."""
    t0 = time.time()
    ws = Workspace.open(workspace)
    check_free(ws, name, overwrite)
    if not rules:
        raise CurateError(f"give at least one rule ({', '.join(RULES)})")
    ws.require_samples()
    partial = require_complete(ws, "select", allow_partial)
    chain: list[tuple[Rule, Any]] = []
    for rule_name, given in rules:
        rule = get(rule_name)
        chain.append((rule, rule.make_params(given)))
    ids = id_array(selection_ids(ws, start) if start else _ok_samples(ws))
    report = SelectReport(name, len(ids), 0)
    dropped: list[pa.Table] = []
    reasons = pa.array(np.full(len(ids), "", dtype=object), pa.string())
    with ws.connect(read_only=True) as con:
        for rule, params in chain:
            step = Step(ws, con, ids)
            kept_ids, info = rule.apply(step, params)
            kept = id_array(kept_ids)
            drops = step.dropped(rule.name)
            # a candidate the rule neither kept nor gave a reason is logged, never lost
            unseen = ~step.kept_mask(kept) & ~step.kept_mask(drops["sample_id"])
            dropped += [drops, drop_table({"sample_id": ids.filter(pa.array(unseen)),
                                           "rule": rule.name,
                                           "reason": f"{rule.name}: not kept"},
                                          int(unseen.sum()))]
            prior = reasons.take(pc.index_in(kept, value_set=ids))
            reasons = _append(prior, step.kept_reason_array(kept))
            report.steps.append({"rule": rule.name, "params": as_dict(params),
                                 "in": len(ids), "out": len(kept), **info})
            if progress:
                progress(f"{rule.name}: {len(ids)} -> {len(kept)}")
            ids = kept
            if not len(ids):
                raise CurateError(f"rule {rule.name} keeps no samples, so selection {name!r} "
                                  "would be empty; nothing written")
    report.kept = len(ids)
    if partial:
        report.steps[0]["partial_inputs"] = [f"{h.kind}/{h.key}" for h in partial]
    write_selection(ws, name, ids, reasons, pa.concat_tables(dropped), report, start)
    report.seconds = time.time() - t0
    return report


def parse_rules(tokens: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """CLI rule chain: ``where EXPR``, ``top COLUMN AMOUNT [per=COL]``, ``random AMOUNT
    [seed=S]``, ``dedup [by=COL] [stages=exact,perceptual]``, ``semdedup [eps=0.01,0.05]
    [use=0.05]``, ``coreset AMOUNT [k=N]``; ``k=v`` options follow their rule (any field of
    its parameters) and a ``$name`` parameter of ``where`` is given as ``param.name=value``.
    Values stay strings (each rule's parameters coerce them); every rule's parameters are
    checked here, so a wrong one fails before a workspace is read."""
    rules: list[tuple[str, dict[str, Any]]] = []
    for tok in tokens:
        if tok in RULES:
            rules.append((tok, {}))
            continue
        if not rules:
            raise CurateError(f"expected a rule ({', '.join(RULES)}), got {tok!r}")
        rule, params = rules[-1]
        key, eq, value = tok.partition("=")
        if eq and key.startswith("param."):
            params.setdefault("params", {})[key[6:]] = value
        elif eq and key.isidentifier() and (rule != "where"
                                            or (key == "per" and "expr" in params)):
            params[key] = value
        else:
            free = [p for p in RULES[rule].positional if p not in params]
            if not free:
                raise CurateError(f"{rule}: unexpected argument {tok!r}")
            params[free[0]] = tok
    for rule, params in rules:
        RULES[rule].make_params(params)
    return rules
