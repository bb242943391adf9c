"""Verbs that choose and judge subsets: ``select`` and ``evaluate``."""

from __future__ import annotations

import argparse
import sys

from curate.cli.declare import ALLOW_PARTIAL, WORKSPACE, Lib, Verb, arg
from curate.errors import CurateError


def _select(a: argparse.Namespace) -> None:
    from curate.select import parse_rules, select
    rules = list(a.rules)
    partial = a.allow_partial or "--allow-partial" in rules
    rules = [r for r in rules if r != "--allow-partial"]
    rules, start, force = own_options(rules, a.start, a.force)
    print(select(a.workspace, a.name, parse_rules(rules), start, force,
                 progress=lambda m: print(m, file=sys.stderr),
                 allow_partial=partial).summary())


def own_options(rules: list[str], start: str | None, force: bool
                ) -> tuple[list[str], str | None, bool]:
    """Fish ``--force`` and ``--from X`` out of the rule chain: options given after NAME land
    there (argparse hands everything after NAME to the chain)."""
    while "--force" in rules:
        rules.remove("--force")
        force = True
    if "--from" in rules[:-1]:
        i = rules.index("--from")
        start = rules[i + 1]
        del rules[i:i + 2]
    return rules, start, force


def _evaluate(a: argparse.Namespace) -> None:
    from curate.evaluate import evaluate, format_table
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()] if a.seeds else None
    except ValueError:
        raise CurateError(f"--seeds {a.seeds!r}: give integers such as 0,1,2") from None
    print(format_table(evaluate(a.workspace, a.selections, steps=a.steps,
                                batch_size=a.batch_size, seed=a.seed, heldout=a.heldout,
                                heldout_n=a.heldout_n, seeds=seeds)))


EVALUATE = "curate.evaluate:evaluate"

VERBS = (
    Verb("select", "write a named selection from a chain of rules", _select, (
        WORKSPACE,
        arg("name", help="selection name"),
        arg("--from", dest="start", help="start from this selection"),
        arg("--force", action="store_true", help="replace an existing selection"),
        ALLOW_PARTIAL,
        arg("rules", nargs=argparse.REMAINDER, help="rule chain"),
    ), description="Rules: where EXPR | top COLUMN AMOUNT [per=COL] | random AMOUNT [seed=S] | "
       "dedup [by=COL stages=exact,perceptual,semantic] | semdedup [eps=0.01,0.05 use=0.05 "
       "keep=hard] | coreset AMOUNT [k=N] | ids FILE [on=uid|sample_id|key|url]. AMOUNT is a "
       "fraction (0.3) or a count (1000); FILE a DataComp subset .npy, a table or a text file."),
    Verb("evaluate", "train a proxy CLIP on each selection; report zero-shot accuracy and "
         "retrieval R@1 on a held-out set", _evaluate, (
             WORKSPACE,
             arg("selections", nargs="+", metavar="SELECTION", help="selection names"),
             arg("--steps", type=int, default=Lib(EVALUATE, "steps"), help="training steps"),
             arg("--batch-size", type=int, default=Lib(EVALUATE, "batch_size"),
                 help="training batch size"),
             arg("--seed", type=int, default=Lib(EVALUATE, "seed"), help="training seed"),
             arg("--seeds", help="several training seeds, comma-separated (0,1,2): each "
                 "selection is trained once per seed and reported as mean ± sd"),
             arg("--heldout", help="held-out workspace (default: clean synthetic pairs)"),
             arg("--heldout-n", type=int, default=Lib(EVALUATE, "heldout_n"),
                 help="held-out pairs"),
         )),
)
