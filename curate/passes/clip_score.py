"""CLIPScore (Hessel et al., EMNLP 2021) and the raw cosine (DataComp's convention).

``clip_score = w * max(cos(E_I(v), E_T(prompt + c)), 0)`` with w = 2.5 and the prompt
"A photo depicts " (a trailing space is added if missing, as in jmhessel/clipscore);
``clip_cosine = cos(E_I(v), E_T(c))`` with no prompt and no scaling, as DataComp's
``clip_*_similarity_score`` columns. Both are computed in float32 from stored raw
embeddings; the prompted captions are embedded once and cached like any embedding
(algorithms.md sections 0 and 1.1). Scores from different models are not comparable:
the manifest records the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.arrays import cosine
from curate.passes import Batch, Inputs, Pass, embeddings_input, prompt_input, register
from curate.passes.embed import embed, embed_texts
from curate.workspace import Workspace


@dataclass(frozen=True)
class Params:
    model: str = "tiny-clip"
    prompt: str = "A photo depicts "
    w: float = 2.5


def _prompt(p: Params) -> str:
    return p.prompt if not p.prompt or p.prompt.endswith(" ") else p.prompt + " "


def compute(batch: Batch, p: Params, state: Any) -> dict[str, np.ndarray]:
    cos_prompt = cosine(batch["image"], batch["prompt_text"])
    return {"clip_score": p.w * np.maximum(cos_prompt, 0.0),
            "clip_cosine": cosine(batch["image"], batch["text"])}


def prepare(ws: Workspace, p: Params) -> tuple[None, dict]:
    """Embed what is missing (nothing, when the embeddings are stored) and the prompts."""
    done = embed(ws.root, p.model, progress=False).manifest
    embed_texts(ws.root, p.model, _prompt(p), progress=False)
    return None, {"model": done["model"], "weights_sha256": done["weights_sha256"],
                  "scale": f"clip_score = {p.w} * max(cos, 0) with prompt {_prompt(p)!r}; "
                           "clip_cosine = raw cosine, no prompt"}


def inputs(p: Params) -> Inputs:
    return {embeddings_input(p.model): {"image_emb": "image", "text_emb": "text"},
            prompt_input(p.model, _prompt(p)): {"text_emb": "prompt_text"}}


register(Pass(name="clip_score", params=Params, columns=("clip_score", "clip_cosine"),
              compute=compute, inputs=inputs, prepare=prepare,
              description="CLIPScore 2.5*max(cos,0) with 'A photo depicts ' + raw cosine "
                          "without prompt"))
