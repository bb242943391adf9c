"""Hugging Face ``save_to_disk`` folders: Arrow IPC stream files listed by ``state.json``
beside ``dataset_info.json``, or a ``DatasetDict`` (``dataset_dict.json`` and one such folder
per split, whose rows are keyed ``SPLIT/ROW``). Columns are found as for any table; ``Image``
bytes are copied into the workspace at ingest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from curate.errors import CurateError
from curate.ingest import tabular
from curate.ingest.kinds import Kind, Options, Record, Source, register


def _is_split(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def detect(path: Path) -> bool:
    return path.is_dir() and (_is_split(path) or (path / "dataset_dict.json").is_file())


def _splits(root: Path) -> list[tuple[str, Path]]:
    """(prefix of the keys, folder) of each split."""
    if _is_split(root):
        return [("", root)]
    try:
        names = json.loads((root / "dataset_dict.json").read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CurateError(f"{root}: cannot read dataset_dict.json ({e})") from None
    return [(f"{name}/", root / name) for name in names]


def _tables(folder: Path) -> pa.Table:
    """The split's rows (the Arrow files memory-mapped, not read)."""
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / f["filename"] for f in state["_data_files"]]
        return pa.concat_tables(pa.ipc.open_stream(pa.memory_map(str(f))).read_all()
                                for f in files)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as e:
        raise CurateError(f"{folder}: cannot read the save_to_disk folder ({e})") from None


def check(source: Source, options: Options) -> None:
    for _, folder in _splits(Path(source.path)):
        tabular.find_columns(source, _tables(folder).schema, options)


def read(source: Source, options: Options) -> Iterator[Record]:
    base = Path(options.image_root) if options.image_root else Path(source.path)
    for prefix, folder in _splits(Path(source.path)):
        table = _tables(folder)
        image_col, caption_col = tabular.find_columns(source, table.schema, options)
        for rec in tabular.records(source, table.to_batches(max_chunksize=256), image_col,
                                   caption_col, options, table.num_rows, base):
            rec.key = prefix + rec.key
            yield rec


KIND = register(Kind(name="hf_arrow", detect=detect, read=read, check=check,
                     label="a Hugging Face save_to_disk folder", rank=26))
