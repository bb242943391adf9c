"""Tables (Parquet, CSV, TSV) with one row per sample: a column of image paths (relative to
the table) or URLs and a column of captions, found by name or given by the user; the other
columns are kept as the sample's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.images import fetch_url, is_url
from curate.ingest.kinds import Kind, Options, Record, Source, load_file, register

TABLE_EXTS = (".parquet", ".csv", ".tsv")
IMAGE_COLUMNS = ("image_path", "image", "path", "filepath", "file", "url", "image_url")
CAPTION_COLUMNS = ("caption", "text", "alt", "txt", "title")


def detect(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TABLE_EXTS)


def check(source: Source, options: Options) -> None:
    """The table opens and has an image and a caption column."""
    _columns(source, _open(Path(source.path)).column_names, options)


def read(source: Source, options: Options) -> Iterator[Record]:
    path = Path(source.path)
    table = _open(path)
    image_col, caption_col = _columns(source, table.column_names, options)
    key_col = options.key_col
    rows = table.to_pylist()
    width = len(str(len(rows)))
    for i, row in enumerate(rows):
        key = str(row[key_col]) if key_col and row.get(key_col) is not None else str(i).zfill(width)
        rec = Record(key, source.path, source.kind)
        cap = row.get(caption_col)
        rec.caption = cap.encode() if isinstance(cap, str) else cap
        extra = {k: v for k, v in row.items() if k not in (image_col, caption_col)}
        rec.meta["extra"] = json.loads(json.dumps(extra, default=str)) or None
        ref = row.get(image_col)
        if not ref:
            rec.errors.append("missing_image: empty image column")
        elif is_url(str(ref)):
            rec.image_path, rec.meta["url"] = str(ref), str(ref)
            try:
                rec.image = fetch_url(str(ref))
                rec.image_length = len(rec.image)
            except (OSError, ValueError) as e:
                rec.errors.append(f"download_failed: {e}")
        else:
            load_file(rec, (path.parent / str(ref)).resolve())
        yield rec


def _open(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        delimiter = "\t" if path.suffix == ".tsv" else ","
        return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the table ({e})") from None


def _columns(source: Source, names: list[str], options: Options) -> tuple[str, str]:
    image_col = options.image_col or next((c for c in IMAGE_COLUMNS if c in names), None)
    caption_col = options.caption_col or next((c for c in CAPTION_COLUMNS if c in names), None)
    for what, col in (("image", image_col), ("caption", caption_col)):
        if col not in names:
            raise CurateError(f"{source.path}: no {what} column (have {', '.join(names)}); "
                              f"name it with --{what}-column")
    return image_col, caption_col


KIND = register(Kind(name="table", detect=detect, read=read, check=check,
                     label="a .parquet/.csv/.tsv table", rank=30))
