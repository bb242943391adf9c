"""The contract of a source kind, the registry, and the one place that turns the paths a user
gives (files, globs, ``{a,b}`` and ``{000..009}`` braces, folders) into sources of a kind.

A kind is declared once, ``register(Kind(name=, detect=, read=, check=, rank=))``, by its own
reader module in this package; ``kinds()`` imports every module of the package first, so a new
file here is found without being listed anywhere. Detection asks the kinds in ``rank`` order.
"""

from __future__ import annotations

import glob as globlib
import importlib
import os
import pkgutil
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from curate.errors import CurateError

MAX_IMAGE_BYTES = 64 << 20  # an image larger than this is a failed row (Options, ingest)


@dataclass
class Record:
    """One input sample as found in its source, before validation."""

    key: str
    source: str
    kind: str
    image_path: str | None = None
    image_offset: int = 0
    image_length: int = 0
    image: bytes | None = None
    caption: bytes | None = None
    meta: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    store: bool = False  # bytes not addressable in place: ingest copies them into the workspace


@dataclass(frozen=True)
class Source:
    """One file or folder to read, and the name of its kind."""

    path: str
    kind: str


@dataclass(frozen=True)
class Options:
    """What the user said about a source: its columns (tables, and the fields of a tar's
    ``.json``), the names of a headerless table's columns, the folder a COCO file's or a
    table's relative image paths are under; ``None`` means find it. ``fetch``: how URLs are
    downloaded (``curate.ingest.fetch.FetchConfig``; its defaults when ``None``).
    ``max_image_bytes``: a larger image is a failed row ``image_too_large``, never read."""

    image_col: str | None = None
    caption_col: str | None = None
    key_col: str | None = None
    columns: tuple[str, ...] | None = None
    image_root: str | None = None
    fetch: object | None = None
    max_image_bytes: int = MAX_IMAGE_BYTES


def _readable(source: Source, options: Options) -> None:
    """The default check: nothing to open before reading."""


@dataclass(frozen=True)
class Kind:
    """A kind of source. ``detect(path)`` says whether a file or folder is one (asked in
    ``rank`` order, lowest first); ``read`` yields every input sample, bad ones too, as a
    ``Record``; ``check`` raises ``CurateError`` now, before anything is written, if a source
    cannot be read at all. ``shards``: a folder holding files of this kind is read as those
    files (tar shards). ``sidecar(path)``: a file that belongs to a source of this kind (its
    metadata), skipped when a glob or brace list also matches it."""

    name: str
    detect: Callable[[Path], bool]
    read: Callable[[Source, Options], Iterator[Record]]
    check: Callable[[Source, Options], None] = _readable
    label: str = ""  # what it is, for messages: "a webdataset tar"
    rank: int = 50
    shards: bool = False
    sidecar: Callable[[Path], bool] | None = None


_KINDS: dict[str, Kind] = {}
_FOUND = False
FALLBACK = 90  # the rank of the kind asked last (``folder``: any folder at all)


def register(kind: Kind) -> Kind:
    """Declare ``kind`` (again under the same name: replace it)."""
    _KINDS[kind.name] = kind
    return kind


def kinds() -> list[Kind]:
    """Every registered kind in detection order (the package's modules imported first)."""
    global _FOUND
    if not _FOUND:
        package = importlib.import_module(__package__)
        for mod in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{__package__}.{mod.name}")
        _FOUND = True
    return sorted(_KINDS.values(), key=lambda k: (k.rank, k.name))


def get(name: str) -> Kind:
    """The kind called ``name``, or one line naming those there are."""
    found = {k.name: k for k in kinds()}
    if name not in found:
        raise CurateError(f"unknown source kind {name!r}; use one of: {', '.join(found)}")
    return found[name]


def expand(patterns: list[str], kind: str | None = None) -> list[Source]:
    """Resolve files, globs, brace patterns and folders into sources, each of the first kind
    that detects it, or all of ``kind`` when it is given (a folder then holds sources of that
    kind unless it is one); each source once, in the order given. A path that exists is
    taken literally, never expanded, whatever characters it holds."""
    forced = get(kind) if kind else None
    sources: list[Source] = []
    for pattern in patterns:
        # a path that exists is used as it is: ``ws[1]/a.tar`` or ``{x}.tar`` is that file
        names = [pattern] if os.path.lexists(pattern) else braces(pattern)
        for name in names:
            hits = (sorted(globlib.glob(name)) if globlib.has_magic(name)
                    and not os.path.lexists(name) else [name])
            if not hits:
                raise CurateError(f"{name}: no file matches")
            many = len(hits) > 1 or len(names) > 1
            for hit in hits:
                sources.extend(detect(Path(hit), many, forced))
    seen: set[str] = set()
    return [s for s in sources if not (s.path in seen or seen.add(s.path))]


def braces(pattern: str) -> list[str]:
    """Expand ``{00000..00009}`` ranges (zero padding kept) and ``{a,b}`` lists."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body, out = m.group(1), []
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    items = ([str(i).zfill(len(rng.group(1))) for i in range(int(rng.group(1)),
                                                            int(rng.group(2)) + 1)]
             if rng else body.split(","))
    for item in items:
        out.extend(braces(pattern[: m.start()] + item + pattern[m.end():]))
    return out


def detect(path: Path, in_glob: bool = False, forced: Kind | None = None) -> list[Source]:
    """The sources at ``path``. A folder holding shards (files of a ``shards`` kind, or of
    ``forced``) is those shards; any other path is a source of the first kind that detects
    it, or of ``forced`` without asking. A sidecar, or a file no kind knows, matched by a
    glob is skipped; named alone, a file no kind knows is an error."""
    if not path.exists():
        raise CurateError(f"{path}: no such file or folder")
    special = not_regular(path)
    if special:  # by stat, before anything opens it: a FIFO would block, /dev/zero never end
        raise CurateError(f"{path}: {special}, not a file or folder; curate reads files and "
                          "folders only")
    if path.is_dir() and not forced:  # a folder that is itself a source (save_to_disk, ...)
        own = _file(path, [k for k in kinds() if k.rank < FALLBACK])
        if own:
            return own
    if path.is_dir() and not (forced and forced.detect(path)):
        order = [forced] if forced else [k for k in kinds() if k.shards]
        shards = [s for f in sorted(path.iterdir()) for s in _file(f, order) or []]
        if shards:
            return shards
        if forced:
            raise CurateError(f"{path}: holds no {forced.label or forced.name}")
    if forced:
        skip = in_glob and forced.sidecar is not None and forced.sidecar(path)
        return [] if skip else [Source(str(path.resolve()), forced.name)]
    got = _file(path, kinds(), in_glob)
    if got is None:
        if in_glob:
            return []
        labels = [k.label or k.name for k in kinds()]
        raise CurateError(f"{path}: not {', '.join(labels[:-1])} or {labels[-1]}")
    return got


def readable() -> str:
    """The kinds curate reads, for messages: ``img2dataset, webdataset, ...``."""
    return ", ".join(k.name for k in kinds())


def _file(path: Path, order: list[Kind], in_glob: bool = False) -> list[Source] | None:
    """``[source]`` of the first kind in ``order`` that detects ``path``; ``[]`` for a
    sidecar matched by a glob; ``None`` when no kind knows it (nor any non-regular file: a
    FIFO in a folder is never opened by a ``detect``)."""
    if not_regular(path):
        return None
    for k in order:
        if k.detect(path):
            return [Source(str(path.resolve()), k.name)]
        if in_glob and k.sidecar is not None and k.sidecar(path):
            return []
    return None


def not_regular(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (``a FIFO``, ``a
    character device``), found by ``os.stat`` without opening it; None otherwise (missing
    too: the caller's error)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((what for test, what in _SPECIAL if test(mode)), "a special file")


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_capped(file: Path, limit: int, what: str = "image") -> tuple[bytes | None, str | None]:
    """The bytes of a regular file of at most ``limit`` bytes, or why not (``missing_<what>``,
    ``not_a_file``, ``<what>_too_large``): checked by ``os.stat`` before it is opened, so a
    FIFO never blocks and a device is never read."""
    try:
        st = os.stat(file)
    except OSError as e:
        return None, f"missing_{what}: {e.strerror}: {file}"
    if not stat.S_ISREG(st.st_mode):
        return None, f"not_a_file: {file} is {not_regular(file) or 'a folder'}"
    if st.st_size > limit:
        return None, f"{what}_too_large: {st.st_size} bytes, over the cap of {limit}"
    try:
        with open(file, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        return None, f"missing_{what}: {e.strerror}: {file}"
    if len(data) > limit:  # it grew since the stat
        return None, f"{what}_too_large: over the cap of {limit} bytes"
    return data, None


def load_file(rec: Record, file: Path, limit: int = MAX_IMAGE_BYTES) -> None:
    """Point ``rec`` at a whole image file and read it; a missing, non-regular or too large
    file is the record's error (``read_capped``)."""
    rec.image_path = str(file)
    data, error = read_capped(file, limit)
    if error:
        rec.errors.append(error)
    else:
        rec.image, rec.image_length = data, len(data)
