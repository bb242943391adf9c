"""Hand-made bad inputs: each function returns real bytes of one broken thing."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from pathlib import Path

from PIL import Image


def jpeg(colour: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(colour: tuple[int, int, int] = (30, 30, 200), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def webp(colour: tuple[int, int, int] = (30, 200, 30), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "WEBP")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A tiny file whose header claims 1.6 gigapixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(
        b"IEND", b"")


def corrupt_png_body() -> bytes:
    """Valid header and end marker, garbage pixel data: passes the header probe, fails decode."""
    ihdr = struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"not zlib data" * 9) \
        + _chunk(b"IEND", b"")


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            add(tar, name, data)
    return path


def bad_shard(path: Path) -> tuple[Path, dict[str, str]]:
    """A plain webdataset tar with one sample per kind of bad input, plus two good ones.

    Returns the path and {key: expected error code} ("" for samples that must be ok).
    """
    good = jpeg()
    members = [
        ("good1.jpg", good), ("good1.txt", b"a red square"),
        ("trunc.jpg", good[: len(good) // 2]), ("trunc.txt", b"a red square, cut short"),
        ("junk.jpg", b"this is not an image at all" * 4), ("junk.txt", b"junk bytes"),
        ("zero.jpg", b""), ("zero.txt", b"a zero-byte image"),
        ("nocap.png", png()),
        ("noimg.txt", b"a caption whose image is missing"),
        ("empty.jpg", jpeg((1, 2, 3))), ("empty.txt", b"  \n"),
        ("latin.jpg", jpeg((4, 5, 6))), ("latin.txt", "caf\u00e9 au lait".encode("latin-1")),
        ("bomb.png", bomb_png()), ("bomb.txt", b"a huge image"),
        ("dup.jpg", jpeg((7, 8, 9))), ("dup.txt", b"first of two with this key"),
        ("good2.webp", webp()), ("good2.json", b'{"caption": "a green square", "url": "u"}'),
        ("dup.jpg", jpeg((10, 11, 12))), ("dup.txt", b"second of two with this key"),
    ]
    expected = {"good1": "", "trunc": "truncated_image", "junk": "undecodable_image",
                "zero": "empty_image", "nocap": "missing_caption", "noimg": "missing_image",
                "empty": "empty_caption", "latin": "caption_not_utf8",
                "bomb": "decompression_bomb", "good2": "", "dup": "duplicate_key"}
    return write_tar(path, members), expected


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
