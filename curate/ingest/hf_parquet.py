"""Hugging Face parquet (how most image-caption data on the hub is stored): an ``Image``
feature column (a struct of ``bytes`` and ``path``) or a plain binary image column, and a
caption column among the usual names. The bytes are copied into the workspace at ingest; an
``Image`` cell with a path and no bytes is read in place (relative to the parquet's folder or
``--image-root``). A folder of such files (``data/train-00000-of-00004.parquet``, ...) is
read file by file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.ingest import tabular
from curate.ingest.kinds import Kind, Options, Record, Source, register


def detect(path: Path) -> bool:
    if not (path.is_file() and path.name.lower().endswith(".parquet")):
        return False
    schema = tabular.parquet_schema(path)
    return schema is not None and any(tabular.is_bytes(f.type) for f in schema)


def check(source: Source, options: Options) -> None:
    schema = tabular.parquet_schema(Path(source.path))
    if schema is None:
        raise CurateError(f"{source.path}: cannot read the parquet")
    tabular.find_columns(source, schema, options)


def read(source: Source, options: Options) -> Iterator[Record]:
    f = pq.ParquetFile(source.path)
    image_col, caption_col = tabular.find_columns(source, f.schema_arrow, options)
    base = Path(options.image_root) if options.image_root else Path(source.path).parent
    yield from tabular.records(source, f.iter_batches(batch_size=256), image_col, caption_col,
                               options, f.metadata.num_rows, base)


KIND = register(Kind(name="hf_parquet", detect=detect, read=read, check=check,
                     label="a Hugging Face parquet (an Image or binary column)", rank=25,
                     shards=True))
