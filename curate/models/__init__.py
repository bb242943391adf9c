"""Named CLIP models and one loading path for all of them, with fast, clear offline failures.

``tiny-clip`` is a small open_clip model curate trains itself on clean synthetic pairs, so tests
and demos need no download; it is cached as an open_clip ``local-dir`` like any user checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip
import torch

from curate.errors import CurateError
from curate.models.tinyclip import TINY_ARCH, TINY_VERSION, register_arch, tiny_clip_dir

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
HUB_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
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
    register_arch()
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


def folder_weights(folder: str | Path) -> dict[str, str]:
    """{file name: sha256} of every weights file in a model folder (a transformers model): what
    a pass records so the runner can refuse to mix its outputs with other weights'."""
    return {f.name: weights_sha256(f) for f in sorted(Path(folder).iterdir())
            if f.suffix in WEIGHT_SUFFIXES and f.is_file()}


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
                "weights_sha256": weights_sha256(weights),
                "embed_dim": int(model.visual.output_dim),
                "image_size": int(size[0] if isinstance(size, (tuple, list)) else size),
                "context_length": int(model.context_length)}
    return LoadedModel(model.eval(), preprocess, open_clip.get_tokenizer(source), identity)


