"""img2dataset shards: a webdataset tar beside a parquet of the same name (and a
``_stats.json``). The parquet adds each sample's download metadata, and lists the inputs
whose download failed: they have no members in the tar but still get a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.ingest import webdataset
from curate.ingest.kinds import Kind, Options, Record, Source, register


def detect(path: Path) -> bool:
    return webdataset.is_tar(path) and path.with_suffix(".parquet").exists()


def sidecar(path: Path) -> bool:
    """A shard's parquet or stats, or any other file named like a tar beside it."""
    name = path.name.lower()
    return not name.endswith(".tar") and (name.endswith("_stats.json")
                                          or path.with_suffix(".tar").exists())


def check(source: Source, options: Options) -> None:
    webdataset.check(source, options)
    _rows(source)


def read(source: Source, options: Options) -> Iterator[Record]:
    rows = _rows(source)
    yield from webdataset.records(source, rows)
    for key, row in rows.items():  # inputs img2dataset could not download
        rec = Record(key, source.path, source.kind)
        caption = row.get("caption")
        rec.caption = caption.encode() if isinstance(caption, str) else None
        rec.meta.update(webdataset.meta(row))
        status = row.get("status") or "missing"
        rec.errors.append(f"{status}: {row.get('error_message') or 'no image in the tar'}"
                          if status != "success" else "missing_image: listed in the parquet "
                          "but not in the tar")
        yield rec


def _rows(source: Source) -> dict[str, dict]:
    """The parquet's rows by key."""
    path = Path(source.path).with_suffix(".parquet")
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the img2dataset parquet ({e})") from None
    return {str(r["key"]): r for r in rows if r.get("key") is not None}


KIND = register(Kind(name="img2dataset", detect=detect, read=read, check=check,
                     label="an img2dataset shard (a tar beside its .parquet)", rank=10,
                     shards=True, sidecar=sidecar))
