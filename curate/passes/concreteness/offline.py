"""The ``offline`` backend: word norms plus cues of web captions that describe no picture.

No weights are fitted to anything. The score starts from the word norms (Brysbaert
concreteness and Lancaster visual strength of the content words, each mapped to 0..1 and
averaged, shrunk towards 0.5 by one pseudo-word so that a caption with one rated word is not
trusted like one with ten). On that 0..1 scale a typical descriptive caption sits near 0.7 and
a typical abstract one near 0.45, a gap of about a quarter. Cues then move it by round amounts
in units of that gap:

- strong cue (0.2, about the whole gap): a URL/file name/markup, a shop or web listing, an
  imperative opener ("buy ..."), a question, how-to or listicle, a headline in Title Case;
- weak cue (0.1, about half of it): first or second person, an opinion word, modals and
  conditionals, past-tense narration, negation, numbers and codes, unrated words (names,
  jargon, other languages), more than one sentence, length (from 20 words, full at 40);
- depiction cue (+0.1): "photo of"/"view of"/"isolated on"..., an opening article or count
  ("a ...", "two ..."), a posture or action participle ("sitting", "holding").

The sum is squashed by a logistic of slope 4 around 0.5, which keeps the order and maps the
usual range of sums onto about (0.1, 0.9).
"""

from __future__ import annotations

import math

import curate.passes.concreteness.lexicons as lx
from curate.passes.concreteness.norms import compound, mean, rate
from curate.passes.concreteness.tokens import Tokens, clean, tokenize

NAN = math.nan
PRIOR, PSEUDO = 0.5, 1.0  # the norms' scale midpoint, worth one rated word

# cue -> weight; each cue's value lies in [0, 1] (see features()).
WEIGHTS: dict[str, float] = {
    "web": -0.2, "commerce": -0.2, "imperative": -0.2, "question": -0.2, "title_case": -0.2,
    "first_person": -0.1, "second_person": -0.1, "opinion": -0.1, "irrealis": -0.1,
    "narrative": -0.1, "negation": -0.1, "numbers": -0.1, "unrated": -0.1,
    "sentences": -0.1, "length": -0.1,
    "depiction": 0.1, "article": 0.1, "posture": 0.1,
}


def norm_evidence(toks: Tokens) -> tuple[float, float, int]:
    """(norm score in 0..1 shrunk to the prior, coverage of content words, content words)."""
    words = toks.words
    conc: list[float] = []
    vis: list[float] = []
    content = rated = 0
    i = 0
    while i < len(words):
        w = words[i]
        if len(w) < 2 or w in lx.STOPWORDS or w.endswith("n't"):
            i += 1
            continue
        nxt = words[i + 1] if i + 1 < len(words) else ""
        pair = compound(w, nxt) if nxt else None
        if pair is not None:  # a rated compound ("ice cream") counts as one word
            c, v = pair, mean([rate(w)[1], rate(nxt)[1]])
            i += 2
        else:
            c, v = rate(w)
            i += 1
        content += 1
        rated += c is not None or v is not None
        if c is not None:
            conc.append((c - 1) / 4)
        if v is not None:
            vis.append(v / 5)
    parts = [sum(x) / len(x) for x in (conc, vis) if x]
    score = sum(parts) / len(parts) if parts else PRIOR
    shrunk = (rated * score + PSEUDO * PRIOR) / (rated + PSEUDO)
    return shrunk, rated / content if content else 0.0, content


def features(text: str, toks: Tokens, coverage: float, content: int) -> dict[str, float]:
    """Each cue of ``WEIGHTS`` as a value in [0, 1]."""
    words, first = toks.words, toks.words[0] if toks.words else ""
    bag = set(words)
    n_commerce = sum(w in lx.COMMERCE_WEB for w in words)
    n_opinion = sum(w in lx.OPINION for w in words)
    caps = [t[0].isupper() for t in toks.cased[1:]]
    depiction = bool(bag & lx.DEPICTION_WORDS) or any(
        a in lx.DEPICTION_HEADS and b == "of" for a, b in zip(words, words[1:], strict=False))
    return {
        "web": float(toks.web),
        "commerce": min(1.0, (n_commerce + 2 * toks.price) / 2),
        "imperative": float(first in lx.IMPERATIVE or first == "let's"),
        "question": float(first in lx.QUESTION_OPENERS or "?" in text
                          or bool(bag & lx.LISTICLE)),
        "title_case": sum(caps) / len(caps) if caps and toks.has_lower else 0.0,
        "first_person": float(bool(bag & lx.FIRST_PERSON)),
        "second_person": float(bool(bag & lx.SECOND_PERSON)),
        "opinion": min(1.0, n_opinion / 2),
        "irrealis": float(bool(bag & lx.IRREALIS)),
        "narrative": float(bool(bag & lx.NARRATIVE)),
        "negation": float(bool(bag & lx.NEGATION) or any(w.endswith("n't") for w in words)),
        "numbers": min(1.0, toks.numbers / 2),
        "unrated": 1.0 - coverage if content else 0.0,
        "sentences": float(toks.sentences > 1),
        "length": min(1.0, max(0, len(words) - 20) / 20),  # 0 up to 20 words, 1 from 40
        "depiction": float(depiction),
        "article": float(first in lx.ARTICLE_OPENERS),
        "posture": float(bool(bag & lx.POSTURE)),
    }


def explain(text: object) -> dict[str, float] | str:
    """The norm evidence and each cue's contribution to the raw sum (before the squash), or
    the reason a caption is not scored."""
    s = clean(text)
    if not s:
        return "empty"
    toks = tokenize(s)
    if not toks.words and not toks.numbers and not toks.web:
        return "no_words"  # punctuation, symbols or emoji only
    base, coverage, content = norm_evidence(toks)
    cues = features(s, toks, coverage, content)
    return {"norms": base, "coverage": coverage,
            **{k: WEIGHTS[k] * v for k, v in cues.items() if v}}


def score_one(text: object) -> tuple[float, float, str | None]:
    """(score in (0, 1), coverage, reason): score is NaN exactly when reason says why."""
    got = explain(text)
    if isinstance(got, str):
        return NAN, 0.0, got
    raw = sum(v for k, v in got.items() if k != "coverage")
    return 1 / (1 + math.exp(-4 * (raw - 0.5))), got["coverage"], None
