"""Selection rules: one contract and the registry, plus where, top (DataComp's threshold
semantics) and random. dedup and semdedup (Abbas et al. 2023) live in ``dedup``, coreset
(ClipCov, Joshi et al. 2024) in ``coreset``, ids (the samples a file of ids names) in
``ids``, the per-image caption rules (best-caption, mix) in ``captions``; formulas and
pitfalls: algorithms.md 1.3 and 3.

A rule is a function ``(step, params) -> (kept ids, info)`` plus its frozen parameter
dataclass: it takes the candidates (``step.ids``, in rank order) and returns those it keeps, in
rank order, and what it measured for the manifest; every sample it does not keep gets a reason
in ``step.drop``. To add one, write the two and add a ``Rule`` to ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import CurateError
from curate.params import Amount, make
from curate.select.captions import (
    BestCaptionParams,
    MixParams,
    best_caption,
    mix,
    where_per_image,
)
from curate.select.coreset import CoresetParams, coreset
from curate.select.dedup import DedupParams, SemdedupParams, dedup, semdedup
from curate.select.ids import IdsParams, ids
from curate.select.step import Step

Kept = tuple[list[str] | pa.Array, dict[str, Any]]  # (kept ids in rank order, manifest info)


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One selection rule: its name, parameter dataclass, function, the parameters the CLI
    takes by position (``top COLUMN AMOUNT``) and a line for help."""

    name: str
    params: type
    apply: Callable[[Step, Any], Kept]
    positional: tuple[str, ...] = ()
    description: str = ""

    def make_params(self, given: dict[str, Any] | None) -> Any:
        """The rule's parameters from keyword values (CLI strings coerced); a wrong name or
        value is one CurateError line naming the valid parameters."""
        return make(self.params, given, f"rule {self.name!r}")


@dataclass(frozen=True)
class WhereParams:
    """Parameters of ``where``: the condition and the values of its ``$name`` placeholders."""

    expr: str  # a SQL boolean expression over the ``pairs`` view
    params: dict[str, Any] = field(default_factory=dict)  # bound by DuckDB as ``$name``
    per: str | None = None  # "image": keep every caption of an image one caption passes

    def __post_init__(self) -> None:
        if ";" in self.expr:
            raise CurateError(f"expr {self.expr!r}: give one boolean expression, no ';'")
        if self.per not in (None, "image"):
            raise CurateError(f"where per={self.per!r}: only per=image")


def where(step: Step, p: WhereParams) -> Kept:
    """Keep candidates for which ``p.expr`` over ``pairs`` is true (null is not true); its
    ``$name`` parameters are bound by DuckDB, never formatted into the SQL. ``per=image``
    keeps every candidate caption of an image for which it holds for at least one."""
    kept = step.query(f"SELECT c.sample_id FROM cand c JOIN pairs p USING (sample_id) "
                      f"WHERE ({p.expr}) ORDER BY c.pos", p.params)["sample_id"]
    if p.per == "image":
        kept = where_per_image(step, kept.to_pylist())
    what = f"where {p.expr}" + (" per image" if p.per else "")
    step.drop_rest(kept, f"where: not ({p.expr})" + (" for any caption of its image"
                                                      if p.per else ""))
    step.reason = what
    return kept, {"note": what}


@dataclass(frozen=True)
class TopParams:
    """Parameters of ``top``: the score column, how many to keep, and an optional grouping."""

    column: str
    amount: Amount  # a fraction keeps the scores above DataComp's cut, a count that many
    per: str | None = None  # apply within each value of this column (e.g. a cluster id)


def top(step: Step, p: TopParams) -> Kept:
    """DataComp's ``--fraction``: keep scores >= the value at index int(N*f) of the descending
    sort of the N non-null scores (int(N*f)+1 samples plus ties); a count keeps exactly that
    many. ``per`` applies it within each value of another column."""
    v = step.values(p.column)
    per = PER.get(p.per or "", p.per)
    groups = np.zeros(len(v), np.int64) if per is None else _codes(step, per)
    keep = np.zeros(len(v), bool)
    thresholds = {}
    for g in np.unique(groups):
        idx = np.flatnonzero((groups == g) & ~np.isnan(v))
        if not len(idx):
            continue
        order = idx[np.argsort(-v[idx], kind="stable")]
        if not p.amount.is_fraction:
            keep[order[: p.amount.of(len(idx), "top")]] = True
        else:
            t = v[order[min(int(len(idx) * p.amount.value), len(idx) - 1)]]
            keep[idx[v[idx] >= t]] = True
            thresholds[str(g)] = float(t)
    null = np.isnan(v)
    step.drop_at(null, f"top: {p.column} is null")
    below = ~keep & ~null
    step.drop_at(below, step.format(v[below], f"top: {p.column} = {{}} below the cut"))
    at = np.flatnonzero(keep)[np.argsort(-v[keep], kind="stable")]
    step.kept_reasons = step.format(v[at], f"top {p.column} = {{}}")
    return step.id_array.take(pa.array(at)), {
        "thresholds": thresholds,
        "note": f"top {p.amount} by {p.column}" + (f" per {p.per}" if p.per else "")}


PER = {"image": "image_id"}  # ``per=image``: within each image's captions


def _codes(step: Step, col: str) -> np.ndarray:
    """Per candidate, a group code of its ``col`` value (null is a group of its own)."""
    t = step.query(f'SELECT p."{col}"::VARCHAR AS g FROM cand c LEFT JOIN pairs p '
                   "USING (sample_id) ORDER BY c.pos")
    codes = pc.dictionary_encode(t["g"].combine_chunks(), null_encoding="encode").indices
    return codes.to_numpy().astype(np.int64)


@dataclass(frozen=True)
class RandomParams:
    """Parameters of ``random``: how many to draw and the seed."""

    amount: Amount = Amount(0.3)
    seed: int = 0


def random(step: Step, p: RandomParams) -> Kept:
    """A seeded uniform sample: the baseline every rule is compared with."""
    k = p.amount.of(len(step), "random")
    pick = np.sort(np.random.default_rng(p.seed).choice(len(step), k, replace=False))
    drawn = np.zeros(len(step), bool)
    drawn[pick] = True
    step.drop_at(~drawn, f"random: not drawn (seed {p.seed})")
    step.reason = f"random {p.amount} seed {p.seed}"
    return step.id_array.take(pa.array(pick)), {"seed": p.seed}


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule(name="where", params=WhereParams, apply=where, positional=("expr",),
         description="where EXPR [per=image]: a SQL condition over the pairs view ($name: "
         "param.name=V)"),
    Rule(name="top", params=TopParams, apply=top, positional=("column", "amount"),
         description="top COLUMN AMOUNT [per=COL|image]: the highest scores (DataComp's "
         "fraction)"),
    Rule(name="best-caption", params=BestCaptionParams, apply=best_caption,
         description="best-caption [by=COL among=SRC,SRC]: per image, the caption with the "
         "highest score"),
    Rule(name="mix", params=MixParams, apply=mix,
         description="mix raw=alt generated=blip2 by=COL threshold=T: per image, the raw "
         "caption if its score >= T, else the generated one (Nguyen et al. 2023)"),
    Rule(name="dedup", params=DedupParams, apply=dedup,
         description="dedup [by=COL stages=exact,perceptual,semantic]: one of each duplicate "
         "group"),
    Rule(name="semdedup", params=SemdedupParams, apply=semdedup,
         description="semdedup [eps=0.01,0.05 use=0.05 keep=hard]: SemDeDup on image "
         "embeddings"),
    Rule(name="coreset", params=CoresetParams, apply=coreset, positional=("amount",),
         description="coreset AMOUNT [k=N]: the ClipCov cross-covariance coreset"),
    Rule(name="random", params=RandomParams, apply=random, positional=("amount",),
         description="random AMOUNT [seed=S]: a seeded uniform sample"),
    Rule(name="ids", params=IdsParams, apply=ids, positional=("file",),
         description="ids FILE [on=uid|sample_id|key|url]: the samples a DataComp subset "
         ".npy, a parquet/csv or a text file of ids names"),
)}


def get(name: str) -> Rule:
    """The rule called ``name``."""
    if name not in RULES:
        raise CurateError(f"unknown rule {name!r}; rules: {', '.join(RULES)}")
    return RULES[name]
