"""The ``lexical`` backend: mean Brysbaert concreteness of a caption's rated content words.

The classic baseline of the ICC paper's comparison: function words are skipped, inflected forms
fall back to a rated lemma, unrated words are ignored and counted in the coverage. The score is
on the norms' own scale, 1 (abstract) to 5 (concrete).
"""

from __future__ import annotations

import math

from curate.passes.concreteness.norms import rate
from curate.passes.concreteness.tokens import clean, tokenize

NAN = math.nan


def score_one(text: object) -> tuple[float, float, str | None]:
    """(score, coverage, reason): score is NaN exactly when reason says why."""
    if not clean(text):
        return NAN, 0.0, "empty"
    toks = tokenize(text)
    if not toks.words:
        return NAN, 0.0, "no_words"
    content = toks.content
    if not content:
        return NAN, 0.0, "no_content_words"
    rated = [c for c in (rate(w)[0] for w in content) if c is not None]
    coverage = len(rated) / len(content)
    if not rated:
        return NAN, coverage, "no_rated_words"
    return sum(rated) / len(rated), coverage, None
