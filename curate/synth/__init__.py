"""The synthetic pool: rendered scenes of shapes with captions (``synth.scenes``), known
defects and ground truth.

Writes img2dataset's layout (``00000.tar`` + ``00000.parquet`` + ``00000_stats.json``) and a
``truth.parquet`` beside it, so every scorer can be measured against labels it never saw.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import random
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from curate.files import atomic_path
from curate.synth.scenes import (
    BACKGROUNDS,
    COLOURS,
    COUNT_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    SYNTH_VERSION,
    Scene,
    abstract_caption,
    caption_for,
    clean_pairs,
    encode,
    random_scene,
    render,
)

__all__ = ["BACKGROUNDS", "COLOURS", "COUNT_WORDS", "POSITIONS", "SHAPES", "SIZES",
           "SYNTH_VERSION", "Defects", "Scene", "abstract_caption", "caption_for",
           "clean_pairs", "encode", "make_pool", "random_scene", "render"]


@dataclass(frozen=True)
class Defects:
    """Shares of samples that carry each known defect (the rest are clean)."""

    mismatched: float = 0.10
    abstract: float = 0.05
    near_duplicate: float = 0.05
    exact_duplicate: float = 0.03
    corrupt: float = 0.02
    odd_image: float = 0.02
    empty_caption: float = 0.02
    failed_download: float = 0.01


def _near_duplicate(img: Image.Image, rng: random.Random) -> tuple[Image.Image, int]:
    """A re-encoded, resized or slightly cropped copy (quality returned with it)."""
    kind = rng.choice(("reencode", "resize", "crop"))
    w, h = img.size
    if kind == "resize":
        img = img.resize((int(w * 1.25), int(h * 1.25)), Image.Resampling.BICUBIC)
    elif kind == "crop":
        d = max(1, w // 32)  # a slight crop
        img = img.crop((d, d, w - d, h - d)).resize((w, h), Image.Resampling.BICUBIC)
    return img, rng.choice((60, 70, 80))


def _odd(size: int, rng: random.Random) -> Image.Image:
    """An image unlike any scene: noise, a blank frame or stripes (typicality should flag it)."""
    kind = rng.choice(("noise", "blank", "stripes"))
    if kind == "noise":
        return Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    if kind == "blank":
        return Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for x in range(0, size, 4):
        draw.line((x, 0, x, size), fill=tuple(rng.randrange(256) for _ in range(3)), width=2)
    return img


def _corrupt(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(("truncated", "garbage", "zero_bytes"))
    if kind == "truncated":
        return data[: len(data) * 3 // 5], kind
    if kind == "garbage":
        return bytes(rng.getrandbits(8) for _ in range(500)), kind
    return b"", kind


def make_pool(out: str | Path, n: int = 2000, seed: int = 0, shard_size: int = 500,
              size: int = 64, image_format: str = "jpg", defects: Defects = Defects()) -> Path:
    """Write ``n`` samples in img2dataset's layout under ``out`` plus ``truth.parquet``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: list[dict] = []
    images: dict[str, tuple[Image.Image, bytes, Scene, str]] = {}  # clean originals, by key
    keys: list[str] = []  # of images, sorted (not re-sorted per duplicate: n log n each)
    used: set[tuple[str, str]] = set()
    cuts = _cumulative(defects)
    for i in range(n):
        shard, idx = divmod(i, shard_size)
        key = f"{shard:05d}{idx:04d}"
        scene = random_scene(rng)
        defect = _pick(cuts, rng.random())
        img = render(scene, rng, size)
        data = encode(img, image_format)
        caption = caption_for(scene, rng)
        row = dict(key=key, shard=f"{shard:05d}", defect=defect or "none", mismatched=False,
                   abstract=False, odd_image=False, duplicate_of=None, duplicate_kind=None,
                   corrupt=False,
                   corrupt_kind=None, empty_caption=False, failed_download=False,
                   **asdict(scene), true_caption=caption)
        if defect in ("near_duplicate", "exact_duplicate") and images:
            src_key = rng.choice(keys)
            src_img, src_data, scene, src_caption = images[src_key]
            row.update(asdict(scene), duplicate_of=src_key, duplicate_kind=defect[:-10])
            caption = caption_for(scene, rng)
            for attempt in range(100):  # a new phrasing: identical pairs are not made
                if (src_key, caption) not in used and caption != src_caption:
                    break
                caption = caption_for(scene, rng) + "." * (attempt // 20)
            used.add((src_key, caption))
            row["true_caption"] = caption
            if defect == "exact_duplicate":
                data = src_data
            else:
                img, quality = _near_duplicate(src_img, rng)
                data = encode(img, image_format, quality)
        elif defect == "mismatched":
            other = random_scene(rng)
            while (other.shape, other.colour) == (scene.shape, scene.colour):
                other = random_scene(rng)
            caption, row["mismatched"] = caption_for(other, rng), True
        elif defect == "abstract":
            caption, row["abstract"] = abstract_caption(rng), True
        elif defect == "corrupt":
            data, row["corrupt_kind"] = _corrupt(data, rng)
            row["corrupt"] = True
        elif defect == "odd_image":
            img, row["odd_image"] = _odd(size, rng), True
            data = encode(img, image_format)
        elif defect == "empty_caption":
            caption, row["empty_caption"] = rng.choice(("", "   ")), True
        elif defect == "failed_download":
            row["failed_download"] = True
        if defect in (None, "mismatched", "abstract"):
            images[key] = (img, data, scene, row["true_caption"])
            bisect.insort(keys, key)  # sorted, as rng.choice has always seen them
        row.update(caption=caption, image=data,
                   expected_status="failed" if row["corrupt"] or row["empty_caption"]
                   or row["failed_download"] else "ok")
        rows.append(row)
    for start in range(0, n, shard_size):
        _write_shard(out, rows[start:start + shard_size], image_format, seed)
    truth = [{k: v for k, v in r.items() if k != "image"} for r in rows]
    with atomic_path(out / "truth.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(truth), tmp)
    return out


def _cumulative(defects: Defects) -> list[tuple[float, str]]:
    acc, cuts = 0.0, []
    for name, share in asdict(defects).items():
        acc += share
        cuts.append((acc, name))
    if acc > 1:
        raise ValueError(f"defect shares add up to {acc:.2f}; they must be at most 1")
    return cuts


def _pick(cuts: list[tuple[float, str]], u: float) -> str | None:
    return next((name for cut, name in cuts if u < cut), None)


def _write_shard(out: Path, rows: list[dict], fmt: str, seed: int) -> None:
    """One img2dataset shard: tar members for each download that succeeded, a parquet of
    every input row (failures included) and the stats file, written last."""
    shard = rows[0]["shard"]
    start = time.time()
    meta = []
    with atomic_path(out / f"{shard}.tar") as tmp, tarfile.open(
            tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for r in rows:
            status = "failed_to_download" if r["failed_download"] else "success"
            w = h = None
            if status == "success" and not r["corrupt"]:
                w, h = Image.open(io.BytesIO(r["image"])).size
            m = dict(url=f"https://example.com/synth/{seed}/{r['key']}.{fmt}", caption=r["caption"],
                     key=r["key"], status=status,
                     error_message="HTTP Error 404: Not Found" if r["failed_download"] else None,
                     width=w, height=h, original_width=w, original_height=h,
                     sha256=_sha256(r["image"]) if status == "success" else None)
            meta.append(m)
            if status != "success":
                continue
            _add(tar, f"{r['key']}.{fmt}", r["image"])
            _add(tar, f"{r['key']}.txt", r["caption"].encode())
            _add(tar, f"{r['key']}.json", json.dumps(m).encode())
    with atomic_path(out / f"{shard}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(meta), tmp)
    ok = sum(m["status"] == "success" for m in meta)
    stats = dict(count=len(meta), successes=ok, failed_to_download=len(meta) - ok,
                 failed_to_resize=0, duration=time.time() - start, start_time=start,
                 end_time=time.time(), status_dict={"success": ok, "failed_to_download":
                                                    len(meta) - ok})
    with atomic_path(out / f"{shard}_stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=2))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    tar.addfile(info, io.BytesIO(data))
