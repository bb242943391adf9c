"""img2dataset shards in its ``files`` output format: a folder ``00000/`` of ``KEY.jpg``,
``KEY.txt`` and ``KEY.json`` beside ``00000.parquet`` (and ``00000_stats.json``). Images are
read in place; the parquet gives every input's url, sha256 and status, so the inputs whose
download failed are rows too, and a sample whose files have no row keeps its ``.json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curate.images import IMAGE_EXTS
from curate.ingest import img2dataset, webdataset
from curate.ingest.kinds import Kind, Options, Record, Source, load_file, register


def detect(path: Path) -> bool:
    return path.is_dir() and path.with_name(path.name + ".parquet").is_file()


def sidecar(path: Path) -> bool:
    """A shard's parquet (beside its folder) or its stats."""
    name = path.name
    if name.endswith("_stats.json"):
        return (path.parent / name[: -len("_stats.json")]).is_dir()
    return name.endswith(".parquet") and (path.parent / name[: -len(".parquet")]).is_dir()


def check(source: Source, options: Options) -> None:
    img2dataset.rows(Path(source.path + ".parquet"))


def read(source: Source, options: Options) -> Iterator[Record]:
    folder = Path(source.path)
    by_key = img2dataset.rows(Path(source.path + ".parquet"))
    files: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        key, _, ext = p.name.partition(".")
        if p.is_file():
            files.setdefault(key, {})[ext.lower()] = p
    for key, found in files.items():
        rec = Record(key, source.path, source.kind)
        images = [p for ext, p in found.items() if ext in IMAGE_EXTS]
        if images:
            load_file(rec, images[0], options.max_image_bytes)
        if "txt" in found:
            rec.caption = found["txt"].read_bytes()
        raw = found["json"].read_bytes() if "json" in found else None
        webdataset.describe(rec, raw, by_key, options.caption_col)
        yield rec
    yield from img2dataset.leftovers(source, by_key, "in the folder")


KIND = register(Kind(name="img2dataset_files", detect=detect, read=read, check=check,
                     label="an img2dataset files shard (a folder beside its .parquet)",
                     rank=12, shards=True, sidecar=sidecar))
