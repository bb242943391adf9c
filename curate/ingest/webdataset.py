"""Plain webdataset tars, ``.tar.gz`` too: members grouped by key (``0001.jpg``,
``0001.txt``, ``0001.json``), the caption in ``.txt``, else in the ``.json``'s ``caption``, else
its ``text`` (DataComp's shards), or in the ``.json`` field ``--caption-column`` names. The
images of a plain tar are read in place; those of a compressed one are copied into the
workspace at ingest (a gzip member has no byte range to point at). img2dataset's reader
reuses ``records`` and ``check``, adding its parquet.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from curate.errors import CurateError
from curate.images import IMAGE_EXTS
from curate.ingest.kinds import MAX_IMAGE_BYTES, Kind, Options, Record, Source, register

# img2dataset's per-sample fields (in its parquet, and in each sample's .json) -> columns
META_COLUMNS = {"url": "url", "key": "orig_key", "width": "width_i2d", "height": "height_i2d",
                "original_width": "orig_width", "original_height": "orig_height",
                "sha256": "sha256", "status": "download_status",
                "error_message": "download_error"}


TAR_EXTS = (".tar", ".tar.gz", ".tgz")


def is_tar(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TAR_EXTS)


def _mode(path: str) -> str:
    return "r:" if path.lower().endswith(".tar") else "r:gz"


def check(source: Source, options: Options, empty: bool = False) -> None:
    """The tar opens and its first header reads (an empty tar is refused unless ``empty``:
    on its own it holds nothing)."""
    try:
        with tarfile.open(source.path, _mode(source.path)) as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CurateError(f"{source.path}: cannot read as a tar ({e})") from None
    if first is None and not empty:
        raise CurateError(f"{source.path}: an empty tar, no samples in it")


def read(source: Source, options: Options) -> Iterator[Record]:
    return records(source, {}, options)


def records(source: Source, rows: dict[str, dict],
            options: Options | None = None) -> Iterator[Record]:
    """The samples of a tar with their metadata: the row of ``rows`` with the sample's key
    (popped, so the rows left after are those with no sample in the tar), else its .json."""
    named = options.caption_col if options else None
    cap = options.max_image_bytes if options else MAX_IMAGE_BYTES
    for rec in _groups(source, cap):
        describe(rec, rec.meta.pop("_json", None), rows, named)
        yield rec


def describe(rec: Record, raw: bytes | None, rows: dict[str, dict], named: str | None) -> None:
    """Fill ``rec``'s caption (unless a .txt gave one: from the .json's field ``named``, else
    its ``caption``, else its ``text``) and metadata (its row of ``rows``, popped, else the
    .json) from the sample's .json bytes ``raw``."""
    info: dict = {}
    if raw is not None:
        try:
            info = json.loads(raw)
            info = info if isinstance(info, dict) else {}
        except (ValueError, UnicodeDecodeError):
            rec.errors.append("bad_json: the .json member is not valid JSON")
    used = named if named in info else None if named else next(
        (c for c in ("caption", "text") if c in info), None)
    if used is not None and (named or rec.caption is None) and info[used] is not None:
        value = info[used]
        if isinstance(value, (list, dict)):
            rec.errors.append(f"bad_caption: the .json's {used} is a {type(value).__name__}")
        else:
            rec.caption = value.encode() if isinstance(value, str) else str(value).encode()
    row = rows.pop(rec.key, None) or info
    rec.meta.update(meta(row))
    rec.meta["extra"] = {k: v for k, v in info.items() if k not in META_COLUMNS
                         and k != used} or None


def meta(row: dict) -> dict:
    """The known metadata fields of ``row`` under their column names."""
    return {new: row.get(old) for old, new in META_COLUMNS.items() if old in row}


def _split(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is everything before the first dot of the basename."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else (name, "")


def _groups(source: Source, cap: int = MAX_IMAGE_BYTES) -> Iterator[Record]:
    """Group consecutive tar members by key, as webdataset does; a truncated tar ends the
    iteration with an error on the sample it cut. A member over ``cap`` bytes (its header
    says how many) is never read: the sample gets ``image_too_large`` (or
    ``caption_too_large``, ``metadata_too_large`` for its text or .json)."""
    gz = _mode(source.path) == "r:gz"
    try:
        tar = tarfile.open(source.path, _mode(source.path))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CurateError(f"{source.path}: cannot read as a tar ({e})") from None
    cur: Record | None = None
    seen: set[str] = set()
    with tar:
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, OSError) as e:
                if cur is None:
                    cur = Record("", source.path, source.kind)
                cur.errors.append(f"truncated_tar: {e}")
                break
            if member is None:
                tail = None if gz else _tail_error(source.path, tar.offset)
                if tail:
                    if cur is not None:
                        yield cur
                    cur = Record(f"@{tar.offset}", source.path, source.kind, errors=[tail])
                break
            if not member.isfile():
                continue
            key, ext = _split(member.name)
            field_ = ("image" if ext in IMAGE_EXTS else ext if ext in ("txt", "json")
                      else None)
            if cur is not None and (key != cur.key or (field_ and _has(cur, field_))):
                yield cur
                cur = None
            if cur is None:
                cur = Record(key, source.path, source.kind)
                if key in seen:
                    cur.errors.append(f"duplicate_key: key {key!r} appears again in the tar")
                seen.add(key)
            if field_ is None:
                continue
            if member.size > cap:
                what = {"image": "image", "txt": "caption"}.get(field_, "metadata")
                cur.errors.append(f"{what}_too_large: {member.name} is {member.size} bytes, "
                                  f"over the cap of {cap}")
                continue
            try:
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise EOFError("member shorter than its header says")
            except (tarfile.TarError, EOFError, OSError) as e:
                cur.errors.append(f"truncated_tar: {member.name}: {e}")
                break
            _put(cur, field_, data, member, gz)
    if cur is not None:
        yield cur


def _tail_error(path: str, offset: int) -> str | None:
    """tarfile stops quietly at a cut header; bytes after the last member that are not the
    zero end-of-archive blocks mean the tar was truncated."""
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read(1 << 20)
    if tail.strip(b"\0"):
        return f"truncated_tar: {len(tail)} unreadable bytes after the last member at {offset}"
    if len(tail) < 1024:
        return "truncated_tar: no end-of-archive blocks after the last member"
    return None


def _has(rec: Record, field_: str) -> bool:
    return {"image": rec.image, "txt": rec.caption, "json": rec.meta.get("_json")}[
        field_] is not None


def _put(rec: Record, field_: str, data: bytes, member: tarfile.TarInfo, gz: bool) -> None:
    if field_ == "image" and gz:  # no byte range in the file: copied at ingest
        rec.image, rec.image_length, rec.store = data, member.size, True
    elif field_ == "image":
        rec.image, rec.image_path = data, rec.source
        rec.image_offset, rec.image_length = member.offset_data, member.size
    elif field_ == "txt":
        rec.caption = data
    else:
        rec.meta["_json"] = data


KIND = register(Kind(name="webdataset", detect=is_tar, read=read, check=check,
                     label="a webdataset tar", rank=20, shards=True))
