"""Pure image helpers: header probes without a full decode, byte access by reference, decoding.

An image is referenced by (path or URL, byte offset, byte length): a member inside a tar, a
whole file, or a URL; its bytes are read back on demand and never copied into the workspace.
"""

from __future__ import annotations

import io
import os
import re
import stat
import urllib.request
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # PIL's decompression-bomb limit
URL_SCHEMES = ("http://", "https://", "file://")


@dataclass(frozen=True)
class Probe:
    """What the header says, or why the image is unusable (``error`` is ``code: detail``)."""

    format: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def probe(data: bytes, max_pixels: int = MAX_PIXELS, verify: bool = False) -> Probe:
    """Read format and size from the header; flag empty, undecodable, truncated and bomb images.

    Truncation is found without decoding from the format's end marker (JPEG EOI after the last
    scan, PNG IEND, the RIFF length of WebP). ``verify`` adds a full decode.
    """
    if not data:
        return Probe(error="empty_image: zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt, (w, h) = (img.format or "unknown").lower(), img.size
    except Image.DecompressionBombError as e:
        return Probe(error=f"decompression_bomb: {e}")
    except Exception as e:  # PIL raises many types for bad headers
        fmt = _sniff(data)
        if fmt and _truncated(data, fmt):
            return Probe(fmt, error=f"truncated_image: {fmt} data ends inside its header")
        return Probe(error=decode_error(e))
    if w * h > max_pixels:
        return Probe(fmt, w, h, f"decompression_bomb: {w}x{h} exceeds {max_pixels} pixels")
    if _truncated(data, fmt):
        return Probe(fmt, w, h, f"truncated_image: {fmt} data ends before its end marker")
    if verify:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
        except Exception as e:
            return Probe(fmt, w, h, decode_error(e))
    return Probe(fmt, w, h)


_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png", b"GIF8": "gif"}


def decode_error(e: Exception) -> str:
    """The ``undecodable_image`` error of an exception, on one line and the same in every run
    (PIL names the ``BytesIO`` it read by its memory address: left out)."""
    text = re.sub(r" <[^<>]* at 0x[0-9a-fA-F]+>", "", f"{type(e).__name__}: {e}")
    return f"undecodable_image: {text}".splitlines()[0]


def _sniff(data: bytes) -> str | None:
    """The format by magic bytes, for files too damaged for PIL to open."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((f for magic, f in _MAGIC.items() if data.startswith(magic)), None)


def _truncated(data: bytes, fmt: str) -> bool:
    if fmt == "jpeg":
        sos = data.rfind(b"\xff\xda")
        return sos < 0 or data.find(b"\xff\xd9", sos) < 0
    if fmt == "png":
        return data.rfind(b"IEND") < 0
    if fmt == "webp":
        return len(data) < int.from_bytes(data[4:8], "little") + 8
    if fmt == "gif":
        return not data.rstrip(b"\x00").endswith(b";")
    return False


def is_url(ref: str) -> bool:
    return ref.startswith(URL_SCHEMES)


def fetch_url(url: str, timeout: float = 10.0) -> bytes:
    """Fetch an image URL once (no retries); raises ``OSError`` on failure."""
    req = urllib.request.Request(url, headers={"User-Agent": "curate"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


_FDS: OrderedDict[str, tuple[int, tuple[int, int]]] = OrderedDict()


def _fd(path: str) -> int:
    """A cached read-only descriptor (the 32 most recent files stay open), good while the
    path still names the file it was opened on: each read stats the path first, so a file
    moved away fails and one restored or replaced is opened anew, and a FIFO or device is
    refused before it is opened (it could block or never end)."""
    st = os.stat(path)  # FileNotFoundError when it is gone, like open
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path}: not a regular file")
    cached = _FDS.pop(path, None)
    if cached is not None and cached[1] != (st.st_dev, st.st_ino):
        os.close(cached[0])
        cached = None
    if cached is None:
        cached = (os.open(path, os.O_RDONLY), (st.st_dev, st.st_ino))
        if len(_FDS) >= 32:
            os.close(_FDS.popitem(last=False)[1][0])
    _FDS[path] = cached
    return cached[0]


def read_bytes(path: str, offset: int, length: int) -> bytes:
    """The referenced bytes: a slice of a local file (tar member or whole file) or a URL."""
    if is_url(path):
        return fetch_url(path)
    data = os.pread(_fd(path), length, offset)  # no shared offset: safe across forked workers
    if len(data) != length:
        raise OSError(f"{path}: expected {length} bytes at offset {offset}, got {len(data)}")
    return data


def decode_rgb(data: bytes) -> Image.Image:
    """Fully decode to RGB (raises on corrupt data; the caller records the error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = Image.open(io.BytesIO(data))
        img.load()
    return img.convert("RGB")
