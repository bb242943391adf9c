"""COCO captions files (``captions_train2017.json``): ``images`` and ``annotations``; one
sample per caption, the image shared (read in place), keyed by the annotation id, with
``image_id`` and ``annotation_id`` kept as columns. Images are looked for under
``--image-root``, else beside the file, in ``images/``, or in the split's folder
(``../train2017/``); an image with no caption is a row too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from curate.errors import CurateError
from curate.ingest.kinds import Kind, Options, Record, Source, load_file, register


def detect(path: Path) -> bool:
    if not (path.is_file() and path.name.lower().endswith(".json")):
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return b'"images"' in head and (b'"annotations"' in head or b'"info"' in head
                                     or b'"licenses"' in head)


def _load(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CurateError(f"{path}: cannot read the COCO file ({e})") from None
    if not (isinstance(data, dict) and isinstance(data.get("images"), list)
            and isinstance(data.get("annotations"), list)):
        raise CurateError(f"{path}: not a COCO captions file (no images and annotations lists)")
    return data


def check(source: Source, options: Options) -> None:
    _load(Path(source.path))


def _root(path: Path, images: list[dict], options: Options) -> Path:
    """Where the images are: the first candidate folder holding the first image."""
    if options.image_root:
        return Path(options.image_root)
    split = re.sub(r"^(captions|instances|person_keypoints)_", "", path.stem)
    here = path.parent
    candidates = [here, here / "images", here.parent / split, here / split, here.parent,
                  here.parent / "images", here.parent / "images" / split]
    first = next((str(i["file_name"]) for i in images if i.get("file_name")), None)
    if first is not None:
        for c in candidates:
            if (c / first).is_file():
                return c
    return here


def read(source: Source, options: Options) -> Iterator[Record]:
    path = Path(source.path)
    data = _load(path)
    images = {i.get("id"): i for i in data["images"]}
    root = _root(path, data["images"], options)
    captioned = set()
    for ann in data["annotations"]:
        image = images.get(ann.get("image_id"))
        rec = Record(str(ann.get("id")), source.path, source.kind)
        caption = ann.get("caption")
        rec.caption = caption.encode() if isinstance(caption, str) else None
        extra = {k: v for k, v in (image or {}).items() if k != "id"}
        extra.update(image_id=ann.get("image_id"), annotation_id=ann.get("id"))
        rec.meta["extra"] = extra
        if image is None:
            rec.errors.append(f"missing_image: image_id {ann.get('image_id')} is not in images")
        else:
            captioned.add(ann.get("image_id"))
            _load_image(rec, root, image, options.max_image_bytes)
        yield rec
    for image_id, image in images.items():
        if image_id not in captioned:
            rec = Record(f"image-{image_id}", source.path, source.kind)
            rec.meta["extra"] = {**{k: v for k, v in image.items() if k != "id"},
                                 "image_id": image_id}
            _load_image(rec, root, image, options.max_image_bytes)
            yield rec


def _load_image(rec: Record, root: Path, image: dict, limit: int) -> None:
    if image.get("coco_url"):
        rec.meta["url"] = image["coco_url"]
    if not image.get("file_name"):
        rec.errors.append("missing_image: no file_name for this image")
        return
    load_file(rec, (root / str(image["file_name"])).resolve(), limit)


KIND = register(Kind(name="coco", detect=detect, read=read, check=check,
                     label="a COCO captions .json", rank=35))
