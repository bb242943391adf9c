"""Reading the images of an export by reference, checked against what ingest saw.

Every image of a tar source is checked against the tar header just before it (member name and
size: a moved, rewritten or truncated shard fails here), a whole image file against its size,
and every 16th image, the first of each file and every fetched URL against its ingest hash
(``verify="all"``: every image). Neighbouring images of a tar are read with one ``preadv``
straight into their places in the export's tar buffer, its scatter list built with NumPy, so a
dense selection costs a few syscalls per batch, not one per image, no Python runs per image and
no copy follows the read.
"""

from __future__ import annotations

import ctypes
import errno
import os

import numba
import numpy as np
import pyarrow as pa

from curate.export.tar import LIBC, Buffers
from curate.hashing import image_hash
from curate.images import fetch_url

BLOCK = 512
VERIFY_EVERY = 16
GAP = 16 << 10  # neighbouring images come in one read when at most 16 KB lie between them
IOV_ROWS = 341  # rows per preadv: 3 iovecs each, within the kernel's IOV_MAX (1024)
LIBC.preadv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
LIBC.preadv.restype = ctypes.c_ssize_t


class SourceChanged(Exception):
    """A source file is gone or no longer holds the bytes ingested."""


def header_matches(block: bytes, key: str, length: int) -> bool:
    """Whether a tar header block is that of member ``key.*`` of ``length`` bytes, in any
    encoding of the size and name (base-256 sizes, ustar prefixes, cut long names)."""
    size = block[124:136]
    try:
        found = (int.from_bytes(size[1:], "big") if size[0] & 0x80
                 else int(size.strip(b" \0") or b"-1", 8))
    except ValueError:
        return False
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    full = prefix + b"/" + name if prefix else name
    # a name of 99+ bytes may be cut short (GNU long names, pax): the size must do
    return found == length and (full.startswith(key.encode() + b".") or len(name) >= 99)


@numba.njit(cache=True, nogil=True)
def _fast_headers(buf, at, lens, keys, key_at, check):  # noqa: ANN001, ANN202
    """Per image: True when the block before it names ``key.`` with the size written as
    tarfile and GNU tar write it (11 octal digits and NUL); anything else takes the slow
    path."""
    ok = np.ones(at.shape[0], np.bool_)
    for s in range(at.shape[0]):
        if not check[s]:
            continue
        h = at[s] - BLOCK
        n = key_at[s + 1] - key_at[s]
        good = buf[h + n] == 46 and buf[h + 135] == 0
        for j in range(n):
            good = good and buf[h + j] == keys[key_at[s] + j]
        v = lens[s]
        for d in range(10, -1, -1):
            good = good and buf[h + 124 + d] == 48 + (v & 7)
            v >>= 3
        ok[s] = good
    return ok


def _preadv(fd: int, iov: np.ndarray, offset: int) -> int:
    """``preadv(2)`` of an array of ``iovec`` structs (address, length as uint64 pairs); the
    bytes read, or -1."""
    while True:
        got = LIBC.preadv(fd, iov.ctypes.data, iov.shape[0] * iov.shape[1], offset)
        if got >= 0 or ctypes.get_errno() != errno.EINTR:
            return got


def binary(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow binary or string array as (bytes, int64 offsets), without copying the bytes."""
    bufs = arr.buffers()
    width = 8 if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type) else 4
    offsets = np.frombuffer(bufs[1], np.int32 if width == 4 else np.int64)
    offsets = offsets[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return data, offsets


class SourceReader:
    """Reads a batch's images into the tar buffers being laid out, checking them."""

    def __init__(self, verify: str) -> None:
        self.every = 1 if verify == "all" else VERIFY_EVERY
        self.path, self.fd, self.verified = "", -1, 0
        self.buffers = Buffers()
        self.junk = np.empty(GAP, np.uint8)  # what lies between the members read

    def _open(self, path: str) -> None:
        if path != self.path:
            self.close()
            try:
                self.fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise SourceChanged(f"source {path} is gone since ingest ({e.strerror})"
                                    ) from None
            self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.path = -1, ""

    def read_into(self, b: pa.RecordBatch, out: np.ndarray, pos: np.ndarray) -> list[int]:
        """Read the images of a batch (``query.query``'s rows: ``i``, ``image_path``,
        ``image_offset``, ``image_length``, ``tar``, ``remote``, ``same``, ``member``,
        ``image_hash``) straight to ``out[pos[r]:pos[r] + length]`` (their places in the tar
        being laid out: no copy after the read), checking each against its source tar header.
        Returns the rows whose ingest hash is to be checked (``check_hashes``: every 16th, the
        first of each file; all with ``verify="all"``). Neighbouring images of a tar (at most
        16 KB apart) come in one scattering ``preadv``: each image's header block lands in a
        scratch buffer for the check, the bytes between members in a junk buffer, each image in
        its place. The scatter list is built with NumPy (``iovec`` structs), so no Python runs
        per image."""
        n = b.num_rows
        paths = b.column("image_path")
        offs = b.column("image_offset").to_numpy()
        lens = b.column("image_length").to_numpy()
        tar, remote = (b.column(c).to_numpy(False) for c in ("tar", "remote"))
        if (out.dtype != np.uint8 or not out.flags.c_contiguous
                or len(out) < int((pos + lens).max(initial=0)) or (pos < 0).any()):
            raise ValueError("image places outside the buffer")  # preadv checks nothing
        gap = offs[1:] - BLOCK - (offs[:-1] + lens[:-1])
        joined = np.concatenate([[False], b.column("same").to_numpy(False)[1:] & tar[1:]
                                 & tar[:-1] & (gap >= 0) & (gap <= GAP)])
        heads = self.buffers.get(n * BLOCK)  # row r's source header at heads[r * BLOCK]
        iov = np.zeros((n, 3, 2), np.uint64)  # per row: header, image, the gap after it
        iov[:, 0, 0] = heads.ctypes.data + np.arange(n, dtype=np.uint64) * BLOCK
        iov[:, 0, 1] = np.where(tar, BLOCK, 0)
        iov[:, 1, 0] = out.ctypes.data + pos.astype(np.uint64)
        iov[:, 1, 1] = lens
        iov[:, 2, 0] = self.junk.ctypes.data
        iov[:-1, 2, 1] = np.where(joined[1:], gap, 0)
        sizes = iov[:, :, 1].sum(axis=1).astype(np.int64)
        starts = np.flatnonzero(~joined)
        if (np.diff(starts, append=n) > IOV_ROWS).any():  # long runs: several reads each
            starts = np.unique(np.concatenate([starts, *(np.arange(a, e, IOV_ROWS) for a, e in
                                                         zip(starts, [*starts[1:], n],
                                                             strict=True))]))
        ends = np.append(starts[1:], n)
        want = np.add.reduceat(sizes, starts) if n else sizes
        first_of_file: list[int] = []
        for a, e, w in zip(starts.tolist(), ends.tolist(), want.tolist(), strict=True):
            path = paths[a].as_py()
            if remote[a]:
                data = self._fetch(path)
                if len(data) != lens[a]:
                    raise SourceChanged(f"source {path} changed since ingest: {len(data)} "
                                        f"bytes, not {lens[a]}")
                out[pos[a]:pos[a] + lens[a]] = np.frombuffer(data, np.uint8)
                first_of_file.append(a)  # every fetched URL is hash-checked
                continue
            if path != self.path:  # the first image of each file is hash-checked
                self._open(path)
                first_of_file.append(a)
            at = int(offs[a]) - (BLOCK if tar[a] else 0)
            if _preadv(self.fd, iov[a:e], at) != w:  # short or failed: once more, plainly
                self._read_plainly(path, range(a, e), offs, lens, tar, heads, out, pos)
            if not tar[a] and os.fstat(self.fd).st_size != lens[a]:
                raise SourceChanged(f"source {path} changed since ingest: the image file is "
                                    f"{os.fstat(self.fd).st_size} bytes, not {lens[a]}")
        self._check_headers(b, heads, np.arange(1, n + 1) * BLOCK, lens, tar)
        self.buffers.put(heads)
        every = np.flatnonzero(b.column("i").to_numpy() % self.every == 0).tolist()
        return sorted({*first_of_file, *every})

    def _read_plainly(self, path: str, rows: range, offs: np.ndarray, lens: np.ndarray,
                      tar: np.ndarray, heads: np.ndarray, out: np.ndarray,
                      pos: np.ndarray) -> None:
        """Rows' headers and images one ``pread`` each (after a short scattering read)."""
        for r in rows:
            reads = [(heads, r * BLOCK, BLOCK, offs[r] - BLOCK)] if tar[r] else []
            for buf, at, n, src in [*reads, (out, pos[r], lens[r], offs[r])]:
                data = os.pread(self.fd, int(n), int(src))
                if len(data) != n:
                    raise SourceChanged(f"source {path} changed since ingest: it is shorter "
                                        "than ingest found it")
                buf[at:at + n] = np.frombuffer(data, np.uint8)

    def check_hashes(self, b: pa.RecordBatch, rows: list[int], out: np.ndarray,
                     pos: np.ndarray) -> None:
        """Each of ``rows``' image bytes in ``out`` against its ingest hash (the rows' values
        taken from the batch at once: one Arrow scalar per row cost more than the hashing)."""
        if not rows:
            return
        lens = b.column("image_length").to_numpy()
        want = b.column("image_hash").take(rows).to_pylist()
        for r, h in zip(rows, want, strict=True):
            self.verified += 1
            if image_hash(out[pos[r]:pos[r] + lens[r]]) != h:
                raise SourceChanged(
                    f"source {b.column('image_path')[r].as_py()} changed since ingest: the image "
                    f"of key {b.column('source_key')[r].as_py()} at byte "
                    f"{b.column('image_offset')[r].as_py()} does not have its ingest hash")

    def _fetch(self, url: str) -> bytes:
        try:
            return fetch_url(url)
        except OSError as e:
            raise SourceChanged(f"source {url} cannot be fetched ({e})") from None

    def _check_headers(self, b: pa.RecordBatch, buf: np.ndarray, at: np.ndarray,
                       lens: np.ndarray, tar: np.ndarray) -> None:
        keys, key_at = binary(b.column("member"))
        ok = _fast_headers(buf, at, lens, keys, key_at, tar)
        for r in np.flatnonzero(~ok):
            key = b.column("member")[r].as_py()
            if not header_matches(buf[at[r] - BLOCK:at[r]].tobytes(), key, int(lens[r])):
                raise SourceChanged(
                    f"source shard {b.column('image_path')[r].as_py()} changed since ingest: "
                    f"no member {key}.* of {lens[r]} bytes at byte "
                    f"{b.column('image_offset')[r].as_py()}")
