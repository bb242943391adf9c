"""Tables (Parquet, CSV, TSV) with one row per sample: a column of image paths (relative to
the table, or to ``--image-root``), URLs (fetched once, at ingest) or image bytes, and a column
of captions, found by name or given by the user; the other columns are kept as the sample's
metadata. A table with no header row (CC3M, CC12M: ``caption<TAB>url``) is read with the
names ``--columns`` gives, its first row a sample like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.ingest import tabular
from curate.ingest.kinds import Kind, Options, Record, Source, register

TABLE_EXTS = (".parquet", ".csv", ".tsv")
IMAGE_COLUMNS, CAPTION_COLUMNS = tabular.IMAGE_COLUMNS, tabular.CAPTION_COLUMNS


def detect(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(TABLE_EXTS)


def check(source: Source, options: Options) -> None:
    """The table opens and has an image and a caption column."""
    tabular.find_columns(source, _open(Path(source.path), options).schema, options)


def read(source: Source, options: Options) -> Iterator[Record]:
    path = Path(source.path)
    table = _open(path, options)
    image_col, caption_col = tabular.find_columns(source, table.schema, options)
    base = Path(options.image_root) if options.image_root else path.parent
    yield from tabular.records(source, table.to_batches(), image_col, caption_col, options,
                               table.num_rows, base, drop_known=False)


def _open(path: Path, options: Options) -> pa.Table:
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        tsv = path.suffix.lower() == ".tsv"
        names = list(options.columns) if options.columns else None
        # TSV has no quoting (CC3M captions hold stray quotes that would swallow rows)
        parse = pcsv.ParseOptions(delimiter="\t" if tsv else ",",
                                  quote_char=False if tsv else '"')
        strings = {c: pa.string() for c in (options.caption_col, options.key_col,
                                            *tabular.CAPTION_COLUMNS) if c}
        return pcsv.read_csv(path, read_options=pcsv.ReadOptions(column_names=names),
                             parse_options=parse,
                             convert_options=pcsv.ConvertOptions(column_types=strings))
    except (pa.ArrowException, OSError) as e:
        raise CurateError(f"{path}: cannot read the table ({e})") from None


KIND = register(Kind(name="table", detect=detect, read=read, check=check,
                     label="a .parquet/.csv/.tsv table", rank=30))
