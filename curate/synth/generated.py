"""A second, generated-style caption per image of a synthetic pool, correct or wrong at known
rates: what a captioning model run over the pool would write, for ``curate captions add``.

Each image whose sample ingest keeps (``expected_status = ok``) gets one caption in a
captioner's flat style: ``correct`` names its colour, shape, count and background; ``generic``
is correct but says less (colour and shape only); ``wrong`` describes another colour and shape
(a captioner's hallucination). The kinds are drawn at the given rates with a seeded generator
of their own, so the pool itself is unchanged. ``generated_captions.parquet`` (``url``, ``key``,
``caption``) is what ``curate captions add`` reads; ``truth.parquet`` gains
``generated_caption``, ``generated_kind`` and ``generated_correct`` (correct or generic).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.files import write_parquet
from curate.synth.scenes import COLOURS, COUNT_WORDS, SHAPES

TABLE = "generated_captions.parquet"


@dataclass(frozen=True)
class Generated:
    """Shares of the generated captions that are wrong and generic (the rest: correct)."""

    wrong: float = 0.15
    generic: float = 0.25

    def __post_init__(self) -> None:
        if min(self.wrong, self.generic) < 0 or self.wrong + self.generic > 1:
            raise ValueError(f"generated caption shares {self.wrong} + {self.generic} must be "
                             "in [0, 1]")


def _style(shape: str, colour: str, count: int, background: str | None) -> str:
    shapes = shape + ("s" if count > 1 else "")
    n = COUNT_WORDS[count] if count > 1 else "a"
    return f"{n} {colour} {shapes}" + (f" on a {background} background" if background else "")


def caption(row: dict, kind: str, rng: random.Random) -> str:
    """The generated caption of one truth row of the given kind."""
    if kind == "generic":
        return f"a picture of {_style(row['shape'], row['colour'], 1, None)}"
    if kind == "wrong":
        shape, colour = row["shape"], row["colour"]
        while (shape, colour) == (row["shape"], row["colour"]):
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        return f"a photo of {_style(shape, colour, row['count'], row['background'])}"
    return f"a photo of {_style(row['shape'], row['colour'], row['count'], row['background'])}"


def write_generated(pool: str | Path, seed: int = 0, shares: Generated = Generated()) -> Path:
    """Write ``pool/generated_captions.parquet`` and add its truth columns to
    ``truth.parquet``; returns the table's path."""
    pool = Path(pool)
    truth = pq.read_table(pool / "truth.parquet")
    rng = random.Random(f"generated-{seed}")
    rows = truth.to_pylist()
    kinds, texts, table = [], [], []
    urls = {r["key"]: u for r, u in zip(rows, _urls(pool), strict=False)}
    for r in rows:
        if r["expected_status"] != "ok":
            kinds.append(None)
            texts.append(None)
            continue
        u = rng.random()
        kind = "wrong" if u < shares.wrong else "generic" if u < shares.wrong + \
            shares.generic else "correct"
        text = caption(r, kind, rng)
        kinds.append(kind)
        texts.append(text)
        table.append({"url": urls.get(r["key"]), "key": r["key"], "caption": text})
    for name in ("generated_caption", "generated_kind", "generated_correct"):
        if name in truth.schema.names:
            truth = truth.drop_columns([name])
    truth = truth.append_column("generated_caption", pa.array(texts, pa.string()))
    truth = truth.append_column("generated_kind", pa.array(kinds, pa.string()))
    truth = truth.append_column("generated_correct", pa.array(
        [None if k is None else k != "wrong" for k in kinds], pa.bool_()))
    write_parquet(truth, pool / "truth.parquet")
    return write_parquet(pa.Table.from_pylist(table), pool / TABLE)


def _urls(pool: Path) -> list[str]:
    """The url of every sample, in truth order (from the shards' img2dataset parquet)."""
    out: list[str] = []
    for p in sorted(pool.glob("[0-9]*.parquet")):
        out += pq.read_table(p, columns=["url"])["url"].to_pylist()
    return out
