"""img2dataset shards in its ``parquet`` output format: one row per input with the image's
bytes in a binary column named by its encoding (``jpg``, ``png``, ``webp``), ``key``,
``status``, ``error_message``, url, sha256 and sizes. The bytes are copied into the
workspace once, here: nothing is downloaded again. Rows img2dataset could not download are
failed rows with its status and message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.ingest import tabular
from curate.ingest.img2dataset import download_error
from curate.ingest.kinds import Kind, Options, Record, Source, register

IMAGE_COLUMNS = ("jpg", "png", "webp")


def detect(path: Path) -> bool:
    if not (path.is_file() and path.name.lower().endswith(".parquet")):
        return False
    schema = tabular.parquet_schema(path)
    return schema is not None and {"key", "status"} <= set(schema.names) and any(
        c in schema.names and tabular.is_bytes(schema.field(c).type) for c in IMAGE_COLUMNS)


def sidecar(path: Path) -> bool:
    """The ``_stats.json`` beside a shard."""
    name = path.name
    return name.endswith("_stats.json") and path.with_name(
        name[: -len("_stats.json")] + ".parquet").exists()


def _columns(source: Source, schema: pa.Schema, options: Options) -> tuple[str, str]:
    image = options.image_col or next(c for c in IMAGE_COLUMNS if c in schema.names)
    return tabular.find_columns(source, schema, Options(
        image, options.caption_col, options.key_col, options.columns))


def check(source: Source, options: Options) -> None:
    schema = tabular.parquet_schema(Path(source.path))
    if schema is None:
        raise CurateError(f"{source.path}: cannot read the img2dataset parquet")
    _columns(source, schema, options)


def _status(rec: Record, row: dict) -> None:
    if row.get("status") != "success":
        rec.errors.append(download_error(row, "in the parquet"))


def read(source: Source, options: Options) -> Iterator[Record]:
    f = pq.ParquetFile(source.path)
    image_col, caption_col = _columns(source, f.schema_arrow, options)
    yield from tabular.records(source, f.iter_batches(batch_size=256), image_col, caption_col,
                               options, f.metadata.num_rows, Path(source.path).parent,
                               key_col="key", hook=_status)


KIND = register(Kind(name="img2dataset_parquet", detect=detect, read=read, check=check,
                     label="an img2dataset parquet shard (image bytes in a column)", rank=11,
                     shards=True, sidecar=sidecar))
