"""PickScore (algorithms.md 4.3): a transformers CLIP model (``yuvalkirstain/PickScore_v1``)
with its processor (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``) from one local folder;
``reward = exp(logit_scale) * cos(E_T(c), E_I(v))`` of normalized features, captions truncated
at 77 tokens; ``reward_raw = cos``. Needs ``pip install 'curate[rewards]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.models import folder_weights
from curate.passes import Inputs
from curate.passes.reward.common import EXTRA, IMAGE_REFS, captions, decode_images, require
from curate.workspace import Workspace

CHUNK = 32  # pairs per forward pass


def check(p: Any) -> Path:
    """The model folder, or a CurateError telling what it must hold."""
    folder = Path(p.checkpoint).expanduser() if p.checkpoint else None
    if folder is not None and folder.is_dir():
        return folder
    why = "no checkpoint given" if folder is None else f"{folder} is not a folder"
    raise CurateError(f"backend 'pickscore' needs a local folder ({why}) holding the "
                      "transformers model yuvalkirstain/PickScore_v1 and the processor files of "
                      "laion/CLIP-ViT-H-14-laion2B-s32B-b79K; pass --param checkpoint=/path/to/"
                      "folder")


def load(folder: Path) -> tuple[Any, Any]:
    """(model, processor) from ``folder`` with transformers' Auto classes, offline."""
    transformers = require("transformers", EXTRA)
    try:
        model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CurateError(f"could not load a PickScore model and processor from {folder}: "
                          f"{e}".splitlines()[0]) from e
    if not all(hasattr(model, a) for a in ("get_image_features", "get_text_features",
                                           "logit_scale")):
        raise CurateError(f"{folder} holds a {type(model).__name__}, not a CLIP model")
    return model.eval(), processor


def prepare(ws: Workspace, p: Any) -> tuple[tuple[Any, Any], dict]:
    """Load the model once; record the folder, its weights' sha256 and the logit scale."""
    folder = check(p)
    model, processor = load(folder)
    sha = folder_weights(folder)
    scale = float(model.logit_scale.detach().exp())
    return (model, processor), {
        "backend": "pickscore",
        "checkpoint": {"path": str(folder.resolve()), "model_class": type(model).__name__,
                       "sha256": sha}, "weights_sha256": sha,
        "logit_scale_exp": scale, "max_length": 77,
        "scale": f"reward = exp(logit_scale) * cos(text, image) = {scale:.4f} * cos "
                 "(PickScore README); reward_raw = cos"}


def _features(out: Any) -> Any:
    """A projected feature tensor from transformers 4 (a tensor) or 5 (an output object)."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def cosines(model: Any, processor: Any, images: list, texts: list[str]) -> np.ndarray:
    """Row-wise cos of normalized image and text features of aligned pairs."""
    import torch

    with torch.inference_mode():
        pix = processor(images=images, return_tensors="pt")
        tok = processor(text=texts, padding=True, truncation=True, max_length=77,
                        return_tensors="pt")
        img = _features(model.get_image_features(pixel_values=pix["pixel_values"])).float()
        txt = _features(model.get_text_features(input_ids=tok["input_ids"],
                                                attention_mask=tok["attention_mask"])).float()
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (txt * img).sum(-1).numpy().astype(np.float32)


def compute(batch: dict[str, Any], p: Any, state: tuple[Any, Any]) -> dict[str, np.ndarray]:
    """``reward = exp(logit_scale) * cos``, ``reward_raw = cos`` (algorithms.md 4.3)."""
    model, processor = state
    images, texts = decode_images(batch), captions(batch)
    cos = np.full(len(texts), np.nan, np.float32)
    ok = [i for i, im in enumerate(images) if im is not None]
    for s in range(0, len(ok), CHUNK):
        idx = ok[s:s + CHUNK]
        cos[idx] = cosines(model, processor, [images[i] for i in idx], [texts[i] for i in idx])
    scale = np.float32(model.logit_scale.detach().exp().item())
    return {"reward": scale * cos, "reward_raw": cos}


def inputs(p: Any) -> Inputs:
    return {"samples": dict(IMAGE_REFS)}
