"""Caption concreteness (ICC paper, Yanuka et al. 2024): does the caption describe something
visible, or is it true but abstract? Text only, so it complements alignment scores.

``backend``: ``offline`` (default; word norms plus cues of non-descriptive web captions, no
downloads), ``lexical`` (mean Brysbaert concreteness, 1..5) or ``icc`` (the distilled ICC model,
``curate[icc]``; ``icc_model`` is a local folder or a hub name already in the local cache).
Columns: ``concreteness`` (higher = more concrete), ``concreteness_coverage`` (share of content
words the norms rate; null for icc) and ``concreteness_reason`` (null when scored; why not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curate.passes import Batch, Pass, register
from curate.passes.concreteness.backends import (
    BACKENDS,
    DEFAULT_ICC,
    check_backend,
    prepare,
    score_texts,
)
from curate.workspace import Workspace


@dataclass(frozen=True)
class Params:
    backend: str = "offline"
    icc_model: str = DEFAULT_ICC

    def __post_init__(self) -> None:
        check_backend(self.backend)  # an unknown backend fails before any work


def _prepare(ws: Workspace, p: Params) -> tuple[Any, dict]:
    state = prepare(p.backend, p.icc_model)
    if p.backend == "icc":
        from curate.models import folder_weights
        return state, {"model": p.icc_model, "model_folder": state.folder,
                       "weights_sha256": folder_weights(state.folder)}
    return state, {"norms": state.source}


def compute(batch: Batch, p: Params, state: Any) -> dict[str, Any]:
    scores, coverage, reasons = score_texts(batch["caption"], p.backend, state)
    return {"concreteness": scores, "concreteness_coverage": coverage,
            "concreteness_reason": reasons}


register(Pass(name="concreteness", params=Params,
              columns=("concreteness", "concreteness_coverage", "concreteness_reason"),
              compute=compute, inputs=lambda p: {"samples": {"caption": "caption"}},
              prepare=_prepare,
              description=f"caption concreteness, text only (backends: {', '.join(BACKENDS)})"))
