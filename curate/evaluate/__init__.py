"""``curate evaluate``: does a curation help? DataComp in miniature.

Each selection trains the same proxy CLIP from scratch: tiny-clip's architecture
(``curate-tiny-clip``) and recipe (``tinyclip.train_clip``: AdamW, warmup + cosine, ClipLoss),
the same initial weights (``torch.manual_seed(seed)``), the same number of steps and batch size,
so every selection sees ``steps * batch_size`` samples (epochs over the selection, reshuffled
with ``seed``; a selection smaller than a batch repeats within a batch). Training runs on two
threads and is deterministic: the same selection, seed and budget give the same numbers.

Measured on a held-out set the proxy never trains on (``evaluate.heldout``): by default clean
synthetic pairs (zero-shot over the 40 colour x shape classes and retrieval recall@1), or
another workspace (``heldout=DIR``: retrieval, and zero-shot when it has labels).

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
from curate.evaluate.heldout import (
    SAMPLE_COLUMNS,
    HeldOut,
    measure,
    synthetic_heldout,
    workspace_heldout,
)
from curate.files import write_json
from curate.images import decode_rgb, read_bytes
from curate.lock import writes
from curate.models import tinyclip
from curate.workspace import Workspace

__all__ = ["HeldOut", "evaluate", "format_table", "measure", "selection_ids",
           "synthetic_heldout", "workspace_heldout"]


def selection_ids(ws: Workspace, name: str) -> list[str]:
    """The distinct sample ids of selection ``name``, sorted (so a result depends only on the
    set of samples, not on their rank)."""
    path = ws.selection(name).parquet
    if not path.is_file():  # a selection needs only its ids here: a hand-made one will do
        have = sorted(p.stem for p in ws.selections_dir.glob("*.parquet"))
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
        t = pq.read_table(part, columns=SAMPLE_COLUMNS)
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


@writes("evaluate")
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
                      ws.evaluations_dir / f"{now.strftime('%Y%m%dT%H%M%S_%fZ')}.json")
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
