"""Named CLIP models and one loading path for all of them, with fast, clear offline failures.

``tiny-clip`` is a small open_clip model curate trains itself on clean synthetic pairs, so tests
and demos need no download; it is cached as an open_clip ``local-dir`` like any user checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip
import torch

from curate.workspace import CurateError, atomic_path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
HUB_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
TINY_ARCH, TINY_VERSION = "curate-tiny-clip", "tiny-clip-v1"
# ~3.4 MFLOPs per (image, text) pair: 16 image patches, 20 text tokens, width 48.
TINY_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 48, "layers": 2,
                   "head_width": 24, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 48, "heads": 2,
                 "layers": 1, "mlp_ratio": 2.0},
}
FORMS = ("ARCH@TAG (an open_clip pretrained tag)",
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
                                 "OpenAI CLIP ViT-B/32 (needs QuickGELU)"),
    "openai-vit-l-14": ModelSpec("openai-vit-l-14", "ViT-L-14-quickgelu", "openai", True,
                                 "OpenAI CLIP ViT-L/14 (needs QuickGELU)"),
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


@lru_cache(maxsize=1)
def _register_tiny_arch() -> None:
    """Make ``curate-tiny-clip`` a known open_clip architecture (once per process)."""
    path = cache_dir() / "models" / "configs" / f"{TINY_ARCH}.json"
    text = json.dumps(TINY_CFG, indent=2, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    open_clip.add_model_config(path)


def _unknown(name: str, why: str) -> CurateError:
    """The error for a model name curate cannot resolve, listing what it accepts."""
    return CurateError(f"unknown model {name!r} ({why}); registered models: "
                       f"{', '.join(REGISTRY)}; or use {'; '.join(FORMS)}")


def resolve(name: str) -> ModelSpec:
    """Turn a model name in any accepted form into a spec, without loading anything."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("local-dir:") and len(name) > len("local-dir:"):
        return ModelSpec(name, name, None, description="open_clip local-dir folder")
    arch, at, tag = name.partition("@")
    if not at or not tag:
        raise _unknown(name, "not registered")
    _register_tiny_arch()
    if arch not in open_clip.list_models():
        raise _unknown(name, f"{arch!r} is not an open_clip architecture")
    if tag.endswith(WEIGHT_SUFFIXES):
        return ModelSpec(name, arch, tag, description="local checkpoint")
    if tag.startswith(("/", "~", ".")) or os.sep in tag:
        raise _unknown(name, f"a weights file must end in {', '.join(WEIGHT_SUFFIXES)}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise _unknown(name, f"{tag!r} is not a pretrained tag of {arch}; its tags: {tags}")
    return ModelSpec(name, arch, tag, bool(cfg.get("quick_gelu")), "open_clip pretrained tag")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: str | Path) -> str:
    """The sha256 of a weights file, hashed once per (path, mtime, size) so reloads are cheap."""
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
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface").expanduser() / "hub"


@lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co:443 accepts a connection within ``timeout``, DNS included."""
    ok: list[bool] = []

    def probe() -> None:
        with contextlib.suppress(OSError):
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            ok.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _hub_weights(spec: ModelSpec) -> Path:
    """A local file for a pretrained tag: $CURATE_WEIGHTS_DIR, the HF cache, else a download."""
    tag = spec.pretrained or ""
    hint = (f"pass --model {spec.arch}@/path/to/open_clip_pytorch_model.bin, or put the file "
            f"in $CURATE_WEIGHTS_DIR/{spec.arch}/{tag}/")
    if os.environ.get("CURATE_WEIGHTS_DIR"):
        folder = Path(os.environ["CURATE_WEIGHTS_DIR"]).expanduser() / spec.arch / tag
        found = [folder / n for n in HUB_FILENAMES if (folder / n).is_file()] + sorted(
            p for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
        if found:
            return found[0]
    cfg = open_clip.get_pretrained_cfg(spec.arch, tag)
    repo = cfg.get("hf_hub", "").rstrip("/")
    from huggingface_hub import try_to_load_from_cache

    for filename in HUB_FILENAMES if repo else ():
        hit = try_to_load_from_cache(repo, filename, cache_dir=_hub_cache())
        if isinstance(hit, str):
            return Path(hit)
    where = f"{repo}/{HUB_FILENAMES[1]} from huggingface.co" if repo else cfg.get("url", "?")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline or not _hub_reachable():  # never enter open_clip's slow retrying downloader
        raise CurateError(f"model {spec.name!r} needs {where}, which is not in the Hugging Face "
                          f"cache ({_hub_cache()}) and the hub is offline; {hint}")
    try:
        return Path(open_clip.download_pretrained(cfg, cache_dir=str(_hub_cache())))
    except Exception as e:  # any download failure is the user's to fix
        raise CurateError(f"could not download {where} for {spec.name!r} ({e}); {hint}") from e


def _local_dir_weights(folder: Path) -> Path:
    """The weights file open_clip will load from a local-dir ``folder``, checked up front."""
    if not (folder / "open_clip_config.json").is_file():
        raise CurateError(f"{folder} is not an open_clip local-dir folder (it needs "
                          "open_clip_config.json and weights); pass --model local-dir:/path")
    found = open_clip.factory._find_checkpoint_in_dir(folder)
    if found is None:
        raise CurateError(f"no weights file (.safetensors, .bin or .pth) in {folder}")
    return Path(found)


def load(name: str, device: str = "cpu") -> LoadedModel:
    """Load any spec through open_clip, failing fast with a fix when weights are missing."""
    spec = resolve(name)
    source, kwargs = spec.arch, {}
    if spec.arch == TINY_ARCH and spec.pretrained == TINY_VERSION:
        source = f"local-dir:{tiny_clip_dir()}"
    if source.startswith("local-dir:"):
        folder = Path(source[len("local-dir:"):]).expanduser().resolve()
        source, weights = f"local-dir:{folder}", _local_dir_weights(folder)
    elif spec.pretrained and open_clip.get_pretrained_cfg(spec.arch, spec.pretrained):
        weights = _hub_weights(spec)
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
        kwargs = {f"image_{k}": cfg.get(k) for k in ("mean", "std", "interpolation")}
        kwargs["image_resize_mode"] = cfg.get("resize_mode")
    else:
        weights = Path(spec.pretrained or "").expanduser()
        if not weights.is_file():
            raise CurateError(f"weights file {weights} does not exist; pass --model "
                              f"{spec.arch}@/path/to/open_clip_pytorch_model.bin")
    pretrained = None if source.startswith("local-dir:") else str(weights)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            source, pretrained=pretrained, device=device, force_quick_gelu=spec.quick_gelu,
            **kwargs)
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        raise CurateError(f"could not load {spec.name!r} from {weights}: {e}") from e
    size = model.visual.image_size
    identity = {"name": spec.name, "arch": spec.arch, "pretrained": spec.pretrained,
                "quick_gelu": spec.quick_gelu, "weights_file": weights.name,
                "weights_sha256": weights_sha256(weights), "embed_dim": int(model.visual.output_dim),
                "image_size": int(size[0] if isinstance(size, (tuple, list)) else size),
                "context_length": int(model.context_length)}
    return LoadedModel(model.eval(), preprocess, open_clip.get_tokenizer(source), identity)


def tiny_clip_dir(train_if_missing: bool = True) -> Path:
    """The cached tiny-clip local-dir folder, trained (atomically) on first use."""
    final = cache_dir() / "models" / TINY_VERSION
    if not (final / "open_clip_model.safetensors").is_file():
        if not train_if_missing:
            raise CurateError(f"tiny-clip is not trained yet ({final} is missing)")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_VERSION}.", dir=final.parent))
        try:
            train_tiny_clip(tmp)
            with contextlib.suppress(OSError):  # another process got there first: keep theirs
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not (final / "open_clip_config.json").is_file() or not (
            final / "open_clip_model.safetensors").is_file():
        raise CurateError(f"{final} is incomplete; delete it so curate can retrain tiny-clip")
    return final


def decode_pool(n: int, seed: int, preprocess: Callable, tokenizer: Callable
                ) -> tuple[torch.Tensor, torch.Tensor, list]:
    """A clean synthetic pool as preprocessed images, tokens and scenes (as at inference)."""
    from PIL import Image

    from curate.synth import clean_pairs

    triples = list(clean_pairs(n, seed))
    images = [preprocess(Image.open(io.BytesIO(d)).convert("RGB")) for _, d, _ in triples]
    return torch.stack(images), tokenizer([c for *_, c in triples]), [s for s, *_ in triples]


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Chance that a positive outscores a negative, ties counting half (Mann-Whitney)."""
    diff = pos.double()[:, None] - neg.double()[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def mismatch_partners(scenes: list, seed: int) -> torch.Tensor:
    """For each sample, another sample whose scene differs: its caption is a true mismatch."""
    rng, out = random.Random(seed), []
    for i, scene in enumerate(scenes):
        j = i
        while j == i or scenes[j] == scene:
            j = rng.randrange(len(scenes))
        out.append(j)
    return torch.tensor(out)


@torch.inference_mode()
def pool_auroc(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor,
               scenes: list, seed: int = 0) -> float:
    """Matched-vs-mismatched cosine AUROC of ``model`` on a decoded clean pool."""
    img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    txt = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
    return auroc((img * txt).sum(-1), (img * txt[mismatch_partners(scenes, seed)]).sum(-1))


def train_tiny_clip(out_dir: Path, seed: int = 0, steps: int = 300, n_train: int = 6000,
                    batch_size: int = 256, lr: float = 2e-3) -> dict:
    """Train tiny-clip deterministically into ``out_dir`` as a local-dir; return its report."""
    from safetensors.torch import save_file

    out_dir, start, threads = Path(out_dir), time.time(), torch.get_num_threads()
    out_dir.mkdir(parents=True, exist_ok=True)
    _register_tiny_arch()
    torch.set_num_threads(2)  # fixed, so two trainings give identical weights
    try:
        torch.manual_seed(seed)
        quiet = logging.root.manager.disable
        logging.disable(logging.WARNING)  # open_clip warns a fresh model has no weights: the point
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH)
        finally:
            logging.disable(quiet)
        tokenizer = open_clip.get_tokenizer(TINY_ARCH)
        images, texts, _ = decode_pool(n_train, seed, preprocess, tokenizer)
        groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.05},
                  {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=lr)
        warmup = max(1, steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, then cosine decay
            opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
        loss_fn, gen = open_clip.ClipLoss(), torch.Generator().manual_seed(seed)
        order, pos, t0 = torch.randperm(n_train, generator=gen), 0, time.time()
        model.train()
        for step in range(1, steps + 1):
            if pos + batch_size > n_train:
                order, pos = torch.randperm(n_train, generator=gen), 0
            idx, pos = order[pos:pos + batch_size], pos + batch_size
            loss = loss_fn(*model(images[idx], texts[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if step % 50 == 0 or step == steps:
                rate = step * batch_size / (time.time() - t0)
                print(f"tiny-clip step {step}/{steps} loss {loss.item():.3f} {rate:.0f} samples/s",
                      file=sys.stderr, flush=True)
        eval_seed = seed + 10_000
        score = pool_auroc(model.eval(), *decode_pool(1000, eval_seed, preprocess, tokenizer),
                           eval_seed)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(out_dir / "open_clip_model.safetensors"))
        config = {"model_cfg": TINY_CFG, "preprocess_cfg": dict(model.visual.preprocess_cfg)}
        (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        report = {"version": TINY_VERSION, "seed": seed, "steps": steps, "n_train": n_train,
                  "batch_size": batch_size, "seconds": round(time.time() - start, 2),
                  "final_loss": round(loss.item(), 4), "auroc": round(score, 4),
                  "eval_seed": eval_seed, "params": sum(p.numel() for p in model.parameters())}
        (out_dir / "train_report.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        torch.set_num_threads(threads)
