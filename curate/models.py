"""Named CLIP models and one loading path for all of them, with clear offline failures.

``tiny-clip`` is a small open_clip model curate trains itself on clean synthetic pairs, so every
test and demo runs without downloads; it is cached as an open_clip ``local-dir`` folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

from curate.workspace import CurateError, atomic_path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
HUB_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TINY_ARCH, TINY_VERSION = "curate-tiny-clip", "tiny-clip-v1"
TINY_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2,
                   "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2, "mlp_ratio": 2.0},
}
FORMS = ("a registered name", "ARCH@TAG (open_clip pretrained tag)",
         "ARCH@/path/to/weights.{pt,bin,pth,safetensors}", "local-dir:/path/to/folder")


@dataclass(frozen=True)
class ModelSpec:
    """What to load: an open_clip architecture and where its weights come from."""

    name: str
    arch: str
    pretrained: str | None
    quick_gelu: bool = False
    description: str = ""


REGISTRY: dict[str, ModelSpec] = {
    "tiny-clip": ModelSpec("tiny-clip", TINY_ARCH, TINY_VERSION, False,
                           "tiny CLIP trained locally on synthetic shapes; no download"),
    "openai-vit-b-32": ModelSpec("openai-vit-b-32", "ViT-B-32-quickgelu", "openai", True,
                                 "OpenAI CLIP ViT-B/32 (QuickGELU)"),
    "openai-vit-l-14": ModelSpec("openai-vit-l-14", "ViT-L-14-quickgelu", "openai", True,
                                 "OpenAI CLIP ViT-L/14 (QuickGELU)"),
    "laion-vit-b-32": ModelSpec("laion-vit-b-32", "ViT-B-32", "laion2b_s34b_b79k", False,
                                "OpenCLIP ViT-B/32 trained on LAION-2B"),
    "datacomp-vit-l-14": ModelSpec("datacomp-vit-l-14", "ViT-L-14", "datacomp_xl_s13b_b90k",
                                   False, "OpenCLIP ViT-L/14 trained on DataComp-1B"),
}


@dataclass
class LoadedModel:
    """A model ready to embed: eval-mode module, its val transform, tokenizer and identity."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    identity: dict


def list_models() -> list[ModelSpec]:
    """The registered model specs, for `curate models` and error messages."""
    return list(REGISTRY.values())


def cache_dir() -> Path:
    """Where curate keeps derived artefacts such as the trained tiny-clip."""
    if os.environ.get("CURATE_CACHE"):
        return Path(os.environ["CURATE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "curate"


_TINY_REGISTERED: list[Path] = []


def _register_tiny_arch() -> None:
    """Make ``curate-tiny-clip`` a known open_clip architecture (once per process)."""
    if _TINY_REGISTERED:
        return
    path = cache_dir() / "models" / "configs" / f"{TINY_ARCH}.json"
    text = json.dumps(TINY_CFG, indent=2, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    open_clip.add_model_config(path)
    _TINY_REGISTERED.append(path)


def _unknown(name: str, why: str) -> CurateError:
    names = ", ".join(REGISTRY)
    return CurateError(f"unknown model {name!r} ({why}); registered: {names}; "
                       f"or use {'; '.join(FORMS)}")


def resolve(name: str) -> ModelSpec:
    """Turn a model name in any accepted form into a spec, without loading anything."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("local-dir:"):
        folder = name[len("local-dir:"):]
        if not folder:
            raise _unknown(name, "empty local-dir path")
        return ModelSpec(name, name, None, description="open_clip local-dir folder")
    if "@" not in name:
        raise _unknown(name, "not registered")
    arch, _, tag = name.partition("@")
    _register_tiny_arch()
    if arch not in open_clip.list_models():
        raise _unknown(name, f"{arch!r} is not an open_clip architecture")
    if tag.startswith(("/", "~", ".")) or os.sep in tag or tag.endswith(WEIGHT_SUFFIXES):
        if not tag.endswith(WEIGHT_SUFFIXES):
            raise _unknown(name, f"weights file must end in one of {', '.join(WEIGHT_SUFFIXES)}")
        return ModelSpec(name, arch, tag, description="local checkpoint")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise _unknown(name, f"{tag!r} is not a pretrained tag of {arch}; its tags: {tags}")
    return ModelSpec(name, arch, tag, bool(cfg.get("quick_gelu", False)),
                     "open_clip pretrained tag")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a weights file, computed once per (path, mtime, size)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now rather than at import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


@lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co:443 accepts a connection within ``timeout`` (DNS included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _offline() -> bool:
    """True when HF_HUB_OFFLINE is set or the hub cannot be reached."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or not _hub_reachable()


def _pick_weights(folder: Path) -> Path | None:
    """The weights file in ``folder``, preferring open_clip's own file names."""
    files = sorted(p for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    preferred = [folder / n for n in HUB_FILENAMES if (folder / n).is_file()]
    return (preferred or files or [None])[0]


def _hub_weights(spec: ModelSpec) -> Path:
    """A local file for a pretrained tag: CURATE_WEIGHTS_DIR, the HF cache, else download."""
    tag = spec.pretrained or ""
    hint = (f"pass --model {spec.arch}@/path/to/open_clip_pytorch_model.bin, or put the file in "
            f"$CURATE_WEIGHTS_DIR/{spec.arch}/{tag}/")
    if os.environ.get("CURATE_WEIGHTS_DIR"):
        found = _pick_weights(Path(os.environ["CURATE_WEIGHTS_DIR"]).expanduser() / spec.arch / tag)
        if found:
            return found
    cfg = open_clip.get_pretrained_cfg(spec.arch, tag)
    repo = cfg.get("hf_hub", "").rstrip("/")
    if cfg.get("file"):
        return Path(cfg["file"])
    from huggingface_hub import try_to_load_from_cache

    if repo:
        for filename in HUB_FILENAMES:
            hit = try_to_load_from_cache(repo, filename, cache_dir=_hub_cache())
            if isinstance(hit, str):
                return Path(hit)
    where = f"{repo}/{HUB_FILENAMES[1]} on huggingface.co" if repo else cfg.get("url", "?")
    if _offline():
        raise CurateError(f"model {spec.name!r} needs {where}, which is not in the Hugging Face "
                          f"cache ({_hub_cache()}) and the hub is offline; {hint}")
    try:
        return Path(open_clip.download_pretrained(cfg, cache_dir=str(_hub_cache())))
    except Exception as e:  # noqa: BLE001 - any download failure is the user's to fix
        raise CurateError(f"could not download {where} for {spec.name!r} ({e}); {hint}") from e


def load(name: str, device: str = "cpu") -> LoadedModel:
    """Load any spec through open_clip, failing fast with a fix when weights are missing."""
    spec = resolve(name)
    if spec.arch == TINY_ARCH and spec.pretrained == TINY_VERSION:
        source = f"local-dir:{tiny_clip_dir()}"
    elif spec.arch.startswith("local-dir:"):
        source = spec.arch
    else:
        source = spec.arch
    pretrained, kwargs = None, {}
    if source.startswith("local-dir:"):
        folder = Path(source[len("local-dir:"):]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise CurateError(f"{folder} is not an open_clip local-dir folder (it needs "
                              "open_clip_config.json and weights); pass --model local-dir:/path")
        weights = _pick_weights(folder)
        if weights is None:
            raise CurateError(f"no weights file ({', '.join(WEIGHT_SUFFIXES)}) in {folder}")
        source = f"local-dir:{folder}"
    elif spec.pretrained and open_clip.get_pretrained_cfg(spec.arch, spec.pretrained):
        weights = _hub_weights(spec)
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
        kwargs = dict(image_mean=cfg.get("mean"), image_std=cfg.get("std"),
                      image_interpolation=cfg.get("interpolation"),
                      image_resize_mode=cfg.get("resize_mode"))
        pretrained = str(weights)
    else:
        weights = Path(spec.pretrained or "").expanduser()
        if not weights.is_file():
            raise CurateError(f"weights file {weights} does not exist; pass --model "
                              f"{spec.arch}@/path/to/open_clip_pytorch_model.bin")
        pretrained = str(weights)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            source, pretrained=pretrained, device=device, force_quick_gelu=spec.quick_gelu,
            **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        raise CurateError(f"could not load {spec.name!r} from {weights}: {e}") from e
    model.eval()
    size = model.visual.image_size
    identity = dict(name=spec.name, arch=spec.arch, pretrained=spec.pretrained,
                    quick_gelu=spec.quick_gelu, weights_file=Path(weights).name,
                    weights_sha256=weights_sha256(weights),
                    embed_dim=int(model.visual.output_dim),
                    image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
                    context_length=int(model.context_length))
    return LoadedModel(model, preprocess, open_clip.get_tokenizer(source), identity)


def tiny_clip_dir(train_if_missing: bool = True) -> Path:
    """The cached tiny-clip local-dir folder, trained (atomically) on first use."""
    final = cache_dir() / "models" / TINY_VERSION
    complete = lambda: (final / "open_clip_config.json").is_file() and (  # noqa: E731
        final / "open_clip_model.safetensors").is_file()
    if complete():
        return final
    if not train_if_missing:
        raise CurateError(f"tiny-clip is not trained yet ({final} is missing); "
                          "load it once with training allowed, e.g. `curate models --train`")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_VERSION}.", dir=final.parent))
    try:
        train_tiny_clip(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            pass  # another process got there first: keep theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not complete():
        raise CurateError(f"{final} exists but is incomplete; delete it so curate can retrain")
    return final


def _decode_pool(n: int, seed: int, preprocess: Callable, tokenizer: Callable
                 ) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Images through the val transform, tokenized captions and scenes of a clean pool."""
    import io

    from PIL import Image

    from curate.synth import clean_pairs

    scenes, images, captions = [], [], []
    for scene, data, caption in clean_pairs(n, seed):
        scenes.append(scene)
        images.append(preprocess(Image.open(io.BytesIO(data)).convert("RGB")))
        captions.append(caption)
    return torch.stack(images), tokenizer(captions), scenes


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Probability a positive outscores a negative (ties count half), by ranks."""
    scores = torch.cat([pos, neg]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for v in scores.unique():  # average ranks over ties
        tie = scores == v
        ranks[tie] = ranks[tie].mean()
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mismatch_partner(scenes: list, seed: int) -> list[int]:
    """For each sample, another sample index whose scene differs (its caption is a mismatch)."""
    rng = random.Random(seed)
    partners = []
    for i, scene in enumerate(scenes):
        j = rng.randrange(len(scenes))
        while j == i or scenes[j] == scene:
            j = rng.randrange(len(scenes))
        partners.append(j)
    return partners


@torch.inference_mode()
def pool_auroc(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor,
               scenes: list, seed: int = 0) -> float:
    """Matched-vs-mismatched cosine AUROC of ``model`` on a decoded pool."""
    img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    txt = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
    partner = torch.tensor(mismatch_partner(scenes, seed))
    return auroc((img * txt).sum(-1), (img * txt[partner]).sum(-1))


def train_tiny_clip(out_dir: Path, seed: int = 0, steps: int = 300, n_train: int = 6000,
                    batch_size: int = 256, lr: float = 2e-3) -> dict:
    """Train tiny-clip deterministically into ``out_dir`` as a local-dir; return its report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _register_tiny_arch()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        start = time.time()
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH)
        tokenizer = open_clip.get_tokenizer(TINY_ARCH)
        images, texts, _ = _decode_pool(n_train, seed, preprocess, tokenizer)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                 {"params": rest, "weight_decay": 0.0}], lr=lr)
        warmup = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                                  * (1 + torch.cos(torch.tensor(s / steps * 3.14159)).item()))
        loss_fn = open_clip.ClipLoss()
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(n_train, generator=gen)
        model.train()
        pos, loss, t_train = 0, torch.tensor(0.0), time.time()
        for step in range(1, steps + 1):
            if pos + batch_size > n_train:
                order, pos = torch.randperm(n_train, generator=gen), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            img_f, txt_f, scale = model(images[idx], texts[idx])
            loss = loss_fn(img_f, txt_f, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)
            if step % 50 == 0 or step == steps:
                rate = step * batch_size / (time.time() - t_train)
                print(f"tiny-clip step {step}/{steps} loss {loss.item():.3f} {rate:.0f} samples/s",
                      file=sys.stderr, flush=True)
        model.eval()
        eval_seed = seed + 10_000
        ev_images, ev_texts, ev_scenes = _decode_pool(1000, eval_seed, preprocess, tokenizer)
        score = pool_auroc(model, ev_images, ev_texts, ev_scenes, eval_seed)
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(out_dir / "open_clip_model.safetensors"))
        config = {"model_cfg": TINY_CFG, "preprocess_cfg": dict(model.visual.preprocess_cfg)}
        (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        report = dict(version=TINY_VERSION, seed=seed, steps=steps, n_train=n_train,
                      batch_size=batch_size, seconds=round(time.time() - start, 2),
                      final_loss=round(loss.item(), 4), auroc=round(score, 4),
                      eval_seed=eval_seed, params=sum(p.numel() for p in model.parameters()))
        (out_dir / "train_report.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        torch.set_num_threads(threads)


def _replace_spec(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of ``spec`` with ``changes`` (kept for callers that derive specs)."""
    return replace(spec, **changes)
