"""What a source says about a sample, checked before it becomes a typed column: a sidecar or
table is input like any other, so a value out of range or of the wrong type (``original_width
= 2**40``, a list where a URL goes), a ``sha256`` that disagrees with the bytes, or an image
over the size cap is the row's error, never a traceback in the middle of a part."""

from __future__ import annotations

import hashlib
import math

SIZE_MAX = (1 << 31) - 1  # orig_width, orig_height are int32 columns
TEXT_FIELDS = ("url", "sha256", "download_status")
SIZE_FIELDS = ("orig_width", "orig_height")


def columns(meta: dict) -> tuple[dict, list[str]]:
    """The typed values of the samples columns that come from ``meta`` (``url``, ``sha256``,
    ``download_status``, ``orig_key``, ``orig_width``, ``orig_height``), and an error
    (``bad_metadata``) for each value that does not fit its column (it becomes null)."""
    out: dict = {}
    errors: list[str] = []
    for name in SIZE_FIELDS:
        v = meta.get(name)
        if isinstance(v, float) and (math.isnan(v) or v.is_integer()):
            v = None if math.isnan(v) else int(v)
        if v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= SIZE_MAX):
            out[name] = v
        else:
            out[name] = None
            errors.append(f"bad_metadata: {name} {_show(v)} is not a size in pixels")
    for name in TEXT_FIELDS:
        v = meta.get(name)
        if v is None or isinstance(v, str):
            out[name] = v
        else:
            out[name] = None
            errors.append(f"bad_metadata: {name} is a {type(v).__name__}, not text")
    key = meta.get("orig_key")
    out["orig_key"] = None if key is None else str(key)
    return out, errors


def image_errors(image: bytes | None, max_bytes: int) -> list[str]:
    """``image_too_large`` over ``max_bytes``."""
    if image is not None and len(image) > max_bytes:
        return [f"image_too_large: {len(image)} bytes, over the cap of {max_bytes}"]
    return []


def sha256_matches(image: bytes | None, sha256: str | None) -> bool | None:
    """Whether the source's ``sha256`` is that of the bytes (None when there is nothing to
    compare). A mismatch is data, not a failure: img2dataset hashes the download before it
    re-encodes it, so its stored bytes disagree with its own sha256 even with
    ``--resize_mode no`` (measured with img2dataset 1.47); ``where sha256_matches`` keeps the
    samples whose bytes are the ones the source vouched for."""
    if image is None or not sha256:
        return None
    return hashlib.sha256(image).hexdigest() == sha256.strip().lower()


def _show(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 70 else text[:67] + "..."
