"""Lance datasets (a ``NAME.lance`` folder with ``_versions/`` and ``data/``), read through
the optional ``pylance`` package (``pip install 'curate[lance]'``). Columns are found as for
any table; image bytes are copied into the workspace at ingest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curate.errors import CurateError
from curate.ingest import tabular
from curate.ingest.kinds import Kind, Options, Record, Source, register

INSTALL = "pip install 'curate[lance]'"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "_versions").is_dir() and (
        path.suffix == ".lance" or (path / "data").is_dir())


def _dataset(source: Source):  # -> lance.LanceDataset
    try:
        import lance
    except ImportError:
        raise CurateError(f"{source.path}: reading a Lance dataset needs pylance: "
                          f"{INSTALL}") from None
    try:
        return lance.dataset(source.path)
    except (OSError, ValueError, RuntimeError) as e:
        raise CurateError(f"{source.path}: cannot open the Lance dataset ({e})") from None


def check(source: Source, options: Options) -> None:
    tabular.find_columns(source, _dataset(source).schema, options)


def read(source: Source, options: Options) -> Iterator[Record]:
    ds = _dataset(source)
    image_col, caption_col = tabular.find_columns(source, ds.schema, options)
    base = Path(options.image_root) if options.image_root else Path(source.path).parent
    yield from tabular.records(source, ds.to_batches(batch_size=256), image_col, caption_col,
                               options, ds.count_rows(), base)


KIND = register(Kind(name="lance", detect=detect, read=read, check=check,
                     label="a Lance dataset", rank=27))
