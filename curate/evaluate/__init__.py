"""``curate evaluate``: does a curation help? DataComp in miniature.

Each selection trains the same proxy CLIP from scratch: tiny-clip's architecture
(``curate-tiny-clip``) and recipe (``tinyclip.train_clip``: AdamW, warmup + cosine, ClipLoss),
the same initial weights (``torch.manual_seed(seed)``), the same number of steps and batch size,
so every selection sees ``steps * batch_size`` samples (epochs over the selection, reshuffled
with ``seed``; a selection smaller than a batch repeats within a batch). Training runs on two
threads and is deterministic: the same selection, seed and budget give the same numbers.

Measured on a held-out set the proxy never trains on:

* default: ``heldout_n`` clean synthetic pairs, ``synth.clean_pairs(heldout_n, seed=999_983)``
  (a seed no pool or tiny-clip training uses). Zero-shot classification over the 40 classes
  colour x shape (8 colours x 5 shapes of ``synth``: red green blue yellow purple orange white
  black x circle square triangle star diamond), one prompt per class,
  ``"a photo of a {colour} {shape}"``; an image's class is its scene's colour and shape
  (count, size, position and background are ignored). Chance is 1/40.
* ``heldout=DIR``, another workspace (real data): its ok samples, sorted by ``sample_id`` (a
  content hash: a pseudo-random order), the first ``heldout_n`` whose image decodes. Zero-shot
  only if it has labels: a ``label`` column in ``samples/part-*.parquet`` or a
  ``DIR/labels.parquet`` with ``sample_id`` and ``label``; classes are the distinct labels,
  prompts ``"a photo of a {label}"``, measured over the held-out samples that have a label.
  Without labels ``zero_shot_acc`` is None.

Held-out samples whose ``sample_id`` (content hash of image bytes and caption) is also in the
training workspace are dropped first (``heldout_overlap`` counts them), so no pair is both
trained and tested on. Retrieval is recall@1 over the whole held-out set: image->text (the
highest-cosine caption is the image's own, by index) and text->image; chance is 1/N.

Progress (selection, step, loss, samples/s) goes to stderr; the results, with the held-out
set's description, to ``<workspace>/evaluations/<UTC time>.json``.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from curate.errors import CurateError
from curate.files import write_json
from curate.images import decode_rgb, read_bytes
from curate.workspace import Workspace

HELDOUT_SEED = 999_983
PROMPT = "a photo of a {}"
_COLS = ["sample_id", "status", "caption", "image_path", "image_offset", "image_length"]


class HeldOut:
    """Preprocessed held-out images, their caption tokens and (optionally) class labels."""

    def __init__(self, info: dict, images: torch.Tensor, texts: torch.Tensor,
                 labels: torch.Tensor | None = None, prompts: torch.Tensor | None = None):
        self.info, self.images, self.texts = info, images, texts
        self.labels, self.prompts = labels, prompts  # labels: class index per image, -1 = none


def synthetic_heldout(n: int, preprocess: Any, tokenizer: Any, exclude: set[str],
                      seed: int = HELDOUT_SEED) -> HeldOut:
    """``n`` clean synthetic pairs minus any whose content id is in ``exclude``."""
    from curate.hashing import content_id
    from curate.synth import COLOURS, SHAPES, clean_pairs

    classes = [(c, s) for c in COLOURS for s in SHAPES]
    index = {cs: i for i, cs in enumerate(classes)}
    images, captions, labels, overlap = [], [], [], 0
    for scene, data, caption in clean_pairs(n, seed):
        if content_id(data, caption.encode()) in exclude:
            overlap += 1
            continue
        images.append(preprocess(decode_rgb(data)))
        captions.append(caption)
        labels.append(index[(scene.colour, scene.shape)])
    info = {"kind": "synthetic", "seed": seed, "n": len(images), "heldout_overlap": overlap,
            "classes": len(classes), "prompt": PROMPT.format("{colour} {shape}")}
    return HeldOut(info, torch.stack(images), tokenizer(captions), torch.tensor(labels),
                   tokenizer([PROMPT.format(f"{c} {s}") for c, s in classes]))


def workspace_heldout(path: str | Path, n: int, preprocess: Any, tokenizer: Any,
                      exclude: set[str]) -> HeldOut:
    """Up to ``n`` ok samples of workspace ``path`` (see the module docstring)."""
    ws = Workspace.open(path)
    rows: list[dict] = []
    for part in ws.sample_parts():
        names = pq.read_schema(part).names
        t = pq.read_table(part, columns=_COLS + (["label"] if "label" in names else []))
        rows += t.filter(pc.equal(t["status"], "ok")).to_pylist()
    labels_file = ws.root / "labels.parquet"
    if labels_file.exists():
        lt = pq.read_table(labels_file)
        if not {"sample_id", "label"} <= set(lt.column_names):
            raise CurateError(f"{labels_file} needs columns sample_id and label")
        by_id = {s: lab for s, lab in zip(lt["sample_id"].to_pylist(), lt["label"].to_pylist(),
                                          strict=True)}
        for r in rows:
            r["label"] = by_id.get(r["sample_id"], r.get("label"))
    rows.sort(key=lambda r: r["sample_id"])
    overlap = sum(r["sample_id"] in exclude for r in rows)
    images, kept = [], []
    for r in rows:
        if len(kept) == n:
            break
        if r["sample_id"] in exclude:
            continue
        try:
            images.append(preprocess(decode_rgb(read_bytes(
                r["image_path"], r["image_offset"], r["image_length"]))))
        except Exception:  # noqa: BLE001 - an image that does not decode is not held out
            continue
        kept.append(r)
    if len(kept) < 2:
        raise CurateError(f"held-out workspace {ws.root} has {len(kept)} usable samples; "
                          "retrieval needs at least 2")
    named = [r.get("label") for r in kept]
    classes = sorted({str(x) for x in named if x is not None and str(x).strip()})
    info = {"kind": "workspace", "path": str(ws.root), "n": len(kept),
            "heldout_overlap": overlap, "classes": len(classes) if len(classes) > 1 else 0}
    texts = tokenizer([r["caption"] or "" for r in kept])
    if len(classes) < 2:
        return HeldOut(info, torch.stack(images), texts)
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index.get(str(x), -1) if x is not None else -1 for x in named])
    info.update(prompt=PROMPT.format("{label}"), labelled=int((labels >= 0).sum()))
    return HeldOut(info, torch.stack(images), texts, labels,
                   tokenizer([PROMPT.format(c) for c in classes]))


def _encode(fn: Any, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    out = torch.cat([fn(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    return torch.nn.functional.normalize(out, dim=-1)


@torch.inference_mode()
def measure(model: torch.nn.Module, held: HeldOut) -> dict[str, float | None]:
    """Zero-shot accuracy (None without labels) and recall@1 both ways on ``held``."""
    model.eval()
    img = _encode(model.encode_image, held.images)
    txt = _encode(model.encode_text, held.texts)
    sim, truth = img @ txt.T, torch.arange(len(img))
    out: dict[str, float | None] = {
        "zero_shot_acc": None,
        "i2t_r1": int((sim.argmax(1) == truth).sum()) / len(img),
        "t2i_r1": int((sim.argmax(0) == truth).sum()) / len(img)}
    if held.labels is not None and held.prompts is not None:
        has = held.labels >= 0
        pred = (img @ _encode(model.encode_text, held.prompts).T).argmax(1)
        out["zero_shot_acc"] = int((pred[has] == held.labels[has]).sum()) / max(1, int(has.sum()))
    return out


def selection_ids(ws: Workspace, name: str) -> list[str]:
    """The distinct sample ids of selection ``name``, sorted (so a result depends only on the
    set of samples, not on their rank)."""
    path = ws.root / "selections" / f"{name}.parquet"
    if not path.is_file():
        have = sorted(p.stem for p in (ws.root / "selections").glob("*.parquet"))
        raise CurateError(f"no selection {name!r} in {ws.root} (have: "
                          f"{', '.join(have) or 'none'})")
    try:
        t = pq.read_table(path, columns=["sample_id"])
    except (pa.ArrowException, OSError, KeyError) as e:
        raise CurateError(f"selection {name!r}: cannot read a sample_id column from {path} "
                          f"({e})") from None
    ids = sorted({s for s in t["sample_id"].to_pylist() if s is not None})
    if not ids:
        raise CurateError(f"selection {name!r} is empty: nothing to train on")
    return ids


def _training_set(ws: Workspace, name: str, ids: list[str], preprocess: Any,
                  cache: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str], int]:
    """(images, captions, skipped) for the selection's ok samples whose image decodes.
    ``cache`` keeps decoded tensors across selections of one call."""
    want = pa.array(ids, pa.string())
    rows: dict[str, dict] = {}
    for part in ws.sample_parts():
        t = pq.read_table(part, columns=_COLS)
        t = t.filter(pc.is_in(t["sample_id"], value_set=want))
        rows.update((r["sample_id"], r) for r in t.to_pylist())
    unknown = len(ids) - len(rows)
    if unknown == len(ids):
        raise CurateError(f"selection {name!r}: none of its {len(ids)} sample ids is in "
                          f"{ws.root} (a selection from another workspace?)")
    images, captions = [], []
    for sid in ids:
        r = rows.get(sid)
        if r is None or r["status"] != "ok":
            continue
        if sid not in cache:
            try:
                cache[sid] = preprocess(decode_rgb(read_bytes(
                    r["image_path"], r["image_offset"], r["image_length"])))
            except Exception:  # noqa: BLE001 - undecodable: skipped, counted
                continue
        images.append(cache[sid])
        captions.append(r["caption"] or "")
    if not images:
        raise CurateError(f"selection {name!r} has no ok sample whose image decodes: "
                          "nothing to train on")
    return torch.stack(images), captions, len(ids) - len(images)


def evaluate(workspace: str | Path, selections: list[str], steps: int = 300,
             batch_size: int = 128, seed: int = 0, heldout: str | Path | None = None,
             heldout_n: int = 1000, seeds: list[int] | None = None) -> list[dict]:
    """Train the proxy CLIP on each selection of ``workspace`` with the same budget and seed;
    return (and write to ``evaluations/<UTC time>.json``) one dict per selection: name, size
    (samples trained on), skipped (ids not ok, unknown or undecodable), steps, batch_size,
    seed, epochs, final_loss, seconds (decode + train + measure), zero_shot_acc, i2t_r1,
    t2i_r1. See the module docstring for the held-out set, classes and prompts.

    ``seeds`` (several training seeds) trains each selection once per seed: the metrics are
    then the means, with ``seeds``, ``sd`` (sample standard deviation per metric) and
    ``per_seed`` (each run's metrics) beside them; one proxy run is noisy, the mean less so."""
    from curate.models import tinyclip

    lr = tinyclip.TRAIN_DEFAULTS["lr"]  # tiny-clip's own
    ws = Workspace.open(workspace)
    if not selections:
        raise CurateError("name at least one selection to evaluate")
    if steps < 1 or batch_size < 2 or heldout_n < 2:
        raise CurateError("--steps must be >= 1, --batch-size >= 2 and --heldout-n >= 2")
    wanted = {name: selection_ids(ws, name) for name in dict.fromkeys(selections)}  # fail fast
    if heldout is not None and Path(heldout).expanduser().resolve() == ws.root:
        raise CurateError("the held-out workspace is the training workspace; name another")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # fixed, so the numbers do not depend on the machine's cores
    try:
        _, preprocess, tokenizer = tinyclip.new_model(seed)
        exclude: set[str] = set()
        for part in ws.sample_parts():
            exclude.update(pq.read_table(part, columns=["sample_id"])["sample_id"].to_pylist())
        held = (workspace_heldout(heldout, heldout_n, preprocess, tokenizer, exclude)
                if heldout is not None else
                synthetic_heldout(heldout_n, preprocess, tokenizer, exclude))
        _log(f"held out: {held.info}")
        cache: dict[str, torch.Tensor] = {}
        results = []
        for name in selections:
            t0 = time.time()
            images, captions, skipped = _training_set(ws, name, wanted[name], preprocess, cache)
            texts = tokenizer(captions)
            _log(f"evaluate {name}: {len(images)} samples ({skipped} skipped), {steps} steps "
                 f"x {batch_size}")
            runs = []
            for s in seeds or [seed]:
                model, _, _ = tinyclip.new_model(s)
                loss = tinyclip.train_clip(model, images, texts, steps, batch_size, lr, s,
                                           label=f"evaluate {name} (seed {s}):")
                runs.append({"seed": s, "final_loss": round(loss, 4), **measure(model, held)})
                del model
            results.append({"name": name, "size": len(images), "skipped": skipped,
                            "steps": steps, "batch_size": batch_size,
                            "epochs": round(steps * batch_size / len(images), 2),
                            **_combine(runs), "seconds": round(time.time() - t0, 2)})
            del images, texts
    finally:
        torch.set_num_threads(threads)
    now = datetime.now(timezone.utc)
    path = write_json({"created_at": now.isoformat(), "workspace": str(ws.root),
                       "arch": tinyclip.TINY_ARCH, "lr": lr, "heldout": held.info,
                       "results": results},
                      ws.root / "evaluations" / f"{now.strftime('%Y%m%dT%H%M%S_%fZ')}.json")
    _log(f"wrote {path}")
    return results


METRICS = ("zero_shot_acc", "i2t_r1", "t2i_r1")


def _combine(runs: list[dict]) -> dict:
    """One run's metrics as they are; several runs' as means, with sd and each run."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "seed": runs[0]["seed"],
                           "final_loss": round(statistics.fmean(r["final_loss"] for r in runs),
                                               4), "sd": {}, "per_seed": runs}
    for k in METRICS:
        got = [r[k] for r in runs if r[k] is not None]
        out[k] = statistics.fmean(got) if got else None
        out["sd"][k] = statistics.stdev(got) if len(got) > 1 else None
    return out


def format_table(results: list[dict]) -> str:
    """The results as a fixed-width table (accuracies in %; mean ± sd over several seeds)."""
    def pct(r: dict, k: str) -> str:
        x, sd = r[k], r.get("sd", {}).get(k)
        return "-" if x is None else f"{100 * x:.1f}" + ("" if sd is None else f"±{100 * sd:.1f}")
    width = max([9, *(len(r["name"]) for r in results)])
    lines = [f"{'selection':<{width}} {'size':>7} {'epochs':>7} {'zero-shot':>10} "
             f"{'i2t R@1':>10} {'t2i R@1':>10} {'seconds':>8}"]
    lines += [f"{r['name']:<{width}} {r['size']:>7} {r['epochs']:>7.1f} "
              f"{pct(r, 'zero_shot_acc'):>10} {pct(r, 'i2t_r1'):>10} {pct(r, 't2i_r1'):>10} "
              f"{r['seconds']:>8.1f}" for r in results]
    seeds = {tuple(r.get("seeds", [r["seed"]])) for r in results}
    if len(seeds) == 1:
        lines.append(f"training seeds: {', '.join(map(str, seeds.pop()))}")
    return "\n".join(lines)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
