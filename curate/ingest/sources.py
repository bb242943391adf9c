"""Readers for each kind of source; each yields one ``Record`` per input sample, bad ones too.

Kinds: img2dataset shards (tar + parquet + stats), plain webdataset tars, Parquet/CSV tables
with an image path or URL column, and folders of images with same-named ``.txt`` captions.
Only a source that cannot be read at all raises ``CurateError``.
"""

from __future__ import annotations

import glob as globlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.images import IMAGE_EXTS, fetch_url, is_url

TABLE_EXTS = (".parquet", ".csv", ".tsv")
IMAGE_COLUMNS = ("image_path", "image", "path", "filepath", "file", "url", "image_url")
CAPTION_COLUMNS = ("caption", "text", "alt", "txt", "title")
I2D_COLUMNS = {"url": "url", "key": "orig_key", "width": "width_i2d", "height": "height_i2d",
               "original_width": "orig_width", "original_height": "orig_height",
               "sha256": "sha256", "status": "download_status", "error_message": "download_error"}


@dataclass
class Record:
    """One input sample as found in its source, before validation."""

    key: str
    source: str
    kind: str
    image_path: str | None = None
    image_offset: int = 0
    image_length: int = 0
    image: bytes | None = None
    caption: bytes | None = None
    meta: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # img2dataset | webdataset | table | folder


def expand(patterns: list[str]) -> list[Source]:
    """Resolve files, globs, brace patterns and folders into sources of a detected kind."""
    sources: list[Source] = []
    for pattern in patterns:
        names = _braces(pattern)
        for name in names:
            hits = sorted(globlib.glob(name)) if globlib.has_magic(name) else [name]
            if not hits:
                raise CurateError(f"{name}: no file matches")
            for hit in hits:
                sources.extend(_detect(Path(hit), in_glob=len(hits) > 1 or len(names) > 1))
    seen: set[str] = set()
    return [s for s in sources if not (s.path in seen or seen.add(s.path))]


def _braces(pattern: str) -> list[str]:
    """Expand ``{00000..00009}`` ranges (zero padding kept) and ``{a,b}`` lists."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body, out = m.group(1), []
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    items = ([str(i).zfill(len(rng.group(1))) for i in range(int(rng.group(1)),
                                                            int(rng.group(2)) + 1)]
             if rng else body.split(","))
    for item in items:
        out.extend(_braces(pattern[: m.start()] + item + pattern[m.end():]))
    return out


def _detect(path: Path, in_glob: bool) -> list[Source]:
    if not path.exists():
        raise CurateError(f"{path}: no such file or folder")
    if path.is_dir():
        tars = sorted(path.glob("*.tar"))
        if tars:
            return [_tar_source(t) for t in tars]
        return [Source(str(path.resolve()), "folder")]
    name = path.name.lower()
    if name.endswith(".tar"):
        return [_tar_source(path)]
    if in_glob and (name.endswith("_stats.json") or path.with_suffix(".tar").exists()):
        return []  # an img2dataset sidecar matched by the same glob as its tar
    if name.endswith(TABLE_EXTS):
        return [Source(str(path.resolve()), "table")]
    if in_glob:
        return []
    raise CurateError(f"{path}: not a tar shard, a .parquet/.csv table or a folder")


def _tar_source(path: Path) -> Source:
    kind = "img2dataset" if path.with_suffix(".parquet").exists() else "webdataset"
    return Source(str(path.resolve()), kind)


def check(source: Source, image_col: str | None = None, caption_col: str | None = None) -> None:
    """Fail now, before anything is written, if a source cannot be read at all."""
    if source.kind in ("img2dataset", "webdataset"):
        try:
            with tarfile.open(source.path, "r:") as tar:
                tar.next()
        except (tarfile.TarError, OSError) as e:
            raise CurateError(f"{source.path}: cannot read as a tar ({e})") from None
        if source.kind == "img2dataset":
            _sidecar(source)
    elif source.kind == "table":
        _columns(source, _open_table(Path(source.path)).column_names, image_col, caption_col)


def _open_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        delimiter = "\t" if path.suffix == ".tsv" else ","
        return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the table ({e})") from None


def _columns(source: Source, names: list[str], image_col: str | None,
             caption_col: str | None) -> tuple[str, str]:
    image_col = image_col or next((c for c in IMAGE_COLUMNS if c in names), None)
    caption_col = caption_col or next((c for c in CAPTION_COLUMNS if c in names), None)
    for what, col in (("image", image_col), ("caption", caption_col)):
        if col not in names:
            raise CurateError(f"{source.path}: no {what} column (have {', '.join(names)}); "
                              f"name it with --{what}-column")
    return image_col, caption_col


def read(source: Source, image_col: str | None = None, caption_col: str | None = None,
         key_col: str | None = None) -> Iterator[Record]:
    """Every input sample of one source, in source order."""
    if source.kind in ("img2dataset", "webdataset"):
        return _read_tar(source)
    if source.kind == "table":
        return _read_table(source, image_col, caption_col, key_col)
    return _read_folder(source)


def _split(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is everything before the first dot of the basename."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else (name, "")


def _groups(source: Source) -> Iterator[Record]:
    """Group consecutive tar members by key, as webdataset does; a truncated tar ends the
    iteration with an error on the sample it cut."""
    try:
        tar = tarfile.open(source.path, "r:")
    except (tarfile.TarError, OSError) as e:
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
                tail = _tail_error(source.path, tar.offset)
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
            try:
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise EOFError("member shorter than its header says")
            except (tarfile.TarError, EOFError, OSError) as e:
                cur.errors.append(f"truncated_tar: {member.name}: {e}")
                break
            _put(cur, field_, data, member)
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
    return {"image": rec.image_path, "txt": rec.caption, "json": rec.meta.get("_json")}[
        field_] is not None


def _put(rec: Record, field_: str, data: bytes, member: tarfile.TarInfo) -> None:
    if field_ == "image":
        rec.image, rec.image_path = data, rec.source
        rec.image_offset, rec.image_length = member.offset_data, member.size
    elif field_ == "txt":
        rec.caption = data
    else:
        rec.meta["_json"] = data


def _read_tar(source: Source) -> Iterator[Record]:
    """img2dataset and plain webdataset shards; img2dataset's parquet adds its metadata and
    the rows whose download failed (they have no members in the tar)."""
    sidecar = _sidecar(source) if source.kind == "img2dataset" else {}
    for rec in _groups(source):
        raw = rec.meta.pop("_json", None)
        info: dict = {}
        if raw is not None:
            try:
                info = json.loads(raw)
                info = info if isinstance(info, dict) else {}
            except (ValueError, UnicodeDecodeError):
                rec.errors.append("bad_json: the .json member is not valid JSON")
        if rec.caption is None and isinstance(info.get("caption"), str):
            rec.caption = info["caption"].encode()
        row = sidecar.pop(rec.key, None) or info
        rec.meta.update({new: row.get(old) for old, new in I2D_COLUMNS.items() if old in row})
        rec.meta["extra"] = {k: v for k, v in info.items() if k not in I2D_COLUMNS
                             and k != "caption"} or None
        yield rec
    for key, row in sidecar.items():  # inputs img2dataset could not download
        rec = Record(key, source.path, source.kind)
        caption = row.get("caption")
        rec.caption = caption.encode() if isinstance(caption, str) else None
        rec.meta.update({new: row.get(old) for old, new in I2D_COLUMNS.items() if old in row})
        status = row.get("status") or "missing"
        rec.errors.append(f"{status}: {row.get('error_message') or 'no image in the tar'}"
                          if status != "success" else "missing_image: listed in the parquet "
                          "but not in the tar")
        yield rec


def _sidecar(source: Source) -> dict[str, dict]:
    path = Path(source.path).with_suffix(".parquet")
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the img2dataset parquet ({e})") from None
    return {str(r["key"]): r for r in rows if r.get("key") is not None}


def _read_table(source: Source, image_col: str | None, caption_col: str | None,
                key_col: str | None) -> Iterator[Record]:
    path = Path(source.path)
    table = _open_table(path)
    image_col, caption_col = _columns(source, table.column_names, image_col, caption_col)
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
            _load_file(rec, (path.parent / str(ref)).resolve())
        yield rec


def _load_file(rec: Record, file: Path) -> None:
    rec.image_path = str(file)
    try:
        rec.image = file.read_bytes()
        rec.image_length = len(rec.image)
    except OSError as e:
        rec.errors.append(f"missing_image: {e.strerror}: {file}")


def _read_folder(source: Source) -> Iterator[Record]:
    root = Path(source.path)
    images: dict[str, list[Path]] = {}
    captions: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        ext = p.suffix.lower().lstrip(".")
        stem = str(p.relative_to(root).with_suffix(""))
        if p.is_file() and ext == "txt":
            captions[stem] = p
        elif p.is_file() and ext in IMAGE_EXTS:
            images.setdefault(stem, []).append(p)
    for stem in sorted(set(images) | set(captions)):
        caption = captions[stem].read_bytes() if stem in captions else None
        for i, file in enumerate(images.get(stem, [None])):
            rec = Record(stem, source.path, source.kind, caption=caption)
            if file is None:
                rec.errors.append("missing_image: a caption file with no image beside it")
            else:
                _load_file(rec, file)
            if i:
                rec.errors.append(f"duplicate_key: another image is also named {stem}.*")
            yield rec
