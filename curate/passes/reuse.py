"""Image embeddings are per image: a plan that encodes each image once per model.

Several samples share an image (COCO's five captions, an exact duplicate, every caption that
``curate captions add`` or the captioning pass attached): the embedding pass decodes and
encodes an image only the first time it meets its ``image_hash`` and copies that vector (or
that decode error) into every other sample of the image, so attaching captions costs only
their text embeddings. Images already embedded by this model are looked up in the finished
parts of its folder, reading only the parts that hold an image a pending part needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.arrays import vectors
from curate.passes.runner import input_rows

Result = tuple[np.ndarray | None, str | None]  # (image vector, decode error)


@dataclass
class ImagePlan:
    """Which ok rows of each pending part are decoded (``decode``, row indices in order), the
    image hash of every ok row (``hashes``), and the vectors known so far by hash."""

    hashes: list[list[str | None]]
    decode: list[list[int]]
    repeats: set[str]  # hashes met again later in this run: their results are kept
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def decoded(self) -> int:
        return sum(map(len, self.decode))

    @property
    def reused(self) -> int:
        return sum(map(len, self.hashes)) - self.decoded

    def assemble(self, k: int, images: list[np.ndarray | None], errors: list[str | None]
                 ) -> tuple[list[np.ndarray], list[str | None]]:
        """Part ``k``'s (vectors of its rows without an error, error of every row) from the
        results of its decoded rows (``images``/``errors``, in ``decode[k]`` order) and the
        results known for the others."""
        done = dict(zip(self.decode[k], zip(images, errors, strict=True), strict=True))
        out_img: list[np.ndarray] = []
        out_err: list[str | None] = []
        for j, h in enumerate(self.hashes[k]):
            if j in done:
                v, e = done[j]
                if h in self.repeats:
                    self.results[h] = (v, e)
            else:
                v, e = self.results[h]
            out_err.append(e)
            if e is None:
                out_img.append(v)
        return out_img, out_err


def plan(out_dir: Path, parts: list[Path], pending: list[Path]) -> ImagePlan:
    """The plan for embedding ``pending`` (samples parts) into ``out_dir``: an image whose
    hash a finished part of ``out_dir`` embedded without error, or an earlier row of this run
    decodes, is not decoded again."""
    hashes = [input_rows(p, ["image_hash"])["image_hash"].to_pylist() for p in pending]
    needed = {h for hs in hashes for h in hs if h is not None}
    results = _finished(out_dir, [p for p in parts if p not in set(pending)], needed)
    decode, seen, repeats = [], set(results), set()
    for hs in hashes:
        rows = []
        for j, h in enumerate(hs):
            if h is None:
                rows.append(j)
            elif h in seen:
                repeats.add(h)
            else:
                seen.add(h)
                rows.append(j)
        decode.append(rows)
    return ImagePlan(hashes, decode, repeats - set(results), results)


def _finished(out_dir: Path, done: list[Path], needed: set[str]) -> dict[str, Result]:
    """The image vectors ``out_dir``'s finished parts hold for the hashes in ``needed``."""
    found: dict[str, Result] = {}
    for part in done:
        out = out_dir / part.name
        if not needed - set(found) or not out.exists():
            continue
        rows = input_rows(part, ["sample_id", "image_hash"]).to_pydict()
        want = {s: h for s, h in zip(rows["sample_id"], rows["image_hash"], strict=True)
                if h in needed and h not in found}
        if not want:
            continue
        t = pq.read_table(out, columns=["sample_id", "status", "image_emb"])
        t = t.filter(pa.compute.and_(pa.compute.equal(t["status"], "ok"),
                                     pa.compute.is_in(t["sample_id"],
                                                      pa.array(list(want), pa.string()))))
        for sid, v in zip(t["sample_id"].to_pylist(), vectors(t["image_emb"]), strict=True):
            found.setdefault(want[sid], (v, None))
    return found
