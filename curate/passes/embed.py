"""The embedding pass: image and text embeddings computed once per model and stored.

Output ``embeddings/<model-key>/part-*.parquet`` mirrors ``samples/``: ``sample_id``,
``status``/``error`` (an image that fails to decode gets a null image vector, never a crash),
raw vectors ``image_emb``/``text_emb`` and their L2 norms, so both raw (Whitened CLIP)
and normalized (every cosine score) uses are served; see algorithms.md section 0. Vectors are
stored as float32, or as float16 with ``dtype="float16"`` (half the disk and page cache, as
DataComp ships its features; the norms are the float32 vectors'); every reader gets float32
back (``curate.arrays.vectors``, the catalog's ``FLOAT[d]`` casts).

``embed`` and ``embed_texts`` each describe a ``runner.Job`` (folder, manifest, the model's
weights checksum, how pending parts become tables) and hand it to ``runner.run``, as
``curate.passes.score`` does for every scoring pass; the runner refuses to resume a folder
with parts embedded by other weights.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.images import decode_error, decode_rgb, read_bytes
from curate.lock import writes
from curate.passes import ray as ray_engine
from curate.passes import reuse, threads
from curate.passes.runner import Job, PassReport, input_rows, ok_count, pending_parts, run
from curate.workspace import Workspace, model_key, prompt_key

REF_COLUMNS = ["sample_id", "image_path", "image_offset", "image_length"]
DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def model_weights(identity: dict) -> dict[str, str]:
    """The runner's weights record of a loaded model (``LoadedModel.identity``)."""
    return {"model": identity["weights_sha256"]}


class ImageRefs:
    """A map-style dataset over the ok images of several samples parts, loaded lazily one part
    at a time in each worker, so memory stays flat however many parts there are."""

    def __init__(self, parts: list[Path], preprocess: Callable,
                 rows: list[list[int]] | None = None) -> None:
        self.parts, self.preprocess, self.rows = parts, preprocess, rows  # rows: ok rows to
        self.starts = [0]                                                   # decode, per part
        for k, p in enumerate(parts):
            self.starts.append(self.starts[-1] + (ok_count(p) if rows is None else len(rows[k])))
        self._cached: tuple[int, dict] | None = None

    def __len__(self) -> int:
        return self.starts[-1]

    def _refs(self, part: int) -> dict:
        if self._cached is None or self._cached[0] != part:
            self._cached = (part, input_rows(self.parts[part], REF_COLUMNS).to_pydict())
        return self._cached[1]

    def __getitem__(self, i: int) -> tuple[int, object, str | None]:
        part = bisect.bisect_right(self.starts, i) - 1
        refs, j = self._refs(part), i - self.starts[part]
        j = j if self.rows is None else self.rows[part][j]
        try:
            data = read_bytes(refs["image_path"][j], refs["image_offset"][j],
                              refs["image_length"][j])
            return i, self.preprocess(decode_rgb(data)), None
        except Exception as e:  # any decode failure becomes data, not a crash
            return i, None, decode_error(e)

    def batches(self, batch_size: int) -> list[list[int]]:
        """Batches that never cross a part boundary, so each part's output is independent."""
        return [list(range(s, min(s + batch_size, e)))
                for a, e in zip(self.starts, self.starts[1:], strict=False)
                for s in range(a, e, batch_size)]


def _collate(items: list) -> tuple:
    import torch
    good = [x for _, x, _ in items if x is not None]
    return ([i for i, _, _ in items], torch.stack(good) if good else None,
            [e for _, _, e in items])


def _worker_init(_: int) -> None:
    import torch
    torch.set_num_threads(1)


def loader(refs: ImageRefs, batch_size: int, workers: int, pin: bool = False) -> object:
    """The decoding DataLoader (also the decode-only baseline of ``bench/``)."""
    from torch.utils.data import DataLoader
    return DataLoader(refs, batch_sampler=refs.batches(batch_size), num_workers=workers,
                      collate_fn=_collate, pin_memory=pin, worker_init_fn=_worker_init,
                      prefetch_factor=4 if workers else None)


def _vectors(x: np.ndarray | None, n: int, dim: int, valid: np.ndarray,
             dtype: str = "float32") -> pa.Array:
    flat = np.zeros((n, dim), np.float32)
    if x is not None:
        flat[valid] = x
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1).astype(dtype)), dim,
                                             mask=pa.array(~valid))


def storage_dtype(ws: Workspace, model: str, dtype: str | None) -> str:
    """The dtype to store: ``dtype``, or (None) the one the model's parts are stored in, else
    float32; a ``dtype`` other than the stored parts' is refused (one folder, one dtype)."""
    if dtype is not None and dtype not in DTYPES:
        raise CurateError(f"--dtype {dtype!r}: use {', '.join(DTYPES)}")
    folder = ws.embeddings_dir(model)
    prev = ws.manifest("embeddings", folder.name)
    had = (prev or {}).get("dtype", "float32") if any(folder.glob("part-*.parquet")) else None
    if had is not None and dtype is not None and had != dtype:
        raise CurateError(f"embeddings of {model!r} in {ws.root} are stored as {had}; embed "
                          f"with --dtype {had}, or into another workspace for {dtype}")
    return dtype or had or "float32"


@writes("embed")
def embed(workspace: str | Path, model: str = "tiny-clip", batch_size: int = 256,
          workers: int | None = None, device: str | None = None, progress: bool = True,
          engine: str = "local", address: str | None = None,
          actors: int | None = None, redo_failed: bool = False,
          dtype: str | None = None) -> PassReport:
    """Embed every ok sample's image and caption with ``model``; resumes where it stopped.
    ``engine="ray"`` computes the parts on a Ray actor pool (``curate.passes.ray``);
    ``redo_failed`` recomputes the parts holding rows that failed (an image restored);
    ``dtype`` stores the vectors as float32 or float16 (default: as the parts already stored
    are, else float32), so a pass that resumes the embeddings keeps their dtype."""
    import torch

    from curate import models

    ws = Workspace.open(workspace)
    dtype = storage_dtype(ws, model, dtype)
    cluster = ray_engine.cluster_for(engine, address, actors)
    if cluster is not None:
        device = device or cluster.device
        workers = cluster.cpus_per_actor - 1 if workers is None else workers
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 1
    # the driver loads the model for its identity (and builds tiny-clip once, before actors)
    m = models.load(model, device if cluster is None else "cpu")
    threads = None
    folder, weights = ws.pass_dir("embeddings", model_key(model)), model_weights(m.identity)
    idle = (folder / "manifest.json").exists() and not pending_parts(
        ws.sample_parts(), folder, redo_failed)
    if workers is None and device == "cpu" and idle:  # nothing to compute: the runner
        workers, threads = 0, cores  # keeps the manifest of the run that computed the parts
    elif workers is None and device == "cpu":  # split the cores by measured cost
        workers, threads = cpu_plan(ws, m, cores)
    elif workers is None:
        workers = cores
    elif device == "cpu":
        threads = max(1, cores - workers)
    precision = "bf16-autocast" if device.startswith("cuda") else "fp32"
    manifest = {"pass": "embed", "model": m.identity, "dim": m.identity["embed_dim"],
                "device": device, "precision": precision, "dtype": dtype,
                "params": {"batch_size": batch_size, "workers": workers, "threads": threads},
                "columns": ["image_emb", "text_emb", "image_norm", "text_norm"]}
    if cluster is not None:
        manifest["engine"] = cluster.describe(address)
        process = ray_engine.process(
            partial(_part_worker, model, device, batch_size, workers, dtype), cluster,
            folder, weights)
    else:
        if threads is not None:
            torch.set_num_threads(threads)

        plans: list[reuse.ImagePlan] = []

        def process(pending: list[Path], advance: Callable[[int], None]
                    ) -> Iterator[tuple[Path, pa.Table]]:
            # each image once: shared images and those embedded before are reused (reuse)
            plans.append(reuse.plan(ws.embeddings_dir(model), ws.sample_parts(), pending))
            return encode_parts(m, device, pending, batch_size, workers, advance,
                                plan=plans[-1], dtype=dtype)

    report = run(ws, Job(kind="embeddings", key=model_key(model), manifest=manifest,
                         process=process, weights=weights), progress,
                 redo_failed=redo_failed)
    if cluster is None and plans:
        report.extra.update(images_decoded=plans[0].decoded, images_reused=plans[0].reused)
    return report


def cpu_plan(ws: Workspace, m: Any, cores: int, n: int = 16) -> tuple[int, int]:
    """(decode workers, torch threads) for ``m`` on ``cores`` CPU cores, from the cost of
    decoding and encoding the first ``n`` ok images of the workspace (``threads.plan``)."""
    import torch

    parts = [p for p in ws.sample_parts() if ok_count(p)][:1]
    if not parts:
        return 1, max(1, cores - 1)
    refs = ImageRefs(parts, m.preprocess)
    torch.set_num_threads(cores)

    def encode(x: torch.Tensor) -> None:
        with torch.no_grad():
            m.model.encode_image(x)

    decode_s, compute_s = threads.probe(lambda i: refs[i][1], encode, torch.stack,
                                        min(n, len(refs)), cores)
    return threads.plan(decode_s, compute_s, cores)


def encode_parts(m: Any, device: str, pending: list[Path], batch_size: int, workers: int,
                 advance: Callable[[int], None], plan: reuse.ImagePlan | None = None,
                 dtype: str = "float32") -> Iterator[tuple[Path, pa.Table]]:
    """Each pending part's embeddings table, in order, decoding ahead in ``workers``; with a
    ``plan``, only the images it names are decoded and encoded, the others reused."""
    import torch

    def encode(fn: Callable, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16,
                                             enabled=device.startswith("cuda")):
            return fn(x.to(device, non_blocking=True)).float().cpu().numpy()

    refs = ImageRefs(pending, m.preprocess, plan.decode if plan else None)
    batches = iter(loader(refs, batch_size, workers, pin=device.startswith("cuda")))
    for k, part in enumerate(pending):
        rows = input_rows(part, ["sample_id", "caption"])
        captions = rows["caption"].to_pylist()
        txt = [encode(m.model.encode_text, m.tokenizer(captions[s:s + batch_size]))
               for s in range(0, rows.num_rows, batch_size)]
        images: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for s in range(0, refs.starts[k + 1] - refs.starts[k], batch_size):
            idx, pixels, errs = next(batches)
            assert idx[0] == refs.starts[k] + s, "batches out of step with parts"
            got = iter(encode(m.model.encode_image, pixels) if pixels is not None else ())
            images += [next(got) if e is None else None for e in errs]
            errors += errs
            advance(len(idx))
        if plan is not None:
            advance(rows.num_rows - len(errors))  # the rows whose image was reused
            good, errors = plan.assemble(k, images, errors)
        else:
            good = [v for v in images if v is not None]
        yield part, _table(rows["sample_id"], np.stack(good) if good else None,
                           np.concatenate(txt) if txt else None, errors,
                           m.identity["embed_dim"], dtype)


def _part_worker(model: str, device: str, batch_size: int, workers: int, dtype: str
                 ) -> Callable[[Path], pa.Table]:
    """In a Ray actor: load the model once; then one part's table per call."""
    import torch

    from curate import models
    if device == "cpu":  # the actor's share of the node's cores
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    m = models.load(model, device)

    def one(part: Path) -> pa.Table:
        return next(encode_parts(m, device, [part], batch_size, workers, lambda n: None,
                                 dtype=dtype))[1]

    return one


def _table(ids: pa.Array, img: np.ndarray | None, txt: np.ndarray | None,
           errors: list[str | None], dim: int, dtype: str = "float32") -> pa.Table:
    n = len(ids)
    valid = np.array([e is None for e in errors], dtype=bool)
    txt = txt if txt is not None else np.zeros((0, dim), np.float32)
    inorm = np.full(n, np.nan, np.float32)
    if img is not None:
        inorm[valid] = np.linalg.norm(img, axis=1)
    return pa.table({
        "sample_id": ids,
        "status": pa.array(["ok" if v else "failed" for v in valid]),
        "error": pa.array(errors, pa.string()),
        "image_emb": _vectors(img, n, dim, valid, dtype),
        "text_emb": _vectors(txt, n, dim, np.ones(n, bool), dtype),
        "image_norm": pa.array(inorm, mask=~valid),
        "text_norm": pa.array(np.linalg.norm(txt, axis=1).astype(np.float32)),
    })


@writes("embed")
def embed_texts(workspace: str | Path, model: str, prefix: str, batch_size: int = 1024,
                device: str | None = None, progress: bool = True) -> PassReport:
    """Text embeddings of ``prefix + caption`` (CLIPScore's "A photo depicts " prompt), cached
    beside the model's embeddings and resumed like them."""
    import torch

    from curate import models

    ws = Workspace.open(workspace)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    m = models.load(model, device)
    dim = m.identity["embed_dim"]
    manifest = {"pass": "embed_texts", "model": m.identity, "dim": dim, "prefix": prefix,
                "device": device, "columns": ["text_emb", "text_norm"]}

    def process(pending: list[Path], advance: Callable[[int], None]
                ) -> Iterator[tuple[Path, pa.Table]]:
        for part in pending:
            rows = input_rows(part, ["sample_id", "caption"])
            captions = [prefix + c for c in rows["caption"].to_pylist()]
            out = np.zeros((len(captions), dim), np.float32)
            for s in range(0, len(captions), batch_size):
                tokens = m.tokenizer(captions[s:s + batch_size]).to(device)
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16,
                                                     enabled=device.startswith("cuda")):
                    out[s:s + batch_size] = m.model.encode_text(tokens).float().cpu().numpy()
                advance(min(batch_size, len(captions) - s))
            n = len(captions)
            yield part, pa.table({
                "sample_id": rows["sample_id"], "status": pa.array(["ok"] * n, pa.string()),
                "error": pa.array([None] * n, pa.string()),
                "text_emb": _vectors(out, n, dim, np.ones(n, bool)),
                "text_norm": pa.array(np.linalg.norm(out, axis=1).astype(np.float32))})

    return run(ws, Job(kind="embeddings", key=prompt_key(model, prefix), manifest=manifest,
                       process=process, weights=model_weights(m.identity)), progress)
