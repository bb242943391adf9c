"""Reading the images of an export by reference, checked against what ingest saw.

Every image of a tar source is checked against the tar header just before it (member name and
size: a moved, rewritten or truncated shard fails here), a whole image file against its size,
and every 16th image, the first of each file and every fetched URL against its ingest hash
(``verify="all"``: every image). Neighbouring images of a tar are read with one ``preadv`` into
the batch buffer, so a dense selection costs a few syscalls per batch, not one per image.
"""

from __future__ import annotations

import hashlib
import os

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.images import fetch_url, is_url

TAR_KINDS = ("img2dataset", "webdataset")
BLOCK = 512
VERIFY_EVERY = 16
SPAN, GAP = 8 << 20, 16 << 10  # one read covers at most 8 MB and skips at most 16 KB


class SourceChanged(Exception):
    """A source file is gone or no longer holds the bytes ingested."""


def image_hash(data: bytes | memoryview | np.ndarray) -> str:
    """The ingest hash of an image: BLAKE2b-128 over its length (8 bytes LE) and bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)
    return h.hexdigest()


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


def binary(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow binary or string array as (bytes, int64 offsets), without copying the bytes."""
    bufs = arr.buffers()
    width = 8 if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type) else 4
    offsets = np.frombuffer(bufs[1], np.int32 if width == 4 else np.int64)
    offsets = offsets[arr.offset:arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return data, offsets


class SourceReader:
    """Reads a batch's images into one buffer from ``buffers``, checking them."""

    def __init__(self, verify: str) -> None:
        from curate.tarwriter import Buffers
        self.every = 1 if verify == "all" else VERIFY_EVERY
        self.path, self.fd, self.verified = "", -1, 0
        self.buffers = Buffers()

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

    def read_batch(self, b: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """(buffer, position of each image in it) for a batch with ``i``, ``image_path``,
        ``image_offset``, ``image_length``, ``source_kind``, ``source_key``, ``image_hash``."""
        n = b.num_rows
        paths = b.column("image_path")
        offs = b.column("image_offset").to_numpy()
        lens = b.column("image_length").to_numpy()
        tar = (pc.is_in(b.column("source_kind"), pa.array(TAR_KINDS)).to_numpy(False)
               & ~pc.match_substring_regex(paths, "^(https?|file)://").to_numpy(False)
               & (offs >= BLOCK))
        same = pc.equal(paths[1:], paths[:-1]).to_numpy(False) if n > 1 else np.zeros(0, bool)
        gap = offs[1:] - BLOCK - (offs[:-1] + lens[:-1])
        joined = same & tar[1:] & tar[:-1] & (gap >= 0) & (gap <= GAP)
        starts = np.flatnonzero(np.concatenate([[True], ~joined]))
        # plan the reads: (row range, file start, bytes); a tar run starts at a header block
        reads: list[tuple[int, int, int, int]] = []
        for a, e in zip(starts, [*starts[1:], n], strict=True):
            while a < e:
                first = offs[a] - BLOCK if tar[a] else offs[a]
                stop = a + 1
                if tar[a]:
                    stop = a + max(1, int(np.searchsorted(offs[a:e] + lens[a:e] - first, SPAN,
                                                          side="right")))
                reads.append((a, stop, first, int(offs[stop - 1] + lens[stop - 1] - first)))
                a = stop
        pos = np.cumsum([0] + [r[3] for r in reads])
        buf = self.buffers.get(int(pos[-1]))  # the caller hands it back when done with it
        at = np.empty(n, np.int64)
        path_list = paths.to_pylist()
        view = memoryview(buf)
        for (a, stop, first, size), p in zip(reads, pos, strict=False):
            at[a:stop] = p + offs[a:stop] - first
            path = path_list[a]
            if is_url(path):
                buf_bytes = self._fetch(path, int(lens[a]))
                buf[p:p + size] = np.frombuffer(buf_bytes, np.uint8)
                continue
            new_file = path != self.path
            self._open(path)
            got = os.preadv(self.fd, [view[p:p + size]], first)
            if got != size or (not tar[a] and os.fstat(self.fd).st_size != size):
                raise SourceChanged(f"source {path} changed since ingest: it is shorter than "
                                    f"ingest found it (or an image file changed size)")
            if new_file:  # the first image of each file is hash-checked
                self._check(b, a, buf, at)
        self._check_headers(b, buf, at, lens, tar)
        idx = b.column("i").to_numpy()
        for r in np.flatnonzero(idx % self.every == 0):
            self._check(b, int(r), buf, at)
        return buf, at

    def _fetch(self, url: str, length: int) -> bytes:
        try:
            return fetch_url(url)
        except OSError as e:
            raise SourceChanged(f"source {url} cannot be fetched ({e})") from None

    def _check_headers(self, b: pa.RecordBatch, buf: np.ndarray, at: np.ndarray,
                       lens: np.ndarray, tar: np.ndarray) -> None:
        keys, key_at = binary(pc.cast(b.column("source_key"), pa.binary()))
        ok = _fast_headers(buf, at, lens, keys, key_at, tar)
        for r in np.flatnonzero(~ok):
            key = b.column("source_key")[r].as_py()
            if not header_matches(buf[at[r] - BLOCK:at[r]].tobytes(), key, int(lens[r])):
                raise SourceChanged(
                    f"source shard {b.column('image_path')[r].as_py()} changed since ingest: "
                    f"no member {key}.* of {lens[r]} bytes at byte "
                    f"{b.column('image_offset')[r].as_py()}")

    def _check(self, b: pa.RecordBatch, r: int, buf: np.ndarray, at: np.ndarray) -> None:
        n = b.column("image_length")[r].as_py()
        self.verified += 1
        if image_hash(buf[at[r]:at[r] + n]) != b.column("image_hash")[r].as_py():
            raise SourceChanged(
                f"source {b.column('image_path')[r].as_py()} changed since ingest: the image of "
                f"key {b.column('source_key')[r].as_py()} at byte "
                f"{b.column('image_offset')[r].as_py()} does not have its ingest hash")
