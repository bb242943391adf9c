"""One sample per row of Arrow record batches: what every table-like kind shares (plain
tables, Hugging Face parquet and ``save_to_disk`` folders, img2dataset parquet, Lance).

The image cell is bytes (a binary column, or a Hugging Face ``Image`` struct of ``bytes`` and
``path``: copied into the workspace at ingest), a path (relative to the table, or to
``--image-root``: read in place) or a URL (fetched once, here, in parallel: ``fetch``). The
other cells become the sample's metadata; a binary cell is never stringified there, only its
length is kept.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pyarrow as pa

from curate.errors import CurateError
from curate.ingest.fetch import FetchConfig, fetch_all
from curate.ingest.kinds import Options, Record, Source, load_file
from curate.ingest.webdataset import META_COLUMNS, meta

IMAGE_COLUMNS = ("image_path", "image", "path", "filepath", "file", "url", "image_url")
BYTES_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "img", "image_bytes", "bytes")
CAPTION_COLUMNS = ("caption", "text", "alt", "txt", "title", "TEXT", "sentence",
                   "prompt", "description")
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # fetched (http, https) or refused; file:// read


def parquet_schema(path: Path) -> pa.Schema | None:
    """A Parquet file's schema, or None when it is not one (for a kind's ``detect``)."""
    import pyarrow.parquet as pq
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError):
        return None


def is_bytes(t: pa.DataType) -> bool:
    """A column of image bytes: binary, or a struct with a binary ``bytes`` field (HF Image)."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return True
    return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and is_bytes(
        t.field("bytes").type)


def find_columns(source: Source, schema: pa.Schema, options: Options) -> tuple[str, str]:
    """The image and caption columns: named by the user, else found (a bytes column by name,
    a path or URL column by name, any bytes column), else one line saying how."""
    names = schema.names
    blobs = [n for n in names if is_bytes(schema.field(n).type)]
    image_col = (options.image_col or next((c for c in BYTES_COLUMNS if c in blobs), None)
                 or next((c for c in IMAGE_COLUMNS if c in names), None)
                 or (blobs[0] if blobs else None))
    caption_col = options.caption_col or next((c for c in CAPTION_COLUMNS if c in names), None)
    for what, col in (("image", image_col), ("caption", caption_col)):
        if col not in names:
            hint = "" if options.columns else (
                "; a table with no header row: name its columns with --columns")
            raise CurateError(f"{source.path}: no {what} column (have {', '.join(names)}); "
                              f"name it with --{what}-column{hint}")
    return image_col, caption_col


def plain(value: object) -> object:
    """``value`` as JSON can hold it; binary becomes its length, never its bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def text(value: object) -> bytes | None:
    """A caption cell as bytes (a list or struct: None, and ``_build`` says why)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (list, dict)):
        return None
    return value.encode() if isinstance(value, str) else str(value).encode()


def records(source: Source, batches: Iterable[pa.RecordBatch], image_col: str,
            caption_col: str, options: Options, total: int, base: Path,
            key_col: str | None = None, drop_known: bool = True,
            hook: Callable[[Record, dict], None] | None = None) -> Iterator[Record]:
    """Every row as a record, in order; URLs fetched in parallel. ``key_col`` (else the row
    number, zero-padded to ``total``'s width) keys the rows; ``drop_known`` leaves the fields
    that have columns of their own out of the metadata; ``hook(rec, row)`` adds a kind's own
    fields or errors (a record with an error by then is not given an image)."""
    key_col = options.key_col or key_col
    width = len(str(total))
    rows = (row for b in batches for row in b.to_pylist())
    built = (_build(source, i, row, image_col, caption_col, key_col, width, base, drop_known,
                    hook, options.max_image_bytes) for i, row in enumerate(rows))
    mine, theirs = itertools.tee(built)
    config = options.fetch if isinstance(options.fetch, FetchConfig) else FetchConfig()
    for (rec, url), (data, why) in zip(mine, fetch_all((u for _, u in theirs), config),
                                       strict=True):
        if url is None:
            yield rec
            continue
        if data is None:
            rec.errors.append(f"failed_to_download: {why}")
            rec.meta["download_status"] = "failed_to_download"
        else:
            rec.image, rec.image_length, rec.store = data, len(data), True
            rec.meta["download_status"] = "success"
            rec.meta.setdefault("sha256", hashlib.sha256(data).hexdigest())
        yield rec


def _build(source: Source, i: int, row: dict, image_col: str, caption_col: str,
           key_col: str | None, width: int, base: Path, drop_known: bool,
           hook: Callable[[Record, dict], None] | None,
           limit: int) -> tuple[Record, str | None]:
    """A row's record, and the URL still to fetch for it (or None)."""
    key = row.get(key_col) if key_col else None
    rec = Record(str(key) if key is not None else str(i).zfill(width), source.path,
                 source.kind, caption=text(row.get(caption_col)))
    known = META_COLUMNS if drop_known else {}
    extra = {k: plain(v) for k, v in row.items()
             if k not in (image_col, caption_col) and k not in known}
    rec.meta.update({k: v for k, v in meta(row).items() if v is not None})
    rec.meta["extra"] = extra or None
    if hook is not None:
        hook(rec, row)
    if rec.errors:
        return rec, None
    if isinstance(row.get(caption_col), (list, dict)):  # after the hook's check: image kept
        rec.errors.append(f"bad_caption: a {type(row.get(caption_col)).__name__}, not text")
    cell = row.get(image_col)
    if isinstance(cell, dict):  # a Hugging Face Image: bytes, else a path
        cell = cell.get("bytes") if cell.get("bytes") is not None else cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        rec.image, rec.image_length, rec.store = bytes(cell), len(cell), True
    elif not cell:
        rec.errors.append("missing_image: empty image column")
    elif URL.match(str(cell)):
        url = str(cell)
        rec.meta["url"] = url
        if not url.startswith("file://"):
            return rec, url
        load_file(rec, Path(url2pathname(urlsplit(url).path)), limit)
        rec.errors = [e.replace("missing_image", "failed_to_download", 1) for e in rec.errors]
    else:
        load_file(rec, (base / str(cell)).resolve(), limit)
    return rec, None
