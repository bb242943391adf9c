"""The ``icc`` backend: the distilled ICC model (Yanuka et al., 2024) through ``transformers``.

``AutoModelForSequenceClassification`` with one regression output; the score is the first logit
(about 0 for abstract captions to about 1 for concrete ones). Weights are read from a local
folder or from the local Hugging Face cache of a hub name; this module never downloads, so a
machine without them fails at once with what to fetch instead of hanging on retries.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.passes.concreteness.tokens import clean

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
NEEDED = ("config.json, model.safetensors (or pytorch_model.bin) and the tokenizer files "
          "(tokenizer.json or vocab files, tokenizer_config.json)")
INSTALL = "pip install 'curate[icc]'"


@dataclass(frozen=True)
class IccModel:
    tokenizer: Any
    model: Any
    max_length: int
    folder: str


def _missing(name: str, why: str) -> CurateError:
    return CurateError(
        f"ICC weights not found: {why}. The model needs {NEEDED}; fetch them on a machine "
        f"with network, e.g. `huggingface-cli download moranyanuka/icc --local-dir DIR`, and "
        f"pass --param icc_model=DIR (given: {name!r})")


def resolve(name: str) -> str:
    """The local folder holding the model's files; CurateError when there is none."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() or not any(
                (path / f).is_file() for f in WEIGHT_FILES):
            raise _missing(name, f"{path} lacks config.json or the weight file")
        return str(path)
    if path.exists() or not HUB_NAME.match(name) or name.startswith((".", "~")):
        raise _missing(name, f"{path} is not a model folder")
    try:  # a hub name: the local cache only
        from huggingface_hub import snapshot_download
        folder = snapshot_download(name, local_files_only=True)
    except ImportError:
        raise _missing(name, f"{name} is not a folder and huggingface_hub is not "
                             f"installed ({INSTALL})") from None
    except Exception:  # noqa: BLE001 - any cache miss or hub error: one clear message
        raise _missing(name, f"{name} is not a folder nor in the local Hugging Face "
                             "cache") from None
    return resolve(folder)


@lru_cache(maxsize=2)
def load(name: str) -> IccModel:
    """Tokenizer and model from ``name`` (a folder or a cached hub name), in eval mode."""
    folder = resolve(name)  # before importing transformers: a wrong path fails fast
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise CurateError(f"backend=icc needs transformers: {INSTALL}") from None
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CurateError(f"cannot load the ICC model from {folder}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    limits = [getattr(tok, "model_max_length", None),
              getattr(model.config, "max_position_embeddings", None), 512]
    return IccModel(tok, model, min(int(v) for v in limits if v and v > 0), folder)


def score(m: IccModel, texts: list[object], batch_size: int = 64
          ) -> tuple[np.ndarray, list[str | None]]:
    """(first logit per caption, reason): NaN with reason "empty" for blank captions; long
    captions are truncated to the model's context."""
    import torch

    caps = [clean(t) for t in texts]
    out = np.full(len(caps), math.nan)
    todo = sorted((i for i, c in enumerate(caps) if c), key=lambda i: len(caps[i]))
    device = next(m.model.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(todo), batch_size):
            idx = todo[s:s + batch_size]
            enc = m.tokenizer([caps[i] for i in idx], padding=True, truncation=True,
                              max_length=m.max_length, return_tensors="pt").to(device)
            logits = m.model(**enc).logits
            out[idx] = logits[:, 0].float().cpu().numpy()
    return out, [None if c else "empty" for c in caps]
