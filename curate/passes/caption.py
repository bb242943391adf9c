"""The captioning pass: a captioning model writes a candidate caption for every image, then the
captions are attached as samples of those images (``curate.ingest.captions``, as ``curate
captions add`` does), tagged with the run's caption source.

The model comes through Hugging Face ``transformers`` by hub id or local folder (what
``save_pretrained`` writes): BLIP (``BlipForConditionalGeneration``, Li et al. 2022), BLIP-2
(``Blip2ForConditionalGeneration``, Li et al. 2023, the captioner of Nguyen et al. 2023),
``VisionEncoderDecoderModel`` (ViT-GPT2 and kin), else ``AutoModelForImageTextToText``; chosen
by the ``model_type`` of its config. It runs in batches on a GPU when there is one (float16),
else on the CPU. Like every pass it goes through ``runner.run``: its folder
``captions/SOURCE/`` holds one part per samples part (``sample_id`` and ``image_id`` of the
first sample of each image that part brings, ``caption``, ``status``/``error``) and a manifest
with the weights' checksum, so a killed run redoes at most one part and a rerun captions only
images added since; each image is captioned once, however many captions it has.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.images import decode_error, decode_rgb, read_bytes
from curate.ingest.captions import CaptionsReport, add_captions
from curate.lock import writes
from curate.passes.runner import Job, PassReport, input_rows, run
from curate.workspace import Workspace, check_name

REFS = ["sample_id", "image_hash", "image_path", "image_offset", "image_length"]
# model_type -> (model class, processor class) in transformers; others: the Auto classes
CLASSES = {"blip": ("BlipForConditionalGeneration", "BlipProcessor"),
           "blip-2": ("Blip2ForConditionalGeneration", "Blip2Processor"),
           "vision-encoder-decoder": ("VisionEncoderDecoderModel", "AutoProcessor")}
WEIGHT_FILES = ("*.safetensors", "*.bin")


def load_captioner(model: str, device: str) -> tuple[Any, Any, dict[str, str]]:
    """(model in eval mode on ``device``, processor, {weights file: sha256}) for a hub id or
    a local folder; one line when it cannot be loaded (offline and not cached, not a
    captioner)."""
    import torch
    try:
        import transformers
    except ImportError:
        raise CurateError("the captioning pass needs transformers: pip install "
                          "'curate[captions]'") from None
    try:
        config = transformers.AutoConfig.from_pretrained(model)
        model_cls, proc_cls = CLASSES.get(config.model_type, (
            "AutoModelForImageTextToText", "AutoProcessor"))
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        m = getattr(transformers, model_cls).from_pretrained(model, dtype=dtype)
        processor = getattr(transformers, proc_cls).from_pretrained(model)
    except (OSError, ValueError, KeyError) as e:
        raise CurateError(f"cannot load captioner {model!r}: {str(e).splitlines()[0][:300]}"
                          ) from None
    return m.to(device).eval(), processor, _weights(model)


def _weights(model: str) -> dict[str, str]:
    """sha256 of the weight files of a local folder or of the hub cache's copy."""
    folder = Path(model)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download
        try:
            folder = Path(snapshot_download(model, local_files_only=True))
        except Exception:  # a model that loaded from elsewhere: its files are not known
            return {"model": f"unknown:{model}"}
    out = {}
    for pattern in WEIGHT_FILES:
        for f in sorted(folder.glob(pattern)):
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 24), b""):
                    h.update(block)
            out[f.name] = h.hexdigest()
    return out


def first_images(parts: list[Path]) -> dict[str, list[int]]:
    """Per samples part, its ok rows that are the first sample of an image no earlier part
    (or row) has: the rows a captioning run captions."""
    seen: set[str] = set()
    todo: dict[str, list[int]] = {}
    for part in parts:
        rows = []
        for j, h in enumerate(input_rows(part, ["image_hash"])["image_hash"].to_pylist()):
            if h is not None and h not in seen:
                seen.add(h)
                rows.append(j)
        todo[part.name] = rows
    return todo


@writes("caption")
def caption(workspace: str | Path, model: str, source: str, batch_size: int = 16,
            device: str | None = None, max_new_tokens: int = 30, progress: bool = True
            ) -> tuple[PassReport, CaptionsReport]:
    """Caption every image of ``workspace`` with ``model`` (resumable), then attach the
    captions as samples with ``caption_source = source``."""
    import torch
    check_name(source, "caption source")
    ws = Workspace.open(workspace)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m, processor, weights = load_captioner(model, device)
    todo = first_images(ws.require_samples())
    manifest = {"pass": "caption", "model": {"name": model, "class": type(m).__name__},
                "source": source, "device": device, "columns": ["caption"],
                "params": {"batch_size": batch_size, "max_new_tokens": max_new_tokens}}

    def process(pending: list[Path], advance: Callable[[int], None]
                ) -> Iterator[tuple[Path, pa.Table]]:
        for part in pending:
            rows = pa.array(todo[part.name], pa.int64())
            refs = input_rows(part, REFS).take(rows).to_pydict()
            n = len(refs["sample_id"])
            texts: list[str | None] = [None] * n
            errors: list[str | None] = [None] * n
            for s in range(0, n, batch_size):
                images, slots = [], []
                for j in range(s, min(s + batch_size, n)):
                    try:
                        images.append(decode_rgb(read_bytes(
                            refs["image_path"][j], refs["image_offset"][j],
                            refs["image_length"][j])))
                        slots.append(j)
                    except Exception as e:  # an image that fails is a row, not a crash
                        errors[j] = decode_error(e)
                for j, text in zip(slots, _generate(m, processor, images, device,
                                                    max_new_tokens), strict=True):
                    texts[j] = text
                advance(min(batch_size, n - s))
            yield part, pa.table({
                "sample_id": pa.array(refs["sample_id"], pa.string()),
                "image_id": pa.array(refs["image_hash"], pa.string()),
                "status": pa.array(["ok" if e is None else "failed" for e in errors],
                                   pa.string()),
                "error": pa.array(errors, pa.string()),
                "caption": pa.array(texts, pa.string())})

    report = run(ws, Job(kind="captions", key=source, manifest=manifest, process=process,
                         weights=weights, count_rows=lambda p: len(todo[p.name])), progress)
    return report, attach(ws, source)


def _generate(m: Any, processor: Any, images: list, device: str, max_new_tokens: int
              ) -> list[str]:
    """The model's captions of ``images`` (greedy decoding)."""
    import torch
    if not images:
        return []
    inputs = processor(images=images, return_tensors="pt").to(device)
    if device.startswith("cuda"):
        inputs["pixel_values"] = inputs["pixel_values"].half()
    with torch.no_grad():
        out = m.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]


def attach(ws: Workspace, source: str) -> CaptionsReport:
    """Attach the ok captions of ``captions/SOURCE/`` (every part: a rerun after a kill adds
    what the killed run did not; what is there already is not added again)."""
    folder = ws.pass_dir("captions", source)
    tables = [pq.read_table(p, columns=["image_id", "caption", "status"])
              for p in sorted(folder.glob("part-*.parquet"))]
    t = pa.concat_tables(tables) if tables else pa.table(
        {"image_id": pa.array([], pa.string()), "caption": pa.array([], pa.string()),
         "status": pa.array([], pa.string())})
    t = t.filter(pa.compute.equal(t["status"], "ok")).select(["image_id", "caption"])
    return add_captions(ws.root, t, source, on="image_id", caption_column="caption",
                        progress=False, origin=str(folder) + os.sep)
