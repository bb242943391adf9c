"""tiny-clip: a small open_clip model curate trains itself on clean synthetic pairs,
deterministically and in well under a minute on two CPU cores, so the tests and the demo need
no download. It is cached as an open_clip ``local-dir`` and loads like any user checkpoint.
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
import sys
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import open_clip
import torch

from curate.errors import CurateError
from curate.files import atomic_path
from curate.metrics import auroc
from curate.synth import SYNTH_VERSION

TINY_ARCH = "curate-tiny-clip"
# ~3.4 MFLOPs per (image, text) pair: 16 image patches, 20 text tokens, width 48.
TINY_CFG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 48, "layers": 2,
                   "head_width": 24, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 48, "heads": 2,
                 "layers": 1, "mlp_ratio": 2.0},
}
TRAIN_DEFAULTS = {"seed": 0, "steps": 300, "n_train": 6000, "batch_size": 256, "lr": 2e-3}
# the cache folder changes whenever the architecture or the training recipe does
TINY_VERSION = "tiny-clip-v1-" + hashlib.sha256(json.dumps(
    [TINY_CFG, TRAIN_DEFAULTS, SYNTH_VERSION], sort_keys=True).encode()).hexdigest()[:8]


def cache_dir() -> Path:
    """Where curate keeps derived artefacts such as the trained tiny-clip."""
    if os.environ.get("CURATE_CACHE"):
        return Path(os.environ["CURATE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "curate"


@lru_cache(maxsize=1)
def register_arch() -> None:
    """Make ``curate-tiny-clip`` a known open_clip architecture (once per process)."""
    path = cache_dir() / "models" / "configs" / f"{TINY_ARCH}.json"
    text = json.dumps(TINY_CFG, indent=2, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    open_clip.add_model_config(path)


def tiny_clip_dir(train_if_missing: bool = True) -> Path:
    """The cached tiny-clip local-dir folder, trained (atomically) on first use."""
    final = cache_dir() / "models" / TINY_VERSION
    if not (final / "open_clip_model.safetensors").is_file():
        if not train_if_missing:
            raise CurateError(f"tiny-clip is not trained yet ({final} is missing)")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_VERSION}.", dir=final.parent))
        try:
            train_tiny_clip(tmp, **TRAIN_DEFAULTS)
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
    return auroc((img * txt).sum(-1).numpy(),
                 (img * txt[mismatch_partners(scenes, seed)]).sum(-1).numpy())


def new_model(seed: int) -> tuple[torch.nn.Module, Callable, Callable]:
    """A freshly initialised tiny-clip (weights drawn after ``torch.manual_seed(seed)``), its
    inference preprocess and its tokenizer."""
    register_arch()
    torch.manual_seed(seed)
    quiet = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns a fresh model has no weights: the point
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH)
    finally:
        logging.disable(quiet)
    return model, preprocess, open_clip.get_tokenizer(TINY_ARCH)


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """Indices of ``steps`` batches. With at least a batch of samples: epochs without
    replacement, reshuffled when the rest of an epoch cannot fill a batch (that tail is
    skipped). With fewer: each batch is whole permutations of the samples, cut to size."""
    if n >= batch_size:
        order, pos = torch.randperm(n, generator=gen), 0
        for _ in range(steps):
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            yield order[pos:pos + batch_size]
            pos += batch_size
    else:
        for _ in range(steps):
            yield torch.cat([torch.randperm(n, generator=gen)
                             for _ in range(-(-batch_size // n))])[:batch_size]


def train_clip(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor, steps: int,
               batch_size: int, lr: float, seed: int, label: str = "tiny-clip") -> float:
    """tiny-clip's recipe on preprocessed ``images`` and ``texts`` (tokens): AdamW (weight decay
    0.05 on matrices only), linear warmup over 10% of the steps then cosine decay, open_clip's
    ClipLoss, logit scale clamped to 100, batches from ``_batches`` seeded by ``seed``.
    Deterministic for fixed inputs, seed and thread count. Prints progress to stderr every 50
    steps; returns the last step's loss."""
    n = len(images)
    groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": 0.05},
              {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warmup, then cosine decay
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    loss_fn, gen = open_clip.ClipLoss(), torch.Generator().manual_seed(seed)
    batches, t0 = _batches(n, batch_size, steps, gen), time.time()
    model.train()
    for step, idx in enumerate(batches, 1):
        loss = loss_fn(*model(images[idx], texts[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps:
            rate = step * batch_size / (time.time() - t0)
            print(f"{label} step {step}/{steps} loss {loss.item():.3f} {rate:.0f} samples/s",
                  file=sys.stderr, flush=True)
    return loss.item()


def train_tiny_clip(out_dir: Path, seed: int = 0, steps: int = 300, n_train: int = 6000,
                    batch_size: int = 256, lr: float = 2e-3) -> dict:
    """Train tiny-clip deterministically into ``out_dir`` as a local-dir; return its report."""
    from safetensors.torch import save_file

    out_dir, start, threads = Path(out_dir), time.time(), torch.get_num_threads()
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)  # fixed, so two trainings give identical weights
    try:
        model, preprocess, tokenizer = new_model(seed)
        images, texts, _ = decode_pool(n_train, seed, preprocess, tokenizer)
        loss = train_clip(model, images, texts, steps, batch_size, lr, seed)
        eval_seed = seed + 10_000
        score = pool_auroc(model.eval(), *decode_pool(1000, eval_seed, preprocess, tokenizer),
                           eval_seed)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(out_dir / "open_clip_model.safetensors"))
        config = {"model_cfg": TINY_CFG, "preprocess_cfg": dict(model.visual.preprocess_cfg)}
        (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        report = {"version": TINY_VERSION, "seed": seed, "steps": steps, "n_train": n_train,
                  "batch_size": batch_size, "seconds": round(time.time() - start, 2),
                  "final_loss": round(loss, 4), "auroc": round(score, 4),
                  "eval_seed": eval_seed, "params": sum(p.numel() for p in model.parameters())}
        (out_dir / "train_report.json").write_text(json.dumps(report, indent=2))
        return report
    finally:
        torch.set_num_threads(threads)
