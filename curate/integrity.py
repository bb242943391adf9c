"""Is a pass's output whole? The checks ``curate verify``, ``curate info`` and every verb that
reads a pass (select, export, card, map) share.

A pass folder is complete when its manifest is readable and says ``complete``, it has one
readable part per samples part, with as many rows as that samples part has ``ok`` samples, and
no part without a samples part. Anything else is named, with the command that resumes it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.files import read_json
from curate.workspace import Workspace


@dataclass(frozen=True)
class PassHealth:
    """What is wrong with one pass folder (nothing when ``problems`` is empty)."""

    kind: str
    key: str
    folder: Path
    problems: tuple[str, ...] = field(default_factory=tuple)
    corrupt: tuple[Path, ...] = field(default_factory=tuple)  # parts that cannot be read
    resume: str = ""

    @property
    def complete(self) -> bool:
        return not self.problems


def ok_rows(part: Path) -> int:
    """The ``ok`` samples of one samples part (what a pass writes one row for)."""
    # ParquetFile, not read_table, and a dictionary counted with NumPy, not pyarrow.compute:
    # the dataset reader, the compute registry and pandas (which to_numpy imports) each cost
    # ~1 s to start in a fresh process, more than a small export takes
    col = pq.ParquetFile(part, read_dictionary=["status"]).read(columns=["status"])["status"]
    n = 0
    for chunk in col.chunks:
        words = chunk.dictionary.to_pylist()
        if "ok" not in words:
            continue
        ind = chunk.indices
        if ind.null_count:  # never in parts curate writes; the plain way then
            n += chunk.to_pylist().count("ok")
            continue
        # the indices' buffer as NumPy: Arrow's own to_numpy would import pandas
        idx = np.frombuffer(ind.buffers()[1], np.dtype(f"int{ind.type.bit_width}"))
        n += int(np.count_nonzero(idx[ind.offset:ind.offset + len(ind)] == words.index("ok")))
    return n


def resume_command(ws: Workspace, kind: str, key: str, manifest: dict | None) -> str:
    """The command that finishes a pass folder (a rerun computes only what is missing)."""
    w = shlex.quote(str(ws.root))
    m = manifest or {}
    if kind == "embeddings":
        model = (m.get("model") or {}).get("name") or key.split("+prompt-")[0]
        if m.get("pass") == "embed_texts" or "+prompt-" in key:
            return f"curate score -w {w} clip_score (it embeds its prompt first)"
        return f"curate embed -w {w} --model {shlex.quote(str(model))}"
    params = "".join(f" --param {shlex.quote(f'{k}={v}')}" for k, v in
                     _non_default(key).items())
    return f"curate score -w {w} {key.split('--')[0]}{params}"


def _non_default(key: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in key.split("--")[1:] if "=" in p)


def check_pass(ws: Workspace, kind: str, folder: Path,
               ok_counts: dict[str, int] | None = None) -> PassHealth:
    """The health of one pass folder against ``samples/`` (``ok_counts``: ok rows per samples
    part name, computed once by the caller when it checks several folders)."""
    counts = ok_counts if ok_counts is not None else {
        p.name: ok_rows(p) for p in ws.sample_parts()}
    problems: list[str] = []
    corrupt: list[Path] = []
    manifest = None
    try:
        manifest = read_json(folder / "manifest.json")
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
        if manifest.get("status") != "complete":
            problems.append(f"its manifest says {manifest.get('status', 'nothing')!r} "
                            "(a run was stopped)")
    except (OSError, ValueError) as e:
        problems.append(f"manifest.json unreadable ({type(e).__name__})")
    have = {p.name: p for p in folder.glob("part-*.parquet")}
    missing = sorted(set(counts) - set(have))
    if missing:
        problems.append(f"{len(missing)} of {len(counts)} parts missing ({missing[0]}"
                        + (", ..." if len(missing) > 1 else "") + ")")
    extra = sorted(set(have) - set(counts))
    if extra:
        problems.append(f"{len(extra)} parts without a samples part ({extra[0]})")
    for name in sorted(set(have) & set(counts)):
        try:
            rows = pq.read_metadata(have[name]).num_rows
        except (OSError, pa.ArrowException):
            corrupt.append(have[name])
            continue
        if rows != counts[name]:
            problems.append(f"{name} has {rows} rows for {counts[name]} ok samples (stale)")
    if corrupt:
        problems.append(f"{len(corrupt)} parts unreadable ({corrupt[0].name})")
    return PassHealth(kind, folder.name, folder, tuple(problems), tuple(corrupt),
                      resume_command(ws, kind, folder.name, manifest))


def all_passes(ws: Workspace, kinds: tuple[str, ...] = ("embeddings", "scores")
               ) -> list[PassHealth]:
    """The health of every pass folder of ``kinds`` (a folder without a manifest included)."""
    counts = {p.name: ok_rows(p) for p in ws.sample_parts()}
    out = []
    for kind in kinds:
        base = ws.root / kind
        for folder in sorted(d for d in base.iterdir() if d.is_dir()) if base.is_dir() else []:
            out.append(check_pass(ws, kind, folder, counts))
    return out


def require_complete(ws: Workspace, verb: str, allow_partial: bool = False,
                     kinds: tuple[str, ...] = ("embeddings", "scores")) -> list[PassHealth]:
    """Refuse, in one line naming the pass and the command that resumes it, to let ``verb``
    read a workspace with an incomplete pass; ``allow_partial`` reads what there is (the
    incomplete passes are returned, for the manifest)."""
    bad = [h for h in all_passes(ws, kinds) if not h.complete]
    if bad and not allow_partial:
        h = bad[0]
        more = f" (and {len(bad) - 1} more incomplete passes)" if len(bad) > 1 else ""
        raise CurateError(f"{verb} reads {h.kind}/{h.key}, which is incomplete: "
                          f"{'; '.join(h.problems)}{more}; finish it with `{h.resume}`, "
                          "or pass --allow-partial to use the rows there are")
    return bad
