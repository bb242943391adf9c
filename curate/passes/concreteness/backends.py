"""Caption concreteness: how much a caption describes something one could see.

Text only, so it complements image-text alignment: a caption can be true of its image and still
abstract ("feeling grateful for new beginnings"). Three backends:

- ``offline`` (default): word norms plus cues of non-descriptive web captions; no weights to
  download, pure Python, thousands of captions a second (see ``offline.py``).
- ``lexical``: mean Brysbaert concreteness of the rated content words, 1..5 (``lexical.py``).
- ``icc``: the distilled ICC model through ``transformers`` (``icc.py``; ``curate[icc]``).

Every backend returns, per caption, a score (higher = more concrete), the coverage (share of
content words the norms rate; NaN for ``icc``) and a reason that is None when scored and says
why when the score is NaN ("empty", "no_words", "no_content_words", "no_rated_words").
Nothing here raises on odd captions: empty, punctuation, URLs, emoji, huge or non-English text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.errors import CurateError

BACKENDS = ("offline", "lexical", "icc")
DEFAULT_ICC = "moranyanuka/icc"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise CurateError(f"unknown concreteness backend {backend!r}; choose one of "
                          f"{', '.join(BACKENDS)}")
    return backend


def prepare(backend: str, icc_model: str = DEFAULT_ICC) -> Any:
    """What scoring needs, loaded once: the ICC model, or the word norms (parsed and cached)."""
    check_backend(backend)
    if backend == "icc":
        import curate.passes.concreteness.icc as icc
        return icc.load(icc_model)
    import curate.passes.concreteness.norms as norms
    return norms.load()


def score_texts(texts: Sequence[object], backend: str = "offline", state: Any = None,
                icc_model: str = DEFAULT_ICC) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """(scores, coverage, reasons) for ``texts``; ``state`` from ``prepare`` (made if None)."""
    state = prepare(backend, icc_model) if state is None else state
    if backend == "icc":
        import curate.passes.concreteness.icc as icc
        scores, reasons = icc.score(state, list(texts))
        return scores, np.full(len(scores), math.nan), reasons
    if backend == "lexical":
        from curate.passes.concreteness.lexical import score_one
    else:
        from curate.passes.concreteness.offline import score_one
    rows = [score_one(t) for t in texts]
    return (np.array([r[0] for r in rows], np.float64), np.array([r[1] for r in rows],
            np.float64), [r[2] for r in rows])


def concreteness(texts: Sequence[object] | str, backend: str = "offline",
                 icc_model: str = DEFAULT_ICC) -> np.ndarray:
    """Concreteness of each caption in ``texts`` (higher = more concrete; NaN where a caption
    has nothing to score). A single string is scored as a list of one."""
    check_backend(backend)
    if isinstance(texts, str):
        texts = [texts]
    return score_texts(list(texts), backend, icc_model=icc_model)[0]


__all__ = ["BACKENDS", "concreteness", "prepare", "score_texts"]
