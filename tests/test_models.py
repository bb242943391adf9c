"""The model registry and loader: tiny-clip training and quality, name forms, offline failures."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path

import pytest
import torch
from open_clip.model import CLIP
from PIL import Image
from safetensors.torch import load_file

from curate import models
from curate.errors import CurateError
from curate.models import tinyclip
from curate.synth import clean_pairs


@pytest.fixture(scope="session")
def tiny() -> models.LoadedModel:
    """The cached tiny-clip (trained on first use into the session's CURATE_CACHE)."""
    return models.load("tiny-clip")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rank_auroc(pos: list[float], neg: list[float]) -> float:
    """Mann-Whitney AUROC from average ranks (ties share their mean rank)."""
    scored = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(label for _, label in scored[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


@pytest.mark.slow
def test_training_is_deterministic(tmp_path: Path) -> None:
    kw = {"seed": 3, "steps": 8, "n_train": 512, "batch_size": 128}
    reports = [tinyclip.train_tiny_clip(tmp_path / d, **kw) for d in ("a", "b")]
    a = load_file(tmp_path / "a" / "open_clip_model.safetensors")
    b = load_file(tmp_path / "b" / "open_clip_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert reports[0]["final_loss"] == reports[1]["final_loss"]
    for d in ("a", "b"):
        cfg = json.loads((tmp_path / d / "open_clip_config.json").read_text())
        assert cfg["model_cfg"] == tinyclip.TINY_CFG
        assert cfg["preprocess_cfg"]["size"] in (64, [64, 64])
        assert json.loads((tmp_path / d / "train_report.json").read_text())["steps"] == 8


def test_tiny_clip_loads_from_cache_and_separates_matched_pairs(tiny: models.LoadedModel) -> None:
    folder = tinyclip.tiny_clip_dir(train_if_missing=False)
    assert folder.parent == tinyclip.cache_dir() / "models"
    ident = tiny.identity
    assert ident["name"] == "tiny-clip" and ident["weights_file"] == "open_clip_model.safetensors"
    assert ident["weights_sha256"] == _sha256(folder / "open_clip_model.safetensors")
    assert (ident["embed_dim"], ident["image_size"], ident["context_length"]) == (64, 64, 20)
    assert not tiny.model.training
    report = json.loads((folder / "train_report.json").read_text())
    assert report["auroc"] >= 0.95 and report["seed"] == 0

    triples = list(clean_pairs(400, seed=4242))  # training used seed 0
    images = torch.stack([tiny.preprocess(Image.open(io.BytesIO(d)).convert("RGB"))
                          for _, d, _ in triples])
    with torch.no_grad():
        img = tiny.model.encode_image(images)
        txt = tiny.model.encode_text(tiny.tokenizer([c for *_, c in triples]))
    assert img.shape == txt.shape == (400, 64)
    img, txt = (torch.nn.functional.normalize(x, dim=-1) for x in (img, txt))
    rng = random.Random(1)
    matched, mismatched = [], []
    for i, (scene, _, _) in enumerate(triples):
        j = rng.randrange(len(triples))
        while j == i or triples[j][0] == scene:
            j = rng.randrange(len(triples))
        matched.append(float(img[i] @ txt[i]))
        mismatched.append(float(img[i] @ txt[j]))
    assert _rank_auroc(matched, mismatched) >= 0.9
    assert models.load("tiny-clip").identity == ident  # a second load is the same model


def test_resolve_accepts_every_form() -> None:
    assert models.resolve("tiny-clip") is models.REGISTRY["tiny-clip"]
    spec = models.resolve("openai-vit-b-32")
    assert (spec.arch, spec.pretrained, spec.quick_gelu) == ("ViT-B-32-quickgelu", "openai", True)
    assert {s.name for s in models.list_models()} >= {
        "tiny-clip", "openai-vit-b-32", "openai-vit-l-14", "laion-vit-b-32", "datacomp-vit-l-14"}
    tag = models.resolve("ViT-B-32@laion2b_s34b_b79k")
    assert (tag.arch, tag.pretrained, tag.quick_gelu) == ("ViT-B-32", "laion2b_s34b_b79k", False)
    assert models.resolve("ViT-B-32@openai").quick_gelu  # OpenAI weights were trained with it
    local = models.resolve("curate-tiny-clip@/some/where/weights.safetensors")
    assert (local.arch, local.pretrained) == ("curate-tiny-clip", "/some/where/weights.safetensors")
    folder = models.resolve("local-dir:/some/folder")
    assert folder.arch == "local-dir:/some/folder" and folder.pretrained is None


@pytest.mark.parametrize("name", ["no-such-model", "ViT-B-32@no_such_tag", "NoArch@openai",
                                  "ViT-B-32@/path/weights.txt", "local-dir:"])
def test_resolve_rejects_unknown_names(name: str) -> None:
    with pytest.raises(CurateError) as err:
        models.resolve(name)
    msg = str(err.value)
    assert "tiny-clip" in msg and "openai-vit-b-32" in msg and "local-dir:" in msg


def test_missing_local_checkpoint_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "open_clip_pytorch_model.bin"
    t = time.monotonic()
    with pytest.raises(CurateError, match=str(missing)):
        models.load(f"curate-tiny-clip@{missing}")
    with pytest.raises(CurateError, match="open_clip_config.json"):
        models.load(f"local-dir:{tmp_path}")
    assert time.monotonic() - t < 5


def test_uncached_hub_weights_fail_fast_offline(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("CURATE_WEIGHTS_DIR", raising=False)
    t = time.monotonic()
    with pytest.raises(CurateError) as err:
        models.load("openai-vit-b-32")
    assert time.monotonic() - t < 10
    msg = str(err.value)
    assert "open_clip_pytorch_model.bin" in msg and "timm/vit_base_patch32_clip_224.openai" in msg
    assert "--model ViT-B-32-quickgelu@/path/to/" in msg and "CURATE_WEIGHTS_DIR" in msg


def test_weights_dir_is_searched_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ViT-B-32-quickgelu" / "openai"
    folder.mkdir(parents=True)
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"stand-in")
    monkeypatch.setenv("CURATE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = models._hub_weights(models.resolve("openai-vit-b-32"))
    assert found == folder / "open_clip_pytorch_model.bin"


def test_user_checkpoint_uses_the_same_loading_path(tmp_path: Path) -> None:
    torch.manual_seed(11)
    state = CLIP(**tinyclip.TINY_CFG).state_dict()
    path = tmp_path / "my_model.pt"
    torch.save(state, path)
    m = models.load(f"curate-tiny-clip@{path}")
    assert m.identity["weights_sha256"] == _sha256(path)
    assert m.identity["weights_file"] == "my_model.pt" and m.identity["embed_dim"] == 64
    loaded = m.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with torch.no_grad():
        assert m.model.encode_text(m.tokenizer(["a red circle"])).shape == (1, 64)
