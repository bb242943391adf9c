"""ImageReward (algorithms.md 4.4) through the ``ImageReward`` package: BLIP ViT-L + BERT
cross-attention, CLS -> MLP head r; ``reward = (r - 0.16717362830052426) / 1.0333394966054072``
(test-set standardization), ``reward_raw = r``. Loaded with ``ImageReward.load(checkpoint,
med_config=...)`` from ``ImageReward.pt`` and ``med_config.json`` (HF ``THUDM/ImageReward``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.models import weights_sha256
from curate.passes import Inputs
from curate.passes.reward.common import IMAGE_REFS, captions, decode_images, require
from curate.workspace import Workspace

MEAN, STD = 0.16717362830052426, 1.0333394966054072
# image-reward 1.5 imports helpers that transformers 4.57 and 5.x no longer have, and `clip`
# (openai-clip, which imports pkg_resources); the import chain was checked, not a full run
PIP = "pip install image-reward openai-clip 'transformers<4.40' 'setuptools<81'"


def check(p: Any) -> tuple[Path, Path]:
    """(checkpoint, med_config.json beside it), or a CurateError telling where to get them."""
    path = Path(p.checkpoint).expanduser() if p.checkpoint else None
    med = path.with_name("med_config.json") if path is not None else None
    if path is not None and path.is_file() and med is not None and med.is_file():
        return path, med
    why = ("no checkpoint given" if path is None else f"{path} does not exist"
           if not path.is_file() else f"{med} does not exist")
    raise CurateError(f"backend 'imagereward' needs ImageReward.pt with med_config.json beside "
                      f"it ({why}): download both from the Hugging Face repo THUDM/ImageReward "
                      "and pass --param checkpoint=/path/to/ImageReward.pt")


def prepare(ws: Workspace, p: Any) -> tuple[Any, dict]:
    """Load the model once (the package needs the bert-base-uncased tokenizer cached)."""
    rm = require("ImageReward", PIP)
    path, med = check(p)
    try:
        model = rm.load(str(path), device="cpu", med_config=str(med))
    except (OSError, RuntimeError, ValueError) as e:
        raise CurateError(f"could not load ImageReward from {path}: {e}".splitlines()[0]) from e
    sha = weights_sha256(path)
    return model, {"backend": "imagereward",
                   "checkpoint": {"path": str(path.resolve()), "sha256": sha,
                                  "med_config": str(med.resolve())},
                   "weights_sha256": {path.name: sha},
                   "scale": f"reward = (r - {MEAN}) / {STD}, about N(0,1) (ImageReward); "
                            "reward_raw = r, the MLP head's raw output"}


def compute(batch: dict[str, Any], p: Any, state: Any) -> dict[str, np.ndarray]:
    """``reward_raw = r``, ``reward = (r - mean) / std`` (algorithms.md 4.4)."""
    images, texts = decode_images(batch), captions(batch)
    raw = np.full(len(texts), np.nan, np.float64)
    for i, (image, text) in enumerate(zip(images, texts, strict=True)):
        if image is not None:  # model.score returns (r - mean) / std: undo it for r
            raw[i] = float(state.score(text, image)) * STD + MEAN
    return {"reward": (raw - MEAN) / STD, "reward_raw": raw}


def inputs(p: Any) -> Inputs:
    return {"samples": dict(IMAGE_REFS)}
