"""LAION improved aesthetic predictor (christophschuhmann/improved-aesthetic-predictor).

The head is ``Linear(d,1024) → Dropout → Linear(1024,128) → Dropout → Linear(128,64) → Dropout
→ Linear(64,16) → Linear(16,1)`` with no activations, so at inference ``aesthetic`` is an affine
map of the L2-normalized float32 image embedding (algorithms.md sections 0 and 4.1). The shipped
``sac+logos+ava1-l14-linearMSE.pth`` (d = 768) is meant for ``openai-vit-l-14`` and rates on
AVA's 1-10 scale; ``curate fit-aesthetic`` fits a head of the same shape on your own labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError
from curate.passes import Batch, Inputs, Pass, embeddings_input, register
from curate.passes.embed import embed
from curate.workspace import Workspace, model_key

LAYERS = (0, 2, 4, 6, 7)  # the Linear layers of the nn.Sequential; the rest are Dropout
Head = list[tuple[np.ndarray, np.ndarray]]  # (weight (out, in), bias (out,)) per Linear
SHIPPED = ("sac+logos+ava1-l14-linearMSE.pth from github.com/christophschuhmann/"
           "improved-aesthetic-predictor, used with --param model=openai-vit-l-14")


@dataclass(frozen=True)
class Params:
    model: str = "tiny-clip"
    weights: str | None = None


def load_head(path: str | Path) -> Head:
    """The five Linear layers of a head state dict (``layers.{0,2,4,6,7}.{weight,bias}``)."""
    import torch
    try:
        sd = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickle with objects, not a torch file
        raise CurateError(f"cannot read aesthetic head {path}: {e}".splitlines()[0]) from e
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
    names = [f"layers.{i}.{k}" for i in LAYERS for k in ("weight", "bias")]
    if missing := [n for n in names if n not in sd]:
        raise CurateError(f"{path} is not an aesthetic head: missing {', '.join(missing)}")
    head = [(sd[f"layers.{i}.weight"].float().numpy(), sd[f"layers.{i}.bias"].float().numpy())
            for i in LAYERS]
    prev = head[0][0].shape[1]
    for i, (w, b) in zip(LAYERS, head, strict=True):
        if w.ndim != 2 or w.shape[1] != prev or b.shape != (w.shape[0],):
            raise CurateError(f"{path}: layers.{i} has shape {tuple(w.shape)}, expected "
                              f"(*, {prev}) with a matching bias")
        prev = w.shape[0]
    if prev != 1:
        raise CurateError(f"{path}: the head outputs {prev} values, expected 1")
    return head


def forward(head: Head, x: np.ndarray) -> np.ndarray:
    """The head on L2-normalized rows of ``x`` in float32 (NaN rows stay NaN)."""
    x = np.asarray(x, np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    for w, b in head:
        x = x @ w.T + b
    return x[:, 0]


def compute(batch: Batch, p: Params, state: Head) -> dict[str, np.ndarray]:
    return {"aesthetic": forward(state, batch["image"])}


def model_dim(ws: Workspace, model: str) -> int | None:
    """The model's embedding dim from its stored embeddings or its open_clip config, without
    loading weights; None when neither says."""
    manifest = ws.manifest("embeddings", model_key(model))
    if manifest is not None:
        return int(manifest["dim"])
    import open_clip

    from curate.models import resolve
    from curate.models.tinyclip import register_arch
    register_arch()
    cfg = open_clip.get_model_config(resolve(model).arch)
    return int(cfg["embed_dim"]) if cfg and "embed_dim" in cfg else None


def check_dims(head: Head, dim: int | None, p: Params) -> None:
    if dim is not None and head[0][0].shape[1] != dim:
        raise CurateError(f"aesthetic head {p.weights} takes {head[0][0].shape[1]}-d embeddings "
                          f"but model {p.model!r} makes {dim}-d ones; use the head's model "
                          "or fit one with `curate fit-aesthetic --model MODEL`")


def prepare(ws: Workspace, p: Params) -> tuple[Head, dict[str, Any]]:
    """Load the head and check its input dim against the model, then embed what is missing.
    The runner refuses to add parts scored with another head (or model) to the folder."""
    from curate.models import weights_sha256
    if not p.weights or not Path(p.weights).expanduser().is_file():
        given = f"{p.weights} does not exist" if p.weights else "no weights given"
        raise CurateError(f"the aesthetic pass needs a head ({given}): e.g. {SHIPPED}; pass it "
                          "as --param weights=/path/to/head.pth, or fit one on your own "
                          "labels with `curate fit-aesthetic`")
    path = Path(p.weights).expanduser().resolve()
    head = load_head(path)
    check_dims(head, model_dim(ws, p.model), p)
    done = embed(ws.root, p.model, progress=False).manifest
    check_dims(head, int(done["dim"]), p)
    sha = weights_sha256(path)
    return head, {"model": done["model"], "head": {"weights": str(path), "sha256": sha,
                                                   "dim": int(head[0][0].shape[1])},
                  "weights_sha256": {**done["weights_sha256"], "head": sha},
                  "scale": "affine head on the L2-normalized image embedding"}


def inputs(p: Params) -> Inputs:
    return {embeddings_input(p.model): {"image_emb": "image"}}


register(Pass(name="aesthetic", params=Params, columns=("aesthetic",), compute=compute,
              inputs=inputs, prepare=prepare,
              description="LAION improved aesthetic predictor: MLP head on the normalized "
                          "image embedding"))
