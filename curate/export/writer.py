"""The seam between ``curate export`` and its output formats: a shard writer.

The export verb runs the query (``query.py``: one Arrow row per sample, in key order) and hands
its batches to a ``Writer``; everything after that (reading the images, laying out members,
cutting shards, writing files) is the writer's. A format is one module with one class that
follows ``Writer`` and one line in ``formats.FORMATS``. Samples in the webdataset sense (a dict
keyed by extension, with ``__key__``) go through ``write``, the query's rows through
``write_batch``: the fast path, which must give the same bytes as ``write`` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from curate.export.query import STATE
from curate.export.read import SourceReader
from curate.files import write_json


@dataclass(frozen=True)
class Target:
    """Where and in what sizes an export writes: shards ``{name}-%06d{suffix}`` in ``out``, each
    closed at ``shard_size`` samples or before it would pass ``shard_bytes`` bytes; keys are
    the sample's position in the export, ``width`` digits (``%0{width}d``)."""

    out: Path
    name: str
    width: int
    shard_size: int | None = None
    shard_bytes: int | None = None

    def shard(self, n: int, suffix: str) -> Path:
        """The final path of shard ``n``."""
        return self.out / f"{self.name}-{n:06d}{suffix}"


class Writer(Protocol):
    """A shard writer. ``open`` starts it after the shards the resume ``state`` records (their
    samples are not given again), with the ``reader`` that ``write_batch`` reads images with;
    ``write`` adds one sample (a dict keyed by extension, with ``__key__``), ``write_batch`` a
    slice of the query's rows (the same bytes as ``write`` of the same samples); ``planned``
    lists every shard begun so far (``name``, and ``first``: its first sample's position),
    which the export's manifest cites; ``close`` finishes the last shard and returns the
    records of all of them (``name``, ``first``, ``samples``, ``bytes``, ``blake3``);
    ``abort`` stops without finishing and leaves no temporary file. A writer records each
    finished shard in ``state`` with ``record_shard``, so a killed export resumes after it."""

    format: str  # its name in formats.FORMATS and export.json
    suffix: str  # of its shard files
    members: dict[str, str]  # what each sample holds, for export.json and the data card

    def open(self, target: Target, state: dict, reader: SourceReader | None = None) -> None: ...

    def write(self, sample: dict[str, Any]) -> None: ...

    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    @property
    def planned(self) -> list[dict]: ...

    def close(self) -> list[dict]: ...

    def abort(self) -> None: ...


def slices(batch: pa.RecordBatch, step: int) -> Iterator[pa.RecordBatch]:
    """``batch`` cut into runs of rows holding at most ``step`` image bytes each (a row larger
    than ``step`` on its own), so a writer's memory stays flat however large the images."""
    cum = np.cumsum(batch.column("image_length").to_numpy())
    cuts = [0, *np.flatnonzero(np.diff(cum // step)) + 1, batch.num_rows]
    for a, e in zip(cuts, cuts[1:], strict=False):
        if e > a:
            yield batch.slice(a, e - a)


def record_shard(target: Target, state: dict, shard: dict) -> None:
    """Add a finished shard (renamed into place) to the resume state and write it: a kill
    before this only means the shard is written again, identically."""
    state["shards"].append(shard)
    write_json(state, target.out / STATE)


def pattern(name: str, n: int, suffix: str) -> str:
    """The brace pattern of all ``n`` shards, as webdataset and open_clip's --train-data take
    it."""
    return f"{name}-000000{suffix}" if n <= 1 else f"{name}-{{000000..{n - 1:06d}}}{suffix}"
