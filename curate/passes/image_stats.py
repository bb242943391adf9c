"""Cheap pixel statistics: aspect ratio, size, brightness, contrast, blur, colourfulness and
clipped pixels, decoded in parallel on the CPU.

Each image is downscaled so its longest side is at most ``max_side`` before the pixel
statistics (JPEGs are decoded at a reduced DCT scale with PIL's ``draft()`` first, then
box-resized to the exact target), so ``blur`` is measured at that scale and is comparable
across images of different sizes. A decode failure gives null pixel statistics, never an error.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

from curate.images import read_bytes
from curate.parallel import pmap
from curate.passes import Batch, Pass, register

PIXEL_COLUMNS = ("brightness", "contrast", "blur", "colourfulness", "saturated_fraction")
NAN_STATS = (math.nan,) * len(PIXEL_COLUMNS)


@dataclass(frozen=True)
class Params:
    max_side: int = 256  # longest side the image is downscaled to before the statistics
    workers: int = 0  # decode processes; 0 = all cores, 1 = serial in this process


def load(data: bytes, max_side: int) -> np.ndarray:
    """Decode to an RGB uint8 array whose longest side is at most ``max_side``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        s = min(1.0, max_side / max(w, h))
        target = (max(1, round(w * s)), max(1, round(h * s)))
        if s < 1 and img.format == "JPEG":
            img.draft(None, target)  # decode at 1/2, 1/4 or 1/8 scale, still >= target
        img = img.convert("RGB")
        if img.size != target:
            img = img.resize(target, Image.Resampling.BOX)
    return np.asarray(img)


def pixel_stats(rgb: np.ndarray) -> tuple[float, ...]:
    """(brightness, contrast, blur, colourfulness, saturated_fraction) of an RGB uint8 array."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b  # ITU-R BT.601, in [0, 255]
    lap = (4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1]
           - luma[1:-1, :-2] - luma[1:-1, 2:])
    rg, yb = r - g, 0.5 * (r + g) - b  # Hasler and Süsstrunk (2003), in [0, 255] units
    colourful = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    return (float(luma.mean() / 255), float(luma.std() / 255),
            float(lap.var()) if lap.size else math.nan, float(colourful),
            float(np.mean((luma >= 250) | (luma <= 5))))


def image_stats(ref: tuple[str | None, int, int], max_side: int) -> tuple[float, ...]:
    """Pixel statistics of one referenced image; NaNs if it cannot be read or decoded."""
    path, offset, length = ref
    if not path:
        return NAN_STATS
    try:
        return pixel_stats(load(read_bytes(path, int(offset), int(length)), max_side))
    except Exception:  # any read or decode failure is a null row, not a failed run
        return NAN_STATS


def _map(refs: list[tuple[Any, Any, Any]], p: Params) -> list[tuple[float, ...]]:
    """Pixel statistics for each (path, offset, length), in the forked pool or serially."""
    return pmap(partial(image_stats, max_side=p.max_side), refs, p.workers)


def _floats(x: Any) -> np.ndarray:
    """A column as float64 with nulls as NaN."""
    return np.array([math.nan if v is None else v for v in x], np.float64)


def compute(batch: Batch, p: Params, state: Any) -> dict[str, Any]:
    """Size columns from the samples header fields, pixel statistics from decoding."""
    w, h = _floats(batch["width"]), _floats(batch["height"])
    refs = list(zip(batch["path"], batch["offset"], batch["length"], strict=True))
    stats = np.array(_map(refs, p), np.float64).reshape(len(refs), len(PIXEL_COLUMNS))
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(h > 0, w / h, math.nan)
    return {"aspect_ratio": aspect, "megapixels": w * h / 1e6, "format": list(batch["format"]),
            **{c: stats[:, i] for i, c in enumerate(PIXEL_COLUMNS)}}


register(Pass(name="image_stats", params=Params,
              columns=("aspect_ratio", "megapixels", "format", *PIXEL_COLUMNS),
              compute=compute, inputs=lambda p: {"samples": {
                  "image_path": "path", "image_offset": "offset", "image_length": "length",
                  "image_format": "format", "width": "width", "height": "height"}},
              description="aspect ratio, megapixels, format, brightness, contrast, blur "
                          "(Laplacian variance), colourfulness, clipped-pixel share; CPU, "
                          "parallel decode"))
