"""The held-out set ``curate evaluate`` measures every proxy on, and the measurement.

* default: ``heldout_n`` clean synthetic pairs, ``synth.clean_pairs(heldout_n, seed=999_983)``
  (a seed no pool or tiny-clip training uses). Zero-shot classification over the 40 classes
  colour x shape (8 colours x 5 shapes of ``synth``: red green blue yellow purple orange white
  black x circle square triangle star diamond), one prompt per class,
  ``"a photo of a {colour} {shape}"``; an image's class is its scene's colour and shape
  (count, size, position and background are ignored). Chance is 1/40.
* ``heldout=DIR``, another workspace (real data): its ok samples, sorted by ``sample_id`` (a
  content hash: a pseudo-random order), the first ``heldout_n`` whose image decodes. Zero-shot
  only if it has labels: a ``label`` column in ``samples/part-*.parquet`` or a
  ``DIR/labels.parquet`` with ``sample_id`` and ``label``; classes are the distinct labels,
  prompts ``"a photo of a {label}"``, measured over the held-out samples that have a label.
  Without labels ``zero_shot_acc`` is None.

Held-out samples whose ``sample_id`` (content hash of image bytes and caption) is also in the
training workspace are dropped first (``heldout_overlap`` counts them), so no pair is both
trained and tested on. Retrieval is recall@1 over the whole held-out set: image->text (the
highest-cosine caption is the image's own, by index) and text->image; chance is 1/N.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from curate.errors import CurateError
from curate.hashing import content_id
from curate.images import decode_rgb, read_bytes
from curate.synth import COLOURS, SHAPES, clean_pairs
from curate.workspace import Workspace

HELDOUT_SEED = 999_983
PROMPT = "a photo of a {}"
SAMPLE_COLUMNS = ["sample_id", "status", "caption", "image_path", "image_offset",
                  "image_length"]  # what training and held-out sets read of each sample


@dataclass(frozen=True)
class HeldOut:
    """Preprocessed held-out images, their caption tokens and (optionally) class labels."""

    info: dict
    images: torch.Tensor
    texts: torch.Tensor
    labels: torch.Tensor | None = None  # class index per image, -1 = none
    prompts: torch.Tensor | None = None  # one tokenized prompt per class


def synthetic_heldout(n: int, preprocess: Any, tokenizer: Any, exclude: set[str],
                      seed: int = HELDOUT_SEED) -> HeldOut:
    """``n`` clean synthetic pairs minus any whose content id is in ``exclude``."""
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    index = {cs: i for i, cs in enumerate(classes)}
    images, captions, labels, overlap = [], [], [], 0
    for scene, data, caption in clean_pairs(n, seed):
        if content_id(data, caption.encode()) in exclude:
            overlap += 1
            continue
        images.append(preprocess(decode_rgb(data)))
        captions.append(caption)
        labels.append(index[(scene.colour, scene.shape)])
    info = {"kind": "synthetic", "seed": seed, "n": len(images), "heldout_overlap": overlap,
            "classes": len(classes), "prompt": PROMPT.format("{colour} {shape}")}
    return HeldOut(info, torch.stack(images), tokenizer(captions), torch.tensor(labels),
                   tokenizer([PROMPT.format(f"{c} {s}") for c, s in classes]))


def workspace_heldout(path: str | Path, n: int, preprocess: Any, tokenizer: Any,
                      exclude: set[str]) -> HeldOut:
    """Up to ``n`` ok samples of workspace ``path`` (see the module docstring)."""
    ws = Workspace.open(path)
    rows: list[dict] = []
    for part in ws.sample_parts():
        names = pq.read_schema(part).names
        t = pq.read_table(part, columns=SAMPLE_COLUMNS + (["label"] if "label" in names else []))
        rows += t.filter(pc.equal(t["status"], "ok")).to_pylist()
    labels_file = ws.labels_path
    if labels_file.exists():
        lt = pq.read_table(labels_file)
        if not {"sample_id", "label"} <= set(lt.column_names):
            raise CurateError(f"{labels_file} needs columns sample_id and label")
        by_id = {s: lab for s, lab in zip(lt["sample_id"].to_pylist(), lt["label"].to_pylist(),
                                          strict=True)}
        for r in rows:
            r["label"] = by_id.get(r["sample_id"], r.get("label"))
    rows.sort(key=lambda r: r["sample_id"])
    overlap = sum(r["sample_id"] in exclude for r in rows)
    images, kept = [], []
    for r in rows:
        if len(kept) == n:
            break
        if r["sample_id"] in exclude:
            continue
        try:
            images.append(preprocess(decode_rgb(read_bytes(
                r["image_path"], r["image_offset"], r["image_length"]))))
        except Exception:  # noqa: BLE001 - an image that does not decode is not held out
            continue
        kept.append(r)
    if len(kept) < 2:
        raise CurateError(f"held-out workspace {ws.root} has {len(kept)} usable samples; "
                          "retrieval needs at least 2")
    named = [r.get("label") for r in kept]
    classes = sorted({str(x) for x in named if x is not None and str(x).strip()})
    info = {"kind": "workspace", "path": str(ws.root), "n": len(kept),
            "heldout_overlap": overlap, "classes": len(classes) if len(classes) > 1 else 0}
    texts = tokenizer([r["caption"] or "" for r in kept])
    if len(classes) < 2:
        return HeldOut(info, torch.stack(images), texts)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index.get(str(x), -1) if x is not None else -1 for x in named])
    info.update(prompt=PROMPT.format("{label}"), labelled=int((labels >= 0).sum()))
    return HeldOut(info, torch.stack(images), texts, labels,
                   tokenizer([PROMPT.format(c) for c in classes]))


def _encode(fn: Any, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    out = torch.cat([fn(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    return torch.nn.functional.normalize(out, dim=-1)


@torch.inference_mode()
def measure(model: torch.nn.Module, held: HeldOut) -> dict[str, float | None]:
    """Zero-shot accuracy (None without labels) and recall@1 both ways on ``held``."""
    model.eval()
    img = _encode(model.encode_image, held.images)
    txt = _encode(model.encode_text, held.texts)
    sim, truth = img @ txt.T, torch.arange(len(img))
    out: dict[str, float | None] = {
        "zero_shot_acc": None,
        "i2t_r1": int((sim.argmax(1) == truth).sum()) / len(img),
        "t2i_r1": int((sim.argmax(0) == truth).sum()) / len(img)}
    if held.labels is not None and held.prompts is not None:
        has = held.labels >= 0
        pred = (img @ _encode(model.encode_text, held.prompts).T).argmax(1)
        out["zero_shot_acc"] = int((pred[has] == held.labels[has]).sum()) / max(1, int(has.sum()))
    return out
