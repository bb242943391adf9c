"""The output formats ``curate export`` writes, by name: a format is a ``writer.Writer`` in a
module of its own, registered here with one line."""

from __future__ import annotations

from collections.abc import Callable

from curate.errors import CurateError
from curate.export.hf_parquet import HfParquetWriter
from curate.export.uids import UidsWriter
from curate.export.webdataset import WebDatasetWriter
from curate.export.writer import Writer

DEFAULT_FORMAT = "webdataset"
FORMATS: dict[str, Callable[[], Writer]] = {WebDatasetWriter.format: WebDatasetWriter}
FORMATS[UidsWriter.format] = UidsWriter
FORMATS[HfParquetWriter.format] = HfParquetWriter


def list_formats() -> list[str]:
    return sorted(FORMATS)


def make_writer(name: str) -> Writer:
    """A new writer of format ``name``; an unknown name is one line naming the formats."""
    if name not in FORMATS:
        raise CurateError(f"unknown export format {name!r} (formats: "
                          f"{', '.join(list_formats())})")
    return FORMATS[name]()
