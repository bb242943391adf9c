"""The content hashes of the workspace: one function, used by ingest and export verification.

A hash is BLAKE2b-128 over each part's length (8 bytes little-endian) and bytes, so
``(image, caption)`` can never collide with another split of the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np


def digest(*parts: bytes | memoryview | np.ndarray) -> str:
    """BLAKE2b-128 hex digest of length-prefixed ``parts``."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def image_hash(data: bytes | memoryview | np.ndarray) -> str:
    """The ingest hash of an image's bytes (``image_hash`` in ``samples``)."""
    return digest(data)


def content_id(image: bytes | None, caption: bytes | None) -> str:
    """The content hash of a pair (``sample_id``): image bytes and caption bytes."""
    return digest(image or b"", caption or b"")
