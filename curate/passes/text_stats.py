"""Caption statistics: length in characters, words and CLIP BPE tokens, truncation at the
77-token context, and language-agnostic junk signals (URLs, file names, prices, HTML)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from curate.passes import Batch, Pass, register

URL = re.compile(r"(https?://|www\.)\S+|\b\S+\.(com|net|org|io|co|de|uk|ru|jp|cn)\b", re.I)
FILENAME = re.compile(r"\b[\w-]+\.(jpe?g|png|gif|webp|bmp|tiff?|pdf|mp4|html?)\b"
                      r"|\b(IMG|DSC|DSCN|DCIM|PXL|Screenshot)[_ -]?\d+", re.I)
PRICE = re.compile(r"[$€£¥₹]\s?\d|\d+([.,]\d\d)?\s?(€|£|usd|eur|gbp|rs\.?)(?!\w)", re.I)
HTML = re.compile(r"<[a-z/][^>]*>|&(amp|nbsp|quot|lt|gt|#\d+);", re.I)


@dataclass(frozen=True)
class Params:
    context_length: int = 77


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer()


def n_tokens(text: str) -> int:
    """CLIP BPE tokens including the start and end tokens, before any truncation."""
    return len(_tokenizer().encode(text)) + 2


def compute(batch: Batch, p: Params, state: Any) -> dict[str, Any]:
    caps = [c or "" for c in batch["caption"]]
    tokens = np.array([n_tokens(c) for c in caps])
    flags = {name: np.array([bool(rx.search(c)) for c in caps]) for name, rx in
             (("has_url", URL), ("has_filename", FILENAME), ("has_price", PRICE),
              ("has_html", HTML))}
    return {"n_chars": np.array([len(c) for c in caps]),
            "n_words": np.array([len(c.split()) for c in caps]),
            "n_tokens": tokens, "truncated": tokens > p.context_length, **flags,
            "junk": np.logical_or.reduce(list(flags.values()))}


register(Pass(name="text_stats", params=Params,
              columns=("n_chars", "n_words", "n_tokens", "truncated", "has_url", "has_filename",
                       "has_price", "has_html", "junk"),
              compute=compute, inputs=lambda p: {"samples": {"caption": "caption"}},
              description="caption length (chars, words, CLIP tokens), truncation at 77, "
                          "junk signals"))
