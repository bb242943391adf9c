"""HPSv2 / v2.1 (algorithms.md 4.2): ``hps = cos(E_I(v), E_T(c))`` of L2-normalized open_clip
features, no logit scale; the HPS benchmark reports ``100 * cos``. The checkpoint is a
``{'state_dict': ...}`` file in open_clip key format, loaded as ``ARCH@/path`` through curate's
own loading path, and its embeddings are stored once like any model's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from curate.arrays import cosine
from curate.errors import CurateError
from curate.passes import Inputs, embeddings_input
from curate.passes.embed import embed
from curate.workspace import Workspace

NOT_COMPARABLE = ("HPS v2.0 and v2.1 scores are not comparable with each other "
                  "(tgxs002/HPSv2 README); compare only scores from the same checkpoint")


def model_name(p: Any) -> str:
    """The curate model name of the checkpoint: ``ARCH@/path/to/checkpoint``."""
    return f"{p.arch}@{p.checkpoint}"


def _version(path: Path) -> str:
    """v2.0 or v2.1 from the released file names (HPS_v2_compressed.pt, HPS_v2.1_...)."""
    if "v2.1" in path.name:
        return "v2.1"
    return "v2.0" if re.search(r"HPS_v2(_|\.p)", path.name) else "unknown"


def check(p: Any) -> Path:
    """The checkpoint file, or a CurateError telling where to get it."""
    path = Path(p.checkpoint).expanduser() if p.checkpoint else None
    if path is not None and path.is_file():
        return path
    why = "no checkpoint given" if path is None else f"{path} does not exist"
    raise CurateError(f"backend 'hps' needs an HPSv2 checkpoint ({why}): download "
                      "HPS_v2.1_compressed.pt (or HPS_v2_compressed.pt for v2.0) from the "
                      "Hugging Face repo xswu/HPSv2 and pass --param checkpoint=/path/to/"
                      "HPS_v2.1_compressed.pt (with --param arch=ViT-H-14, the default)")


def prepare(ws: Workspace, p: Any) -> tuple[None, dict]:
    """Embed images and captions with the checkpoint (nothing already stored is redone; the
    runner refuses embeddings of another file once at this path)."""
    path = check(p)
    done = embed(ws.root, model_name(p), progress=False).manifest
    model = done["model"]
    return None, {"backend": "hps", "model": model, "weights_sha256": done["weights_sha256"],
                  "checkpoint": {"path": str(path.resolve()), "sha256": model["weights_sha256"],
                                 "hps_version": _version(path)},
                  "comparability": NOT_COMPARABLE,
                  "preprocess": "upstream open_clip val transform (the HPSv2 fork's ToTensor "
                                "before Resize differs slightly), fp32 on CPU",
                  "scale": "reward_raw = cos of L2-normalized image and caption features (no "
                           "logit scale); reward = 100 * cos (HPS benchmark scale)"}


def inputs(p: Any) -> Inputs:
    return {embeddings_input(model_name(p)): {"image_emb": "image", "text_emb": "text"}}


def compute(batch: dict[str, Any], p: Any, state: Any) -> dict[str, np.ndarray]:
    """``reward_raw = cos``, ``reward = 100 * cos`` (algorithms.md 4.2)."""
    cos = cosine(batch["image"], batch["text"])
    return {"reward": np.float32(100.0) * cos, "reward_raw": cos}
