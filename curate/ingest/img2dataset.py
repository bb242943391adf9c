"""img2dataset shards in its ``webdataset`` output format: a tar beside a parquet of the same
name (and a ``_stats.json``). The parquet adds each sample's download metadata, and lists the
inputs whose download failed: they have no members in the tar but still get a row. Its other
formats are ``img2dataset_parquet`` and ``img2dataset_files``; ``leftovers`` and
``download_error`` are shared with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.ingest import webdataset
from curate.ingest.kinds import Kind, Options, Record, Source, register

BAD_ROW = "_bad_row"  # the error of a parquet row that can match no sample (rows)


def detect(path: Path) -> bool:
    return webdataset.is_tar(path) and path.with_suffix(".parquet").exists()


def sidecar(path: Path) -> bool:
    """A shard's parquet or stats, or any other file named like a tar beside it."""
    name = path.name.lower()
    return not name.endswith(".tar") and (name.endswith("_stats.json")
                                          or path.with_suffix(".tar").exists())


def check(source: Source, options: Options) -> None:
    webdataset.check(source, options, empty=True)  # every download may have failed
    rows(Path(source.path).with_suffix(".parquet"))


def read(source: Source, options: Options) -> Iterator[Record]:
    by_key = rows(Path(source.path).with_suffix(".parquet"))
    yield from webdataset.records(source, by_key, options)
    yield from leftovers(source, by_key, "in the tar")


def download_error(row: dict, where: str) -> str:
    """The error of an input img2dataset lists: its status and message, or, when it says
    ``success``, that its image is not ``where`` it should be (``in the tar``)."""
    status = row.get("status") or "missing"
    if status == "success":
        return f"missing_image: listed in the parquet but not {where}"
    return f"{status}: {row.get('error_message') or 'no image ' + where}"


def leftovers(source: Source, by_key: dict[str, dict], where: str) -> Iterator[Record]:
    """A failed row for each input of ``by_key`` (those with no sample found)."""
    for key, row in by_key.items():
        rec = Record(key, source.path, source.kind)
        caption = row.get("caption")
        rec.caption = caption.encode() if isinstance(caption, str) else None
        rec.meta.update(webdataset.meta(row))
        rec.errors.append(row.get(BAD_ROW) or download_error(row, where))
        yield rec


def rows(path: Path) -> dict[str, dict]:
    """The rows of an img2dataset parquet by key. A row whose key is null or repeats an
    earlier row's is kept under a name no sample has (``(row N)``), marked ``BAD_ROW``: it
    becomes a failed row of its own (``leftovers``), never dropped."""
    try:
        table = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the img2dataset parquet ({e})") from None
    out: dict[str, dict] = {}
    for i, r in enumerate(table):
        key = r.get("key")
        if key is None:
            out[f"(row {i})"] = {**r, BAD_ROW: f"missing_key: parquet row {i} has no key"}
        elif str(key) in out:
            out[f"{key} (row {i})"] = {**r, BAD_ROW: f"duplicate_key: parquet row {i} repeats "
                                       f"key {_short(key)}"}
        else:
            out[str(key)] = r
    return out


def _short(key: object) -> str:
    text = repr(str(key))
    return text if len(text) <= 70 else text[:67] + "..."


KIND = register(Kind(name="img2dataset", detect=detect, read=read, check=check,
                     label="an img2dataset shard (a tar beside its .parquet)", rank=10,
                     shards=True, sidecar=sidecar))
