"""Hugging Face ImageFolder: a folder of images with a ``metadata.jsonl``, ``metadata.csv``
or ``metadata.parquet`` (in the folder or in each split folder under it) whose ``file_name``
column names an image relative to the metadata file, beside a caption column found among the
usual names. Images are read in place and keyed by their path in the folder without the
extension; an image no metadata row names is a row too (with no caption).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.images import IMAGE_EXTS
from curate.ingest import tabular
from curate.ingest.kinds import Kind, Options, Record, Source, load_file, register

NAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


def _metadata(root: Path) -> list[Path]:
    """The metadata files of the folder and of its split folders, sorted."""
    found = [root / n for n in NAMES if (root / n).is_file()]
    found += [d / n for d in sorted(root.iterdir()) if d.is_dir() for n in NAMES
              if (d / n).is_file()]
    return found


def detect(path: Path) -> bool:
    return path.is_dir() and bool(_metadata(path))


def _open(path: Path) -> pa.Table:
    try:
        if path.suffix == ".jsonl":
            return pjson.read_json(path)
        if path.suffix == ".csv":
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in ("file_name", *tabular.CAPTION_COLUMNS)}))
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the ImageFolder metadata ({e})") from None


def _columns(source: Source, meta: Path, table: pa.Table, options: Options) -> tuple[str, str]:
    if "file_name" not in table.column_names:
        raise CurateError(f"{meta}: no file_name column (have {', '.join(table.column_names)})")
    return tabular.find_columns(source, table.schema, Options(
        "file_name", options.caption_col, options.key_col))


def check(source: Source, options: Options) -> None:
    for meta in _metadata(Path(source.path)):
        _columns(source, meta, _open(meta), options)


def read(source: Source, options: Options) -> Iterator[Record]:
    root = Path(source.path)
    named: set[Path] = set()

    def key(rec: Record, row: dict) -> None:
        if row.get("file_name"):
            file = (meta.parent / str(row["file_name"])).resolve()
            named.add(file)
            rec.key = _key(root, file)

    for meta in _metadata(root):
        table = _open(meta)
        image_col, caption_col = _columns(source, meta, table, options)
        yield from tabular.records(source, table.to_batches(), image_col, caption_col, options,
                                   table.num_rows, meta.parent, drop_known=False, hook=key)
    for file in sorted(root.rglob("*")):  # images no metadata row names: rows all the same
        if (file.is_file() and file.suffix.lower().lstrip(".") in IMAGE_EXTS
                and file.resolve() not in named):
            rec = Record(_key(root, file.resolve()), source.path, source.kind)
            load_file(rec, file.resolve(), options.max_image_bytes)
            yield rec


def _key(root: Path, file: Path) -> str:
    try:
        return str(file.relative_to(root.resolve()).with_suffix(""))
    except ValueError:
        return str(file)


KIND = register(Kind(name="imagefolder", detect=detect, read=read, check=check,
                     label="a Hugging Face ImageFolder (images and metadata.jsonl/csv)",
                     rank=40))
