"""Synthetic scenes: shapes of a colour, size, count and position on a background, their
captions (true ones, and abstract ones true of nothing visual) and their rendered images."""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

SYNTH_VERSION = 2  # bump when renders change: tiny-clip's cache key includes it
SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (240, 220, 30),
    "purple": (140, 50, 170), "orange": (250, 140, 20), "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUNDS = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (10, 10, 10),
               "beige": (225, 205, 170)}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}

_TEMPLATES = (
    "a photo of {n} {size} {colour} {shapes} on the {pos} of a {bg} background",
    "{n} {colour} {shapes}, {size}, {pos_phrase}, on {bg}",
    "{size} {colour} {shapes} {pos_phrase} against a {bg} backdrop",
    "an image showing {n} {colour} {shapes} at the {pos}, {bg} background",
    "{n} {size} {colour} {shapes} on {bg}",
)
_POS_PHRASE = {"left": "on the left", "right": "on the right", "top": "near the top",
               "bottom": "near the bottom", "center": "in the middle"}
_ABSTRACT_OPEN = ("what a great day to remember", "feeling so grateful for", "i love",
                  "throwback to", "you will not believe", "the true meaning of",
                  "nothing compares to", "all about", "dreaming of", "so proud of")
_ABSTRACT_TAIL = ("the good old days", "this amazing journey", "everything we shared",
                  "new beginnings", "my favourite memories", "the spirit of friendship",
                  "life and its lessons", "hope for tomorrow", "the moments that matter",
                  "everything in between")


@dataclass(frozen=True)
class Scene:
    """What a synthetic image shows; the ground truth its caption describes."""

    shape: str
    colour: str
    size: str
    position: str
    count: int
    background: str


def random_scene(rng: random.Random) -> Scene:
    """Draw a scene whose shapes are visible against its background."""
    background = rng.choice(list(BACKGROUNDS))
    colour = rng.choice([c for c in COLOURS if c != background])
    return Scene(rng.choice(SHAPES), colour, rng.choice(SIZES), rng.choice(POSITIONS),
                 rng.choice((1, 2, 3)), background)


def caption_for(scene: Scene, rng: random.Random, template: int | None = None) -> str:
    """A caption that describes ``scene``; ``template`` picks the phrasing (random if None)."""
    t = _TEMPLATES[rng.randrange(len(_TEMPLATES)) if template is None else template]
    shapes = scene.shape + ("s" if scene.count > 1 else "")
    n = COUNT_WORDS[scene.count] if scene.count > 1 else rng.choice(("a", "one"))
    return t.format(n=n, size=scene.size, colour=scene.colour, shapes=shapes, pos=scene.position,
                    pos_phrase=_POS_PHRASE[scene.position], bg=scene.background)


def abstract_caption(rng: random.Random) -> str:
    """A caption true of nothing visual."""
    return f"{rng.choice(_ABSTRACT_OPEN)} {rng.choice(_ABSTRACT_TAIL)}"


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    points = []  # star
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -math.pi / 2 + i * math.pi / 5
        points.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return points


_REGIONS = {"left": (0.0, 0.0, 0.5, 1.0), "right": (0.5, 0.0, 1.0, 1.0),
            "top": (0.0, 0.0, 1.0, 0.5), "bottom": (0.0, 0.5, 1.0, 1.0),
            "center": (0.25, 0.25, 0.75, 0.75)}


def render(scene: Scene, rng: random.Random, size: int = 64) -> Image.Image:
    """Draw ``scene`` at twice the size and downsample, for smooth edges."""
    s = size * 2
    bg = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in BACKGROUNDS[scene.background])
    img = Image.new("RGB", (s, s), bg)
    draw = ImageDraw.Draw(img)
    r = s * (0.09 if scene.size == "small" else 0.17) * (0.8 if scene.count == 3 else 1.0)
    r *= rng.uniform(0.85, 1.15)  # no two renders of a scene are the same picture
    x0, y0, x1, y1 = _REGIONS[scene.position]
    for i in range(scene.count):
        # spread the objects along the region's long side, with jitter
        t = (i + 0.5) / scene.count
        wide = (x1 - x0) >= (y1 - y0)
        fx = x0 + (x1 - x0) * (t if wide else 0.5) + rng.uniform(-0.08, 0.08)
        fy = y0 + (y1 - y0) * (0.5 if wide else t) + rng.uniform(-0.08, 0.08)
        cx = min(max(fx * s, r), s - r)
        cy = min(max(fy * s, r), s - r)
        fill = COLOURS[scene.colour]
        if scene.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_polygon(scene.shape, cx, cy, r), fill=fill)
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    # sensor-like grain and a lighting gradient, as in any two photos of the same scene
    grain = Image.frombytes("L", (size, size), rng.randbytes(size * size))
    light = Image.linear_gradient("L").resize((size, size)).transpose(rng.choice((
        Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270)))
    img = Image.blend(img, Image.merge("RGB", (grain,) * 3), 0.06)
    return Image.blend(img, Image.merge("RGB", (light,) * 3), rng.uniform(0.0, 0.12))


def encode(img: Image.Image, fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode an image to ``jpg``, ``png`` or ``webp`` bytes."""
    buf = io.BytesIO()
    pil_fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    img.save(buf, pil_fmt, **({"quality": quality} if pil_fmt != "PNG" else {}))
    return buf.getvalue()


def clean_pairs(n: int, seed: int, size: int = 64) -> Iterator[tuple[Scene, bytes, str]]:
    """``n`` defect-free (scene, jpeg bytes, caption) triples; tiny-clip trains on these."""
    rng = random.Random(seed)
    for _ in range(n):
        scene = random_scene(rng)
        yield scene, encode(render(scene, rng, size)), caption_for(scene, rng)
