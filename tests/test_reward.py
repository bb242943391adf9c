"""The reward pass: HPS through a local open_clip checkpoint, the z-scored composite, PickScore
through a tiny random transformers CLIP, and every error raised before any part is written."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from curate.errors import CurateError
from curate.ingest import ingest
from curate.metrics import auroc
from curate.models.tinyclip import tiny_clip_dir
from curate.passes.reward.common import EXTRA, require
from curate.passes.score import score


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def table(ws: Path, key: str) -> pl.DataFrame:
    return pl.read_parquet(ws / "scores" / key / "part-*.parquet").sort("sample_id")


def samples(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(ws / "samples" / "*.parquet").filter(pl.col("status") == "ok")


def image(row: dict) -> Image.Image:
    """An image read straight from its tar member, without curate's helpers."""
    with open(row["image_path"], "rb") as f:
        f.seek(row["image_offset"])
        return Image.open(io.BytesIO(f.read(row["image_length"]))).convert("RGB")


def no_reward_parts(ws: Path) -> bool:
    return not list((ws / "scores").glob("reward*/part-*.parquet"))


# --- hps ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hps_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-clip's weights wrapped as HPSv2 ships them: {'state_dict': {'module.' + k: v}}."""
    sd = load_file(str(tiny_clip_dir() / "open_clip_model.safetensors"))
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_tiny.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    return path


@pytest.fixture(scope="module")
def hps_scored(embedded: Path, hps_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, str]:
    ws = copy(embedded, tmp_path_factory.mktemp("hps-ws") / "ws")
    report = score(ws, "reward", {"backend": "hps", "arch": "curate-tiny-clip",
                                  "checkpoint": str(hps_checkpoint)}, progress=False)
    return ws, report.key


def test_hps_matches_open_clip_cosine_directly(hps_scored: tuple[Path, str]) -> None:
    ws, key = hps_scored
    t = table(ws, key).join(samples(ws), on="sample_id").head(8)
    folder = f"local-dir:{tiny_clip_dir()}"
    model, _, preprocess = open_clip.create_model_and_transforms(folder)
    tokenizer = open_clip.get_tokenizer(folder)
    rows = t.to_dicts()
    with torch.no_grad():
        img = model.eval().encode_image(torch.stack([preprocess(image(r)) for r in rows]),
                                        normalize=True)
        txt = model.encode_text(tokenizer([r["caption"] for r in rows]), normalize=True)
    cos = (img * txt).sum(-1).numpy()
    diff = np.abs(t["reward_raw"].to_numpy() - cos)
    assert diff.max() < 1e-3, diff
    assert np.allclose(t["reward"].to_numpy(), 100 * t["reward_raw"].to_numpy(), atol=1e-4)


def test_hps_separates_mismatched_and_records_checkpoint(hps_scored: tuple[Path, str],
                                                         hps_checkpoint: Path,
                                                         pool: Path) -> None:
    ws, key = hps_scored
    t = table(ws, key).join(samples(ws).select("sample_id", "key"), on="sample_id").join(
        pl.read_parquet(pool / "truth.parquet").select("key", "defect", "mismatched"), on="key")
    bad, clean = t.filter(pl.col("mismatched")), t.filter(pl.col("defect") == "none")
    assert bad.height > 20
    assert auroc(clean["reward"].to_numpy(), bad["reward"].to_numpy()) >= 0.9
    m = json.loads((ws / "scores" / key / "manifest.json").read_text())
    assert m["checkpoint"]["path"] == str(hps_checkpoint.resolve())
    assert len(m["checkpoint"]["sha256"]) == 64 and m["checkpoint"]["hps_version"] == "v2.1"
    assert "not comparable" in m["comparability"]
    assert any(d.name.startswith("curate-tiny-clip") for d in (ws / "embeddings").iterdir())


def test_hps_rerun_reuses_embeddings_but_refuses_another_file(
        hps_scored: tuple[Path, str], hps_checkpoint: Path, tmp_path: Path) -> None:
    ws = copy(hps_scored[0], tmp_path / "ws")
    params = {"backend": "hps", "arch": "curate-tiny-clip", "checkpoint": str(hps_checkpoint)}
    assert score(ws, "reward", params, progress=False).parts_written == 0
    emb = next(d for d in (ws / "embeddings").iterdir() if d.name.startswith("curate-tiny"))
    m = json.loads((emb / "manifest.json").read_text())
    m["weights_sha256"]["model"] = "0" * 64  # as if v2.0 had been embedded under this path
    (emb / "manifest.json").write_text(json.dumps(m))
    shutil.rmtree(ws / "scores" / hps_scored[1])
    with pytest.raises(CurateError, match="remove that folder") as e:
        score(ws, "reward", params, progress=False)
    assert str(emb) in str(e.value) and "0" * 12 in str(e.value)
    assert no_reward_parts(ws)


# --- composite ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_scored(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = copy(embedded, tmp_path_factory.mktemp("composite") / "ws")
    score(ws, "clip_score", progress=False)
    return ws


def zscore(ws: Path, column: str) -> pl.DataFrame:
    t = table(ws, "clip_score").filter(pl.col("status") == "ok")
    x = t[column].to_numpy().astype(np.float64)
    return pl.DataFrame({"sample_id": t["sample_id"], "z": (x - x.mean()) / x.std()})


def test_composite_is_weighted_z_score_of_clip_score(clip_scored: Path) -> None:
    key = score(clip_scored, "reward", {"weights": (2.0,)}, progress=False).key
    t = table(clip_scored, key).join(zscore(clip_scored, "clip_score"), on="sample_id")
    assert t.height == table(clip_scored, "clip_score").height
    assert np.abs(t["reward"].to_numpy() - 2 * t["z"].to_numpy()).max() < 1e-5
    assert t["reward_raw"].null_count() == t.height
    m = json.loads((clip_scored / "scores" / key / "manifest.json").read_text())
    x = table(clip_scored, "clip_score")["clip_score"].to_numpy().astype(np.float64)
    assert abs(m["components"][0]["mean"] - x.mean()) < 1e-9
    assert abs(m["components"][0]["std"] - x.std()) < 1e-9


def test_composite_of_two_components_as_cli_strings(clip_scored: Path) -> None:
    key = score(clip_scored, "reward", {"components": "clip_score.clip_score,"
                                        "clip_score.clip_cosine", "weights": "1,-1"},
                progress=False).key
    a = zscore(clip_scored, "clip_score").rename({"z": "a"})
    b = zscore(clip_scored, "clip_cosine").rename({"z": "b"})
    t = table(clip_scored, key).join(a, on="sample_id").join(b, on="sample_id")
    assert t.height == a.height
    assert np.abs(t["reward"].to_numpy() - (t["a"] - t["b"]).to_numpy()).max() < 1e-5


# --- errors, all before any part is written -------------------------------------------------

@pytest.fixture(scope="module")
def plain(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedded, with no score pass run (errors must leave it so)."""
    return copy(embedded, tmp_path_factory.mktemp("errors") / "ws")


@pytest.mark.parametrize("params, words", [
    ({"backend": "nope"}, ["'nope'", "hps, pickscore, imagereward, composite"]),
    ({"backend": "hps"}, ["HPS_v2.1_compressed.pt", "xswu/HPSv2", "--param checkpoint=/path"]),
    ({"backend": "hps", "checkpoint": "/no/such/HPS_v2.1_compressed.pt"}, ["does not exist"]),
    ({"components": ("clip_score.clip_score", "clip_score.clip_cosine")},
     ["2 components but 1 weights"]),
    ({}, ["scores/clip_score", "does not exist", "curate score clip_score"]),
    ({"components": ("clip_score--w=3.clip_score",)}, ["curate score clip_score",
                                                       "clip_score--w=3"]),
    ({"components": ("clip_score",)}, ["<score folder key>.<column>"]),
    ({"backend": "pickscore", "checkpoint": "/no/such/folder"}, ["is not a folder"]),
])
def test_errors_name_the_problem_before_any_part(plain: Path, params: dict,
                                                 words: list[str]) -> None:
    with pytest.raises(CurateError) as e:
        score(plain, "reward", params, progress=False)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert no_reward_parts(plain)


def test_missing_package_error_gives_pip_command() -> None:
    with pytest.raises(CurateError, match=r"pip install 'curate\[rewards\]'"):
        require("curate_no_such_module", EXTRA)


def test_imagereward_without_its_package_says_how_to_install(plain: Path,
                                                             tmp_path: Path) -> None:
    try:
        require("ImageReward", "")
        pytest.skip("ImageReward is importable here")
    except CurateError:
        pass
    ckpt = tmp_path / "ImageReward.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(CurateError, match="pip install image-reward"):
        score(plain, "reward", {"backend": "imagereward", "checkpoint": str(ckpt)},
              progress=False)
    assert no_reward_parts(plain)


# --- pickscore ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pick_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random transformers CLIPModel with CLIP's real BPE tokenizer, saved offline."""
    import transformers as tf
    from open_clip.tokenizer import SimpleTokenizer

    folder = tmp_path_factory.mktemp("pickscore")
    st = SimpleTokenizer()  # open_clip's copy of CLIP's BPE; HF names the specials <|...|>
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (folder / "vocab.json").write_text(json.dumps({names.get(k, k): v
                                                   for k, v in st.encoder.items()}))
    merges = sorted(st.bpe_ranks, key=st.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m)
                                                                      for m in merges) + "\n")
    tok = tf.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    assert tok("a red square")["input_ids"][0] == 49406
    images = tf.CLIPImageProcessor(size={"shortest_edge": 32},
                                   crop_size={"height": 32, "width": 32})
    cfg = tf.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2), projection_dim=16)
    torch.manual_seed(0)
    model = tf.CLIPModel(cfg)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(50.0))  # not the default, so a wrong scale shows
    model.save_pretrained(folder / "model")
    tf.CLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(folder / "model")
    return folder / "model"


@pytest.mark.slow
def test_pickscore_matches_transformers_directly(pick_model: Path, ingested: Path,
                                                 tmp_path: Path) -> None:
    import transformers as tf

    from curate.passes.reward import pickscore

    ws = copy(ingested, tmp_path / "ws")
    key = score(ws, "reward", {"backend": "pickscore", "checkpoint": str(pick_model)},
                progress=False).key
    t = table(ws, key).join(samples(ws), on="sample_id")
    assert t.height == samples(ws).height and t["reward"].null_count() == 0
    rows = t.head(6).to_dicts()
    model = tf.CLIPModel.from_pretrained(pick_model).eval()
    proc = tf.CLIPProcessor.from_pretrained(pick_model)
    x = proc(text=[r["caption"] for r in rows], images=[image(r) for r in rows],
             padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        logits = model(**x).logits_per_text.diagonal().numpy()
    scale = float(model.logit_scale.detach().exp())
    assert abs(scale - 50.0) < 1e-3
    assert np.abs(np.array([r["reward"] for r in rows]) - logits).max() < 1e-4
    assert np.abs(np.array([r["reward_raw"] for r in rows]) - logits / scale).max() < 1e-5
    m = json.loads((ws / "scores" / key / "manifest.json").read_text())
    assert abs(m["logit_scale_exp"] - 50.0) < 1e-3 and m["checkpoint"]["sha256"]
    # a caption past 77 tokens is truncated, and an undecodable image is null, not a crash
    r = rows[0]
    batch = {"image_path": [r["image_path"]] * 2, "image_offset": np.array([r["image_offset"],
                                                                             0]),
             "image_length": np.array([r["image_length"], 10]),
             "caption": ["red " * 200, "a broken image"]}
    got = pickscore.compute(batch, None, (model, proc))
    assert np.isfinite(got["reward"][0]) and np.isnan(got["reward"][1])


def test_pickscore_refuses_to_mix_parts_of_other_weights(pick_model: Path, tmp_path: Path,
                                                         workspace: Path) -> None:
    import transformers as tf

    from tests import badinput

    folder = copy(pick_model, tmp_path / "model")
    shard = badinput.write_tar(tmp_path / "s.tar", [
        ("a.jpg", badinput.jpeg()), ("a.txt", b"a red square"),
        ("b.jpg", badinput.jpeg((0, 0, 255))), ("b.txt", b"a blue square")])
    ingest([str(shard)], workspace, part_rows=1, progress=False)
    params = {"backend": "pickscore", "checkpoint": str(folder)}
    report = score(workspace, "reward", params, progress=False)
    m = json.loads((report.out_dir / "manifest.json").read_text())
    assert m["weights_sha256"] == m["checkpoint"]["sha256"] and m["weights_sha256"]
    torch.manual_seed(1)  # the same folder now holds other weights
    tf.CLIPModel(tf.CLIPConfig.from_pretrained(folder)).save_pretrained(folder)
    (report.out_dir / "part-000001.parquet").unlink()
    with pytest.raises(CurateError, match="other weights") as e:
        score(workspace, "reward", params, progress=False)
    assert str(report.out_dir) in str(e.value) and "remove that folder" in str(e.value)
    assert not (report.out_dir / "part-000001.parquet").exists()
