"""The per-image caption rules (best-caption, mix, top per=image, where per=image) against
choices computed by hand from the captions' word counts (``text_stats``'s ``n_words``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.ingest import ingest
from curate.ingest.captions import add_captions
from curate.passes.score import score
from curate.select import parse_rules, select
from curate.workspace import Workspace
from tests import badinput

# image -> {source: caption}; n_words in brackets
CAPTIONS = {
    0: {"alt": "a red square", "blip2": "a photo of a red square on white",  # 3, 8
        "human": "red square"},  # 2
    1: {"alt": "a big green circle in the middle", "blip2": "a green circle"},  # 7, 3
    2: {"alt": "blue", "blip2": "a small blue triangle"},  # 1, 4
    3: {"alt": "purple star here"},  # 3, no generated caption
}


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four images with the captions above and text_stats (treat as read-only)."""
    d = tmp_path_factory.mktemp("rules")
    images = [badinput.jpeg((60 * i, 200 - 40 * i, 90), 24 + i) for i in CAPTIONS]
    pq.write_table(pa.table({"image": images, "caption": [c["alt"] for c in CAPTIONS.values()],
                             "name": [f"img{i}" for i in CAPTIONS]}), d / "raw.parquet")
    ws = d / "ws"
    ingest([str(d / "raw.parquet")], ws, progress=False)
    for source in ("blip2", "human"):
        rows = [{"key": str(i), "caption": c[source]} for i, c in CAPTIONS.items()
                if source in c]
        add_captions(ws, pa.Table.from_pylist(rows), source, on="key", progress=False)
    score(ws, "text_stats", progress=False)
    return ws


def chosen(ws: Path, name: str) -> dict[int, str]:
    """image -> source of each kept caption (an image listed twice fails the test)."""
    with Workspace.open(ws).connect() as con:
        rows = con.execute(f"""SELECT s.key, p.caption_source, p.caption FROM
            read_parquet('{ws}/selections/{name}.parquet') k JOIN pairs p USING (sample_id)
            JOIN samples s ON s.image_id = p.image_id AND s.caption_source = 'alt'""").fetchall()
    out: dict[int, str] = {}
    for key, source, caption in rows:
        assert int(key) not in out, f"image {key} kept twice"
        assert CAPTIONS[int(key)][source] == caption
        out[int(key)] = source
    return out


def dropped(ws: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(ws / "selections" / "dropped" / f"{name}.parquet")


def run(ws: Path, tmp: Path, name: str, tokens: list[str]) -> Path:
    copy = tmp / "ws"
    if not copy.exists():
        shutil.copytree(ws, copy)
    select(copy, name, parse_rules(tokens))
    return copy


def test_best_caption_keeps_the_highest_score_per_image(four: Path, tmp_path: Path) -> None:
    ws = run(four, tmp_path, "best", ["best-caption", "by=n_words"])
    assert chosen(ws, "best") == {0: "blip2", 1: "alt", 2: "blip2", 3: "alt"}
    d = dropped(ws, "best")
    assert d.height == 4  # 8 captions, 4 images
    human = d.filter(pl.col("reason").str.contains(r"\(human, n_words = 2\)"))
    assert human.height == 1 and "keeps" in human["reason"][0] and "(blip2, n_words = 8)" in \
        human["reason"][0] and human["representative"][0] is not None
    select(ws, "among", parse_rules(["best-caption", "by=n_words", "among=alt,human"]))
    assert chosen(ws, "among") == {0: "alt", 1: "alt", 2: "alt", 3: "alt"}
    assert dropped(ws, "among")["reason"].str.contains("not among alt,human").sum() == 3


def test_mix_is_nguyen_et_al_replacement_rule(four: Path, tmp_path: Path) -> None:
    ws = run(four, tmp_path, "mix", ["mix", "raw=alt", "generated=blip2", "by=n_words",
                                     "threshold=4"])
    # raw 3 < 4 -> blip2; raw 7 >= 4 -> alt; raw 1 < 4 -> blip2; raw 3 < 4, none generated
    assert chosen(ws, "mix") == {0: "blip2", 1: "alt", 2: "blip2", 3: "alt"}
    d = dropped(ws, "mix")
    assert d.filter(pl.col("reason").str.contains("source human is neither alt nor blip2")
                    ).height == 1
    assert d.filter(pl.col("reason").str.contains("raw n_words = 1 < 4.0: generated")
                    ).height == 1
    assert d.filter(pl.col("reason").str.contains("raw n_words = 7 >= 4.0")).height == 1
    m = Workspace.open(ws).selection("mix").json.read_text()
    assert '"raw_only": 1' in m and '"generated": 2' in m and '"raw": 1' in m
    select(ws, "mix8", parse_rules(["mix", "by=n_words", "threshold=8"]))  # default sources
    assert chosen(ws, "mix8") == {0: "blip2", 1: "blip2", 2: "blip2", 3: "alt"}
    with pytest.raises(CurateError, match="both 'alt'"):
        parse_rules(["mix", "generated=alt"])


def test_top_and_where_per_image(four: Path, tmp_path: Path) -> None:
    ws = run(four, tmp_path, "top1", ["top", "n_words", "1", "per=image"])
    assert chosen(ws, "top1") == {0: "blip2", 1: "alt", 2: "blip2", 3: "alt"}
    select(ws, "long", parse_rules(["where", "n_words >= 7", "per=image"]))
    with Workspace.open(ws).connect() as con:
        kept = con.execute(f"""SELECT p.caption FROM read_parquet(
            '{ws}/selections/long.parquet') JOIN pairs p USING (sample_id)""").fetchall()
    assert sorted(c for (c,) in kept) == sorted([*CAPTIONS[0].values(), *CAPTIONS[1].values()])
    assert dropped(ws, "long")["reason"].str.contains("for any caption of its image").sum() == 3
    select(ws, "plain", parse_rules(["where", "n_words >= 7"]))  # not per image: 2 captions
    assert pq.read_table(ws / "selections" / "plain.parquet").num_rows == 2
    with pytest.raises(CurateError, match="only per=image"):
        parse_rules(["where", "n_words > 1", "per=cluster"])


def read_shards(out: Path) -> list[dict]:
    import json

    import webdataset as wds
    info = json.loads((out / "export.json").read_text())
    return [{"txt": s["txt"].decode(), "json": json.loads(s["json"])}
            for s in wds.WebDataset(str(out / info["pattern"]), shardshuffle=False)]


def test_export_one_sample_per_caption_or_per_image_and_the_card(four: Path,
                                                                   tmp_path: Path) -> None:
    from curate.export import export
    ws = run(four, tmp_path, "mix", ["mix", "by=n_words", "threshold=4"])
    export(ws, "mix", tmp_path / "mix", progress=False)
    got = {(s["txt"], s["json"]["caption_source"]) for s in read_shards(tmp_path / "mix")}
    assert got == {(CAPTIONS[0]["blip2"], "blip2"), (CAPTIONS[1]["alt"], "alt"),
                   (CAPTIONS[2]["blip2"], "blip2"), (CAPTIONS[3]["alt"], "alt")}
    export(ws, "mix", tmp_path / "hf", format="parquet", progress=False, card=False)
    hf = pl.read_parquet(next((tmp_path / "hf").glob("mix-*.parquet")))
    assert sorted(zip(hf["caption"], hf["caption_source"], strict=True)) == sorted(got)
    with pytest.raises(CurateError, match="applies to webdataset exports"):
        export(ws, "mix", tmp_path / "hf2", format="parquet", group_captions=True)
    card = (ws / "data_cards" / "mix.md").read_text()
    assert "| alt | 2 | 50.0% | 2 |" in card and "| blip2 | 2 | 50.0% | 2 |" in card
    # every caption of images 0 and 1, ranked by n_words, grouped into one sample per image
    select(ws, "long", parse_rules(["where", "n_words >= 7", "per=image",
                                    "top", "n_words", "1.0"]))
    export(ws, "long", tmp_path / "long", progress=False, group_captions=True)
    samples = read_shards(tmp_path / "long")
    assert len(samples) == 2
    for s in samples:
        image = next(i for i, c in CAPTIONS.items() if s["txt"] in c.values())
        ranked = sorted(CAPTIONS[image].items(), key=lambda kv: -len(kv[1].split()))
        assert s["json"]["captions"] == [c for _, c in ranked] and s["txt"] == ranked[0][1]
        assert s["json"]["caption_sources"] == [src for src, _ in ranked]
        assert len(s["json"]["sample_ids"]) == len(ranked)
    card = (ws / "data_cards" / "long.md").read_text()
    assert "| 2 | 1 |" in card and "| 3 | 1 |" in card  # one image with 2, one with 3 captions
    assert "every kept caption of it" in card
