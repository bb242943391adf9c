"""Backends of the ``reward`` pass (algorithms.md section 4): HPSv2 through open_clip (4.2),
PickScore (4.3) and ImageReward (4.4) through optional packages, and a z-scored composite in
the spirit of VLRM (4.5). Each backend module has ``prepare``, ``inputs`` and ``compute``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from PIL import Image

from curate.errors import CurateError
from curate.images import decode_rgb, read_bytes

EXTRA = "pip install 'curate[rewards]'"
IMAGE_REFS = {"image_path": "image_path", "image_offset": "image_offset",
              "image_length": "image_length", "caption": "caption"}


def require(module: str, install: str) -> ModuleType:
    """Import an optional dependency, or fail with the exact command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # missing, or present but broken against its own dependencies
        raise CurateError(f"this reward backend needs the {module!r} package, which could not "
                          f"be imported ({type(e).__name__}: {e}); install it with "
                          f"`{install}`") from e


def decode_images(batch: dict[str, Any]) -> list[Image.Image | None]:
    """The batch's images decoded serially from their byte references; a failure is None."""
    out: list[Image.Image | None] = []
    for path, offset, length in zip(batch["image_path"], batch["image_offset"],
                                    batch["image_length"], strict=True):
        try:
            out.append(decode_rgb(read_bytes(path, int(offset), int(length))))
        except Exception:  # a bad image scores NaN (null), never a crash
            out.append(None)
    return out


def captions(batch: dict[str, Any]) -> list[str]:
    """The batch's captions, a null one as the empty string."""
    return [c or "" for c in batch["caption"]]
