"""A workspace: a directory of Parquet parts, one folder per pass with a manifest, and a
``catalog.duckdb`` of views joined on ``sample_id`` (rebuildable from the Parquet at any time).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate.catalog import attached, connection, parts, unique, view_names
from curate.errors import CurateError
from curate.files import (
    DamagedFile,
    atomic_files,
    atomic_path,
    commit,
    commit_point,
    read_json,
    recover,
)
from curate.groups import IMAGES_SQL, samples_sql

DEFAULT_WORKSPACE = "workspace"


Scan = Callable[[Path, bool], str]  # (folder, match columns by name) -> a relation of its parts


def model_key(name: str) -> str:
    """The output folder of a model: its name made safe for a path; a long name (a checkpoint
    path) keeps its start and gains a hash of the whole, so two names never share a folder."""
    key = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")
    if len(key) <= 64:
        return key
    return f"{key[:48]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def prompt_key(model: str, prefix: str) -> str:
    """Folder of a model's text embeddings of ``prefix + caption``."""
    return f"{model_key(model)}+prompt-{model_key(prefix) or 'empty'}"


EXPORT_DONE = "export.json"  # written last into an export folder: without it, unfinished
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# the workspace's own entries: nothing else may be created at its top level by a verb
LAYOUT = ("samples", "embeddings", "scores", "selections", "maps", "exports", "evaluations",
          "data_cards", "catalog.duckdb", "images", "captions")


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it can become a file name in the workspace (letters, digits, ``_ - .``, not
    starting with a dot or dash, at most 128 characters); else one line saying so."""
    if not isinstance(name, str) or not NAME.match(name):
        raise CurateError(f"{what} {name!r}: use letters, digits, '_', '-', '.' (not first), "
                          "at most 128 characters")
    return name


def view_name(kind: str, key: str) -> str:
    """The catalog view of an output folder or file: ``embeddings_<key>``, ``scores_<key>``,
    ``map_<name>``, ``selection_<name>`` with every non-alphanumeric character as ``_``."""
    return f"{kind}_{_ident(key)}"


def folder_name(kind: str, key: str) -> str:
    """A pass output folder as pass inputs and manifests name it: ``embeddings/<key>`` or
    ``scores/<key>`` (``Workspace.folder`` turns it back into a path)."""
    if kind not in ("embeddings", "scores"):
        raise ValueError(f"unknown kind of pass output {kind!r}")
    return f"{kind}/{key}"


@dataclass(frozen=True)
class Selection:
    """The three files of a selection: kept ids, manifest, drop log."""

    name: str
    parquet: Path
    json: Path
    dropped: Path


@dataclass(frozen=True)
class MapFiles:
    """The two files of a map: coordinates and manifest."""

    name: str
    parquet: Path
    json: Path


@dataclass(frozen=True)
class Workspace:
    """One workspace directory: the only place that builds its paths and view names."""

    root: Path

    @classmethod
    def open(cls, root: str | Path, create: bool = False) -> Workspace:
        root = Path(root).expanduser().resolve()
        if create:
            (root / "samples").mkdir(parents=True, exist_ok=True)
        elif not (root / "samples").is_dir():
            raise CurateError(f"{root} is not a workspace (no samples/ folder); "
                              "run `curate ingest SOURCE -w DIR` first")
        ws = cls(root)
        recover(ws.journals_dir)  # finish a multi-file replacement a killed run left half done
        return ws

    @property
    def journals_dir(self) -> Path:
        return self.root / ".commits"

    def replace_together(self, what: str, finals: list[Path]
                         ) -> contextlib.AbstractContextManager[list[Path]]:
        """Temporary paths for ``finals`` (files of one output, e.g. a selection's three),
        moved into place together when the block ends: readers see the old set or the new one,
        also after a kill (``curate.files.atomic_files``)."""
        return atomic_files(finals, self.journals_dir / f"{what}.json")

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def sample_parts(self) -> list[Path]:
        return sorted(self.samples_dir.glob("part-*.parquet"))

    def require_samples(self) -> list[Path]:
        """The samples parts, or one line saying there are none (an ingest that wrote
        nothing): every verb that reads samples asks here first."""
        parts = self.sample_parts()
        if not parts:
            raise CurateError(f"{self.root} has no samples yet (an ingest wrote "
                              f"nothing); add some with `curate ingest SOURCE -w {self.root}`")
        return parts

    def sample_part(self, index: int) -> Path:
        """The ``index``-th part of the samples table (ingest appends them in order)."""
        return self.samples_dir / f"part-{index:06d}.parquet"

    def add_sample_part(self, table: pa.Table) -> Path:
        """Write ``table`` as a new samples part under a number no part ever had: one past the
        highest ever written (``samples/.high-water``, so a deleted part's number is never
        reused and no pass trusts an old part of that name), created exclusively (a hard link
        that fails if the name exists, so two writers can never share a part)."""
        mark = self.samples_dir / ".high-water"
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part.", suffix=".tmp", dir=self.samples_dir)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            have = [int(p.stem.split("-")[1]) for p in self.sample_parts()
                    if p.stem.split("-")[1].isdigit()]
            index = max([-1, *have]) + 1
            with contextlib.suppress(OSError, ValueError):
                index = max(index, int(mark.read_text()))
            while True:
                final = self.sample_part(index)
                try:
                    commit_point()
                    os.link(tmp, final)
                    break
                except FileExistsError:
                    index += 1
        finally:
            os.unlink(tmp)
        with atomic_path(mark) as m:
            m.write_text(str(index + 1))
        return final

    @property
    def images_dir(self) -> Path:
        """Image bytes ingest copied in (from parquet cells, URLs, compressed tars), as
        webdataset-style tar shards the samples point at like any tar member."""
        return self.root / "images"

    def image_shards(self) -> list[Path]:
        return sorted(self.images_dir.glob("part-*.tar"))

    def image_shard(self, index: int) -> Path:
        """The ``index``-th tar of copied image bytes (``images/part-NNNNNN.tar``)."""
        return self.images_dir / f"part-{index:06d}.tar"

    def pass_dir(self, kind: str, key: str) -> Path:
        """The output folder of a pass: ``embeddings/<key>``, ``scores/<key>`` or, for a
        captioning run, ``captions/<key>``."""
        if kind not in ("embeddings", "scores", "captions"):
            raise ValueError(f"unknown kind of pass output {kind!r}")
        return self.root / kind / key

    def folder(self, name: str) -> Path:
        """The folder a pass input names: ``samples`` or a ``folder_name`` (``kind/key``)."""
        if name == "samples":
            return self.samples_dir
        kind, _, key = name.partition("/")
        return self.pass_dir(kind, key)

    def embeddings_dir(self, model: str) -> Path:
        """The folder of a model's image and caption embeddings."""
        return self.pass_dir("embeddings", model_key(model))

    def ann_dir(self, model: str) -> Path:
        """The folder of a model's nearest-neighbour indexes (``curate.ann``)."""
        return self.embeddings_dir(model) / "ann"

    def prompt_dir(self, model: str, prefix: str) -> Path:
        """The folder of a model's embeddings of ``prefix + caption``."""
        return self.pass_dir("embeddings", prompt_key(model, prefix))

    def scores_dir(self, key: str) -> Path:
        """The folder of a scoring pass's output (its key: name plus non-default params)."""
        return self.pass_dir("scores", key)

    def caption_log(self, source: str) -> Path:
        """What the last ``curate captions add`` of caption source ``source`` did with every
        row of its table (``captions/SOURCE.parquet``: status, error, sample_id)."""
        return self.root / "captions" / f"{check_name(source, 'caption source')}.parquet"

    @property
    def selections_dir(self) -> Path:
        return self.root / "selections"

    def selection(self, name: str) -> Selection:
        """The files of selection ``name`` (validated: it becomes a file name)."""
        check_name(name, "selection name")
        d = self.selections_dir
        return Selection(name, d / f"{name}.parquet", d / f"{name}.json",
                         d / "dropped" / f"{name}.parquet")

    def selection_names(self) -> list[str]:
        """Every selection with both its ids and its manifest, sorted."""
        d = self.selections_dir
        return sorted(p.stem for p in d.glob("*.parquet") if (d / f"{p.stem}.json").exists())

    @property
    def maps_dir(self) -> Path:
        return self.root / "maps"

    def map_files(self, name: str) -> MapFiles:
        """The files of map ``name`` (validated)."""
        check_name(name, "map name")
        return MapFiles(name, self.maps_dir / f"{name}.parquet", self.maps_dir / f"{name}.json")

    def map_names(self) -> list[str]:
        """Every map with both its coordinates and its manifest, sorted."""
        return sorted(p.stem for p in self.maps_dir.glob("*.parquet")
                      if (self.maps_dir / f"{p.stem}.json").exists())

    def map_picture(self, name: str, color: str | None) -> Path:
        """Where ``curate render`` draws map ``name`` by default: ``maps/NAME-COLOR.png``
        (``NAME-density.png`` uncoloured)."""
        return self.maps_dir / f"{check_name(name, 'map name')}-{color or 'density'}.png"

    def export_record(self, selection: str) -> Path:
        """Where the last finished export of ``selection`` is recorded (``exports/NAME.json``)."""
        return self.root / "exports" / f"{check_name(selection, 'selection name')}.json"

    def last_export(self, selection: str) -> Path | None:
        """The folder of the last finished export of ``selection``, if it is still there."""
        rec = self.export_record(selection)
        if not rec.exists():
            return None
        out = Path(read_json(rec)["out"])
        return out if (out / EXPORT_DONE).exists() else None

    def card_path(self, selection: str) -> Path:
        """The default data card of ``selection``: ``data_cards/NAME.md``."""
        return self.root / "data_cards" / f"{check_name(selection, 'selection name')}.md"

    @property
    def evaluations_dir(self) -> Path:
        return self.root / "evaluations"

    @property
    def labels_path(self) -> Path:
        """Class labels (``sample_id``, ``label``) a user may put beside the samples; ``curate
        evaluate`` reads them when this workspace is its held-out set."""
        return self.root / "labels.parquet"

    def is_own(self, path: Path) -> bool:
        """Whether ``path`` is the workspace itself or inside one of its own entries."""
        path = Path(path).expanduser().resolve()
        return path == self.root or (self.root in path.parents
                                     and path.relative_to(self.root).parts[0] in LAYOUT)

    def pass_dirs(self, kind: str) -> list[Path]:
        """Folders of a kind of pass output (``embeddings``, ``scores``) that hold a manifest."""
        base = self.root / kind
        return sorted(p.parent for p in base.glob("*/manifest.json")) if base.is_dir() else []

    def connect(self, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the catalog's views over the Parquet on disk now: it never
        opens catalog.duckdb, so a reader takes no lock a writer could trip on and works on a
        full disk. (``read_only`` is kept for callers; the views are never written back.)"""
        con = connection()
        self._build_views(con)
        return con

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the catalog's views over the Parquet on disk now, in a database of
        its own in the process's in-memory DuckDB (``memory_db``); it takes no lock on
        catalog.duckdb, so a long reader (an export) never blocks a writer. ``cursor`` gives
        another connection to it (for a second thread). Its database goes when it is left."""
        with attached() as con:
            self._build_views(con)
            yield con

    def refresh(self) -> None:
        """Rebuild catalog.duckdb (views only) in a fresh file and rename it into place, so a
        client holding the old one open (``duckdb.connect(..., read_only=True)``) keeps reading
        it and never blocks the writer; a missing or garbage catalog is simply replaced."""
        tmp = self.root / f".catalog.{os.getpid()}.{unique()}.duckdb.tmp"
        try:
            self._build_catalog(tmp)
            with contextlib.suppress(FileNotFoundError):  # a stale log of the file replaced
                os.unlink(f"{self.catalog_path}.wal")
            commit(tmp, self.catalog_path)
        finally:
            for leftover in (tmp, Path(f"{tmp}.wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _build_catalog(self, path: Path) -> None:
        """A database file at ``path`` holding the views. DuckDB names a database's log by
        putting ``.wal`` before the first ``?`` of its path (``w?/x`` -> ``w.wal?/x``, links
        resolved), so under such a path the file is built elsewhere and copied in."""
        if "?" not in str(path):
            with duckdb.connect(str(path)) as con:
                self._build_views(con)
            return
        with tempfile.TemporaryDirectory(prefix="curate-catalog-") as d:
            built = Path(d) / "catalog.duckdb"
            with duckdb.connect(str(built)) as con:
                self._build_views(con)
            shutil.copyfile(built, path)

    def build_views(self, con: duckdb.DuckDBPyConnection, scan: Scan | None = None) -> None:
        """The catalog's views (``samples``, ``images``, ``pairs``, ``embeddings_*``,
        ``scores_*``) in
        ``con``, any connection: an in-memory one reads the Parquet and leaves catalog.duckdb
        alone. ``scan(folder)`` gives the relation a view reads a folder's parts from (default:
        ``read_parquet`` of their glob); ``curate.connect`` passes Arrow datasets, so its
        DuckDB needs no file access at all."""
        self._build_views(con, scan)

    def _build_views(self, con: duckdb.DuckDBPyConnection, scan: Scan | None = None) -> None:
        scan = scan or _glob_scan
        views = {}
        if self.sample_parts():
            read = scan(self.samples_dir, True)
            views["samples"] = samples_sql(read, _columns(con, read))
            views["images"] = IMAGES_SQL  # one row per image (curate.groups)
        for d, m in self._viewable("embeddings"):  # Parquet keeps no array size: cast
            casts = ", ".join(f"{c}::FLOAT[{int(m['dim'])}] AS {c}" for c in m["columns"]
                              if c.endswith("_emb"))
            views[view_name("embeddings", d.name)] = f"SELECT * REPLACE ({casts}) FROM {scan(d)}"
        for d, _ in self._viewable("scores"):
            views[view_name("scores", d.name)] = f"SELECT * FROM {scan(d)}"
        for name in view_names(con) - set(views) - {"pairs"}:
            con.execute(f'DROP VIEW IF EXISTS "{name}"')
        for name, sql in views.items():
            try:
                con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
            except duckdb.Error as e:  # DuckDB reads a part's footer to bind the view
                raise CurateError(f"cannot read the parts of view {name} ("
                                  f"{str(e).splitlines()[0]}); `curate verify -w {self.root}` "
                                  "finds the damaged file and `--repair` removes it for a "
                                  "rerun") from None
        if "samples" in views:
            con.execute(f"CREATE OR REPLACE VIEW pairs AS {self._pairs_sql(views, con)}")

    def _viewable(self, kind: str) -> list[tuple[Path, dict]]:
        """The pass folders of ``kind`` with parts and a readable manifest, each with it. A
        folder whose manifest is damaged gets no view (``curate verify`` and ``info`` name it;
        a rerun of its pass mends it), so it cannot stop every other reader and writer."""
        found = []
        for d in self.pass_dirs(kind):
            if any(d.glob("part-*.parquet")):
                with contextlib.suppress(DamagedFile, OSError):
                    found.append((d, read_json(d / "manifest.json")))
        return found

    def _pairs_sql(self, views: dict[str, str] | set[str],
                   con: duckdb.DuckDBPyConnection | None = None) -> str:
        """Samples joined with every score pass's columns (``_score_columns``)."""
        plan = self._score_columns(views, con)
        cols = "".join(f', t{i}."{c}" AS "{name}"' for name, (i, _, c) in plan.items())
        joins = "".join(dict.fromkeys(f' LEFT JOIN "{v}" AS t{i} USING (sample_id)'
                                      for i, v, _ in plan.values()))
        return "SELECT s.*" + cols + " FROM samples AS s" + joins

    def _score_columns(self, views: dict[str, str] | set[str],
                       con: duckdb.DuckDBPyConnection | None = None
                       ) -> dict[str, tuple[int, str, str]]:
        """``{pairs column: (join number, scores view, its column there)}`` for the score
        folders with a view in ``views``. A pass run with non-default parameters (key
        ``name--k=v``) gets its columns suffixed ``__k_v``; a name another pass already took
        gets ``__<pass key>``."""
        taken = ({r[0] for r in con.execute("DESCRIBE samples").fetchall()} if con is not None
                 else set(pq.read_schema(self.sample_parts()[0]).names))  # every part's
        plan = {}
        for i, (d, m) in enumerate((d, m) for d, m in self._viewable("scores")
                                   if view_name("scores", d.name) in views):
            suffix = "__" + _ident(d.name.split("--", 1)[1]) if "--" in d.name else ""
            for c in m["columns"]:
                name = c + suffix if c + suffix not in taken else f"{c}__{_ident(d.name)}"
                taken.add(name)
                plan[name] = (i, view_name("scores", d.name), c)
        return plan

    def pair_sources(self, con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
        """``{pairs column: (scores view, its column there)}`` for the score passes' columns
        of ``con``'s ``pairs`` view: a reader of one column joins one view, not all."""
        return {name: (v, c) for name, (_, v, c)
                in self._score_columns(view_names(con), con).items()}

    def manifest(self, kind: str, key: str) -> dict | None:
        path = self.pass_dir(kind, key) / "manifest.json"
        return read_json(path) if path.exists() else None


def _glob_scan(folder: Path, by_name: bool = False) -> str:
    """``read_parquet`` of the glob of ``folder``'s parts, the folder escaped (``parts``): a
    workspace at ``ws[1]`` reads its own parts, not ``ws1``'s, and a reader holding an older
    catalog.duckdb still sees parts written since. ``by_name``: columns matched by name (parts
    of different sources carry different metadata columns)."""
    return f"read_parquet({parts(folder)}{', union_by_name = true' if by_name else ''})"


def _columns(con: duckdb.DuckDBPyConnection, read: str) -> set[str]:
    """The union of the columns of the parts ``read`` reads (their footers only)."""
    try:
        return {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {read}").fetchall()}
    except duckdb.Error as e:
        raise CurateError(f"cannot read the parts of view samples ({str(e).splitlines()[0]}); "
                          "`curate verify` finds the damaged file") from None


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).lower()


