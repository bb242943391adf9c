"""Caption concreteness: against the synthetic pool's truth, by hand from the norms, on bad
input, through the runner into the catalog, and the icc backend's failures and wiring."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import curate
from curate.errors import CurateError
from curate.metrics import auroc
from curate.passes.concreteness.backends import concreteness, score_texts
from curate.passes.concreteness.norms import load
from curate.passes.score import score
from curate.workspace import Workspace

BAD_INPUTS = [
    "", "   \n\t ", "!!! ... ???", "-- ** //", "http://example.com/img/0001.jpg",
    "www.example.com", "😀🎉🔥", "🐶 🐱", "word " * 4000, "red " * 3000 + "apple",
    "一只猫坐在沙发上", "una mujer con un perro en la playa", "Фотография кошки на диване",
    "12345 678", "IMG_2041.JPG", "<b>&nbsp;</b>", "\x00\x01\x02", "the of and to it is",
    "Ä ö ü ß", "a" * 10000, None,
]


def truth_split(pool: Path, backend: str) -> tuple[np.ndarray, np.ndarray]:
    t = pl.read_parquet(pool / "truth.parquet")
    clean = t.filter(pl.col("defect") == "none")["caption"].to_list()
    abstract = t.filter(pl.col("abstract"))["caption"].to_list()
    assert len(abstract) >= 10 and len(clean) >= 100
    return concreteness(clean, backend), concreteness(abstract, backend)


def test_offline_separates_abstract_captions(pool: Path) -> None:
    clean, abstract = truth_split(pool, "offline")
    assert not np.isnan(clean).any() and not np.isnan(abstract).any()
    assert auroc(clean, abstract) >= 0.95
    assert ((clean > 0) & (clean < 1)).all()


def test_lexical_separates_abstract_captions(pool: Path) -> None:
    clean, abstract = truth_split(pool, "lexical")
    assert auroc(clean[~np.isnan(clean)], abstract[~np.isnan(abstract)]) >= 0.9
    assert ((clean >= 1) & (clean <= 5)).all()


def test_lexical_score_by_hand_from_the_norms() -> None:
    # Brysbaert et al. 2014: dog 4.85, grass 4.93; "on" is a function word and is skipped
    norms = load().concreteness
    assert (norms["dog"], norms["grass"]) == (4.85, 4.93)
    s, cov, why = score_texts(["Dog on grass"], "lexical")
    assert s[0] == pytest.approx((4.85 + 4.93) / 2) and cov[0] == 1.0 and why == [None]
    s, cov, _ = score_texts(["dogs on zzqxv"], "lexical")  # plural rated as is; nonsense unrated
    assert s[0] == pytest.approx(norms["dogs"]) and cov[0] == 0.5


@pytest.mark.parametrize("backend", ["offline", "lexical"])
def test_bad_input_gets_a_score_or_a_reason(backend: str) -> None:
    s, cov, why = score_texts(BAD_INPUTS, backend)
    assert len(s) == len(cov) == len(why) == len(BAD_INPUTS)
    for text, v, c, r in zip(BAD_INPUTS, s, cov, why, strict=True):
        assert (math.isnan(v)) == (r is not None), (text, v, r)
        assert 0.0 <= c <= 1.0
    by_text = dict(zip(map(str, BAD_INPUTS), zip(s, cov, why, strict=True), strict=True))
    assert by_text[""][2] == "empty" and by_text["😀🎉🔥"][2] == "no_words"
    assert by_text["一只猫坐在沙发上"][1] == 0.0  # coverage shows there was nothing to go on
    assert by_text["una mujer con un perro en la playa"][1] < 0.5


def test_offline_scores_urls_low_and_web_captions_below_descriptions() -> None:
    concrete = ["a brown dog running on the beach", "close-up of a red apple on a wooden table",
                "young woman sitting on a bench in the park"]
    abstract = ["http://example.com/page", "Buy cheap shoes online - free shipping!",
                "I can't wait for the weekend", "How to improve your credit score"]
    c, a = concreteness(concrete), concreteness(abstract)
    assert c.min() > a.max()


def test_public_api() -> None:
    got = curate.concreteness(["a cat on a sofa", "the meaning of life"])
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got[0] > got[1]
    assert curate.concreteness("a cat on a sofa").shape == (1,)
    with pytest.raises(CurateError, match="unknown concreteness backend"):
        concreteness(["x"], backend="nope")


def test_pass_end_to_end_into_the_catalog(ingested: Path, pool: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    report = score(ws, "concreteness", progress=False)
    assert report.rows > 500
    score(ws, "concreteness", {"backend": "lexical"}, progress=False)
    with Workspace.open(ws).connect(read_only=True) as con:
        cols = ["key", "concreteness", "concreteness_coverage", "concreteness_reason",
                "concreteness__backend_lexical"]
        rows = con.execute(f"SELECT {', '.join(cols)} FROM pairs WHERE status = 'ok'").fetchall()
    df = pl.DataFrame(rows, schema=cols, orient="row")
    t = df.join(pl.read_parquet(pool / "truth.parquet").select("key", "abstract", "defect"),
                on="key")
    assert t["concreteness"].null_count() == 0 and t["concreteness_reason"].null_count() == t.height
    assert t["concreteness_coverage"].min() > 0.5
    clean, abstract = t.filter(pl.col("defect") == "none"), t.filter(pl.col("abstract"))
    assert auroc(clean["concreteness"].to_numpy(), abstract["concreteness"].to_numpy()) >= 0.95
    assert t["concreteness__backend_lexical"].null_count() == 0


def test_unknown_backend_fails_before_work(ingested: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    with pytest.raises(CurateError, match="unknown concreteness backend 'nope'"):
        score(ws, "concreteness", {"backend": "nope"}, progress=False)
    assert not (ws / "scores").exists() or not any((ws / "scores").glob("concreteness*"))


@pytest.mark.parametrize("model", ["missing-dir", "curate-tests/no-such-model"])
def test_icc_without_weights_fails_fast(model: str, tmp_path: Path, ingested: Path) -> None:
    name = str(tmp_path / model) if model == "missing-dir" else model
    t0 = time.perf_counter()
    with pytest.raises(CurateError, match="icc_model=") as e:
        concreteness(["a dog"], backend="icc", icc_model=name)
    assert "config.json" in str(e.value) and "\n" not in str(e.value)
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    with pytest.raises(CurateError, match="ICC weights not found"):
        score(ws, "concreteness", {"backend": "icc", "icc_model": name}, progress=False)
    assert time.perf_counter() - t0 < 20


def test_icc_scores_are_the_first_logit_of_a_local_model(tmp_path: Path) -> None:
    import torch
    import transformers
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "on", "the", "grass",
             "love", "of", "life"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(str(tmp_path / "vocab.txt"), model_max_length=16)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, num_labels=1,
                                  max_position_embeddings=16)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path / "icc")
    tok.save_pretrained(tmp_path / "icc")
    texts = ["a dog on the grass", "the love of life", "", "dog " * 100]
    s, cov, why = score_texts(texts, "icc", icc_model=str(tmp_path / "icc"))
    with torch.no_grad():
        enc = tok(texts[:2], padding=True, return_tensors="pt")
        want = model(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(s[:2], want, rtol=1e-4, atol=1e-5)
    assert math.isnan(s[2]) and why[2] == "empty" and np.isfinite(s[3])  # long: truncated
    assert np.isnan(cov).all()
