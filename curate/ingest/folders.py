"""Folders of images, each captioned by a same-named ``.txt`` beside it (``cat.jpg`` and
``cat.txt``), searched recursively; the key is the path inside the folder without extension.
Asked last: any folder that holds no shards is read as one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curate.errors import CurateError
from curate.images import IMAGE_EXTS
from curate.ingest.kinds import (
    Kind,
    Options,
    Record,
    Source,
    load_file,
    read_capped,
    readable,
    register,
)


def check(source: Source, options: Options) -> None:
    """The folder holds an image or a caption somewhere (else it is nothing curate reads)."""
    if not any(p.suffix.lower().lstrip(".") in (*IMAGE_EXTS, "txt")
               for p in Path(source.path).rglob("*") if p.is_file()):
        raise CurateError(f"{source.path}: a folder with no images, captions or sources in "
                          f"it; curate reads: {readable()}")


def read(source: Source, options: Options) -> Iterator[Record]:
    root = Path(source.path)
    images: dict[str, list[Path]] = {}
    captions: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        ext = p.suffix.lower().lstrip(".")
        stem = str(p.relative_to(root).with_suffix(""))
        if p.is_dir():  # a FIFO or device named like an image is a failed row (load_file)
            continue
        if ext == "txt":
            captions[stem] = p
        elif ext in IMAGE_EXTS:
            images.setdefault(stem, []).append(p)
    limit = options.max_image_bytes
    for stem in sorted(set(images) | set(captions)):
        caption, why = (read_capped(captions[stem], limit, "caption") if stem in captions
                        else (None, None))
        for i, file in enumerate(images.get(stem, [None])):
            rec = Record(stem, source.path, source.kind, caption=caption)
            if why:
                rec.errors.append(why)
            if file is None:
                rec.errors.append("missing_image: a caption file with no image beside it")
            else:
                load_file(rec, file, limit)
            if i:
                rec.errors.append(f"duplicate_key: another image is also named {stem}.*")
            yield rec


KIND = register(Kind(name="folder", detect=Path.is_dir, read=read, check=check,
                     label="a folder of images", rank=90))
