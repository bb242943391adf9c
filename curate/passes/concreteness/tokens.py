"""Caption tokenisation shared by the lexical and offline scorers: pure, fast, never raises."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from curate.passes.concreteness.lexicons import STOPWORDS
from curate.passes.text_stats import FILENAME, HTML, PRICE, URL

MAX_WORDS = 512  # a caption's first 512 words are scored: bounds time on pathological input
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
# A word: letters of any script with inner apostrophes or hyphens; or a token with a digit.
WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*|\w*\d[\w.,/:-]*")
SENTENCE_END = re.compile(r"[.!?]+\s+(?=[A-Z])")


@dataclass(frozen=True)
class Tokens:
    """One caption, tokenised."""

    words: tuple[str, ...]  # lower-cased word tokens (no numbers), in order
    cased: tuple[str, ...]  # the same tokens with their original case
    numbers: int  # tokens containing a digit (years, prices, sizes, model codes)
    web: bool  # a URL, e-mail address, file name or HTML markup
    price: bool
    sentences: int
    has_lower: bool  # False for ALL-CAPS captions, where case says nothing

    @property
    def content(self) -> list[str]:
        """Content words: not function words, longer than one letter."""
        return [w for w in self.words if len(w) > 1 and w not in STOPWORDS
                and not w.endswith("n't")]


def clean(text: object) -> str:
    """A caption as one normalised line ("" for None or non-strings)."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split())


def tokenize(text: object) -> Tokens:
    s = clean(text)
    web = bool(URL.search(s) or EMAIL.search(s) or FILENAME.search(s) or HTML.search(s))
    price = bool(PRICE.search(s))
    stripped = HTML.sub(" ", EMAIL.sub(" ", URL.sub(" ", s)))
    raw = WORD.findall(stripped)[:MAX_WORDS]
    cased = []
    numbers = 0
    for t in raw:
        if any(c.isdigit() for c in t):
            numbers += 1
            continue
        if t.lower().endswith("'s"):
            t = t[:-2]
        cased.append(t.strip("'-"))
    cased = [t for t in cased if t]
    return Tokens(tuple(t.lower() for t in cased), tuple(cased), numbers, web, price,
                  1 + len(SENTENCE_END.findall(stripped)) if cased else 0,
                  any(c.islower() for c in s))
