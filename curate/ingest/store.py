"""The workspace's own copies of image bytes that have no place to point at: cells of parquet
and Arrow files, URLs fetched at ingest, members of compressed tars. They are written once,
by the ingest process alone, into webdataset-style shards (``images/part-NNNNNN.tar``: one
``SAMPLE_ID.EXT`` and ``SAMPLE_ID.txt`` per sample), and the samples then point at them with
``image_path``/``image_offset``/``image_length`` exactly as at a member of a source tar, so no
later pass and no export reads the network or a parquet page.

An ingest run always starts a new shard (it never appends to one a part already points at)
and flushes it before each samples part that points into it is written.
"""

from __future__ import annotations

import io
import tarfile

from curate.workspace import Workspace

SHARD_BYTES = 1 << 30  # a new shard after this many bytes
EXTENSIONS = {"jpeg": "jpg", "mpo": "jpg", "tiff": "tif"}  # image_format -> member extension


class ImageStore:
    """Appends images to the workspace's tar shards; ``put`` points a row at its copy."""

    def __init__(self, ws: Workspace, shard_bytes: int = SHARD_BYTES) -> None:
        self.ws, self.shard_bytes = ws, shard_bytes
        have = [int(p.stem.split("-")[1]) for p in ws.image_shards()
                if p.stem.split("-")[1].isdigit()]
        self.next = max([-1, *have]) + 1
        self.tar: tarfile.TarFile | None = None
        self.path = None
        self.stored = 0

    def put(self, row: dict, data: bytes) -> None:
        """Write ``data`` (and the row's caption) as a member named by the row's sample_id
        and point the row at it."""
        if self.tar is None or self.tar.offset >= self.shard_bytes:
            self._open()
        ext = (row.get("image_format") or "bin").lower()
        name = f"{row['sample_id']}.{EXTENSIONS.get(ext, ext)}"
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        header = len(info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors))
        start = self.tar.offset
        self.tar.addfile(info, io.BytesIO(data))
        row.update(image_path=str(self.path), image_offset=start + header,
                   image_length=len(data))
        if row.get("caption") is not None:
            text = row["caption"].encode()
            cap = tarfile.TarInfo(f"{row['sample_id']}.txt")
            cap.size, cap.mode, cap.mtime = len(text), 0o644, 0
            self.tar.addfile(cap, io.BytesIO(text))
        self.stored += 1

    def flush(self) -> None:
        """Make what was put so far readable by path (before a part points at it)."""
        if self.tar is not None:
            self.tar.fileobj.flush()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None

    def _open(self) -> None:
        self.close()
        self.path = self.ws.image_shard(self.next)
        self.next += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tar = tarfile.open(self.path, "x", format=tarfile.USTAR_FORMAT)
