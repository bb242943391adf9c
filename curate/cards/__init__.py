"""``curate card``: a data card for a selection, generated from the workspace's manifests.

``data_cards/NAME.md`` in the workspace (and ``README.md`` beside the selection's last export):
Hugging Face dataset-card YAML front matter, then the Datasheets for Datasets questions answered
from the manifests: sources and counts at each step, every score with its model and weights
checksum, the rules with their parameters and thresholds, dedup and coreset figures, proxy
training results when ``curate evaluate`` ran, the code version, and pictures (the map of the
selection over the pool when a map exists, score histograms of kept against dropped samples).
Nothing in it is hand-written and it holds no clock: regenerating it gives the same bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import yaml

from curate import __version__
from curate.cards.facts import facts
from curate.cards.plots import histograms, selection_map
from curate.errors import CurateError
from curate.files import atomic_path, read_json
from curate.integrity import require_complete
from curate.lock import writes
from curate.workspace import EXPORT_DONE, Workspace

SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


def size_category(n: int) -> str:
    return next((c for limit, c in SIZE_CATEGORIES if n < limit), "n>1B")


@writes("card")
def write_card(workspace: str | Path, selection: str, out: str | Path | None = None,
               export_dir: str | Path | None = None, export_info: dict | None = None,
               allow_partial: bool = False) -> Path:
    """Write the card of ``selection`` to ``out`` (default ``data_cards/NAME.md`` in the
    workspace) with its pictures in ``NAME_files/`` beside it, and the same card as
    ``README.md`` in ``export_dir`` (default: the selection's last finished export). A card
    reports the passes' manifests, so an incomplete pass is refused unless ``allow_partial``."""
    ws = Workspace.open(workspace)
    require_complete(ws, "card", allow_partial)
    if not ws.selection(selection).json.exists():
        have = ws.selection_names()
        raise CurateError(f"no selection {selection!r} in {ws.root} (have: "
                          f"{', '.join(have) or 'none'})")
    out = Path(out) if out else ws.card_path(selection)
    export_dir = Path(export_dir) if export_dir else ws.last_export(selection)
    if export_info is None and export_dir is not None:
        export_info = read_json(export_dir / EXPORT_DONE)
    pictures = out.parent / f"{selection}_files"
    with ws.snapshot() as con:
        f = facts(ws, con, selection)
        f["pictures"] = _pictures(ws, con, selection, pictures, f)
    text = render(f, export_info)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    if export_dir is not None:
        with atomic_path(Path(export_dir) / "README.md") as tmp:
            tmp.write_text(text)
        if pictures.is_dir():
            dest = Path(export_dir) / pictures.name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(pictures, dest)
    return out


def _pictures(ws: Workspace, con: duckdb.DuckDBPyConnection, selection: str, folder: Path,
              f: dict) -> list[tuple[str, str]]:
    """Draw the histograms and (when a map exists) the map; returns (caption, relative path)."""
    shutil.rmtree(folder, ignore_errors=True)
    drawn = []
    cols = [c for c, _ in f["numeric_scores"]]
    if cols and histograms(con, ws, selection, cols, folder / "scores.png"):
        drawn.append((f"Score histograms, kept against dropped: {', '.join(cols[:12])}",
                      f"{folder.name}/scores.png"))
    title = selection_map(ws, selection, folder / "map.png")
    if title:
        drawn.append((title, f"{folder.name}/map.png"))
    return drawn


def front_matter(f: dict, export: dict | None) -> dict[str, Any]:
    """The Hugging Face dataset-card YAML (pretty_name, license, sizes, sources, tags, configs)."""
    licenses = f["licenses"]
    meta: dict[str, Any] = {"pretty_name": f"{f['name']} (curated with curate)",
                            "license": licenses[0] if len(licenses) == 1 else "other"}
    if meta["license"] == "other":
        meta["license_name"] = "mixed: see each sample's .json" if licenses else "unknown"
    meta.update({
        "size_categories": [size_category(f["kept"])],
        "source_datasets": f["source_datasets"],
        "task_categories": ["zero-shot-image-classification", "image-to-text",
                            "text-to-image"],
        "tags": ["webdataset", "image", "text", "image-text-pairs", "curated", "curate"],
        "annotations_creators": ["found"], "language_creators": ["found"]})
    if export:
        meta["configs"] = [{"config_name": "default", "data_files": [
            {"split": "train", "path": f"{export['name']}-*.tar"}]}]
        meta["dataset_info"] = {"splits": [{"name": "train", "num_examples": export["samples"],
                                            "num_bytes": sum(s["bytes"] for s in
                                                             export["shards"])}]}
    return meta


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def render(f: dict, export: dict | None) -> str:
    """The card as Markdown: YAML front matter, then the Datasheets sections."""
    name, out = f["name"], []
    add = out.append
    add("---\n" + yaml.safe_dump(front_matter(f, export), sort_keys=False, width=1000)
        + "---\n")
    add(f"# Dataset Card for {name}\n")
    add(f"{f['kept']:,} image-text pairs kept by selection `{name}` from {f['candidates']:,} "
        f"candidates ({f['start_text']}), out of {f['ingested']:,} pairs ingested from "
        f"{f['n_sources']} source files. Generated by curate {__version__} from the workspace's "
        "manifests; regenerate it with `curate card`.\n")
    add("## Motivation\n")
    add(f"Selection `{name}` keeps the pairs that pass this rule chain, in order: "
        f"`{f['chain']}`. Its purpose is recorded only as these rules.\n")
    add("## Composition\n")
    add(_table(["what", "value"], f["composition"]) + "\n")
    images = sum(n for _, n in f["per_image"])
    add(f"Captions: {f['kept']:,} pairs of {images:,} images, by caption source (`alt`: the "
        "source's own caption, web alt-text; `human`: COCO-style annotations; others: "
        "attached by `curate captions add` or `curate caption`):\n")
    add(_table(["caption source", "pairs", "share", "images"], f["captions"]) + "\n")
    add(_table(["captions per image", "images"], f["per_image"]) + "\n")
    if export:
        add(f"Exported as {len(export['shards'])} webdataset shards "
            f"(`{export['pattern']}`, {export['samples']:,} samples): per sample "
            f"`{{key}}.<image extension>` (the original bytes), `{{key}}.txt` (the caption) and "
            f"`{{key}}.json` ({export['members']['json']}). Keys are `{export['key_format']}`. "
            "`sizes.json` gives the samples per shard (open_clip reads it), `manifest.parquet` "
            "lists key, shard, sample id, rank and scores, `B3SUMS` holds a BLAKE3 checksum "
            "per shard (`b3sum -c B3SUMS`)."
            + (" Each sample is one image with every kept caption of it (`captions`, "
               "`caption_sources`, `sample_ids` in `.json`; the best-ranked in `.txt`)."
               if export.get("fingerprint", {}).get("group_captions") else "") + "\n")
        add(_table(["shard", "samples", "bytes", "blake3"],
                   [[s["name"], s["samples"], s["bytes"], s["blake3"]]
                    for s in export["shards"]]) + "\n")
    add("## Collection process\n")
    add(_table(["source kind", "files", "pairs"], f["sources"]) + "\n")
    add(f"Ingest: {f['ingested']:,} pairs, {f['ok']:,} ok, {f['failed']:,} failed (a failed "
        "pair may have several reasons):\n")
    add(_table(["reason", "pairs"], f["errors"] or [["(none)", 0]]) + "\n")
    add("## Preprocessing: scores\n")
    add(_table(["pass", "columns", "model", "architecture", "weights", "weights sha256",
                "parameters", "rows", "curate"], f["scores"] or [["(none)"] + [""] * 8]) + "\n")
    if f["embeddings"]:
        add(_table(["embeddings", "model", "dim", "weights sha256", "rows"], f["embeddings"])
            + "\n")
    add("## Preprocessing: selection\n")
    add(_table(["step", "rule", "parameters", "in", "out", "dropped", "details"], f["steps"])
        + "\n")
    if f["dedup"]:
        add("Duplicates dropped, by stage:\n")
        add(_table(["stage", "dropped", "groups"], f["dedup"]) + "\n")
    for step in f["coresets"]:
        add(f"Coreset budget: {step}\n")
    if f["evaluation"]:
        ev = f["evaluation"]
        add("## Evaluation: proxy training\n")
        add(f"`curate evaluate` ({ev['file']}): a {ev['arch']} proxy CLIP trained from scratch "
            f"on each selection with the same steps and seed, measured on {ev['heldout']}.\n")
        add(_table(["selection", "size", "steps", "zero-shot acc", "i2t R@1", "t2i R@1"],
                   ev["rows"]) + "\n")
    if f["pictures"]:
        add("## Pictures\n")
        add("\n\n".join(f"![{cap}]({path})\n\n*{cap}*" for cap, path in f["pictures"]) + "\n")
    add("## Uses\n")
    add("Training and evaluating image-text models such as CLIP. The selection reflects the "
        "scoring models listed above and inherits their biases; check it before other uses.\n")
    add("## Distribution and maintenance\n")
    add(f"License: {front_matter(f, export)['license']} ({f['license_note']}). Selection "
        f"created {f['created_at']} by curate {f['curate_version']}; this card by curate "
        f"{__version__}.\n")
    return "\n".join(out)

