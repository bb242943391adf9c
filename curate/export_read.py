"""Reading the images of an export by reference, checked against what ingest saw.

Every image of a tar source is checked against the tar header just before it (member name and
size: a moved, rewritten or truncated shard fails here), a whole image file against its size,
and every 16th image, the first of each file and every fetched URL against its ingest hash
(``verify="all"``: every image). Neighbouring images of a tar come in one read of the whole
span into a staging buffer that stays in cache, and a numba kernel checks the headers and copies
each image to its place in the export's tar buffer: a dense selection costs a few syscalls per
batch, not one per image, and no Python runs per image.
"""

from __future__ import annotations

import hashlib
import os

import numba
import numpy as np
import pyarrow as pa

from curate.images import fetch_url
from curate.tarwriter import COPY, Buffers

BLOCK = 512
VERIFY_EVERY = 16
GAP = 16 << 10  # neighbouring images come in one read when at most 16 KB lie between them


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


@numba.njit(cache=True, nogil=True)
def _scatter(copy, src, at, out, pos, lens, take):  # noqa: ANN001, ANN202
    """Copy image ``r`` from ``src[at[r]:]`` to ``out[pos[r]:]`` where ``take[r]``."""
    for r in range(at.shape[0]):
        if take[r]:
            copy(out.ctypes.data + pos[r], src.ctypes.data + at[r], lens[r])


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
        """Read the images of a batch (``export_io.query``'s rows: ``i``, ``image_path``,
        ``image_offset``, ``image_length``, ``tar``, ``url``, ``same``, ``source_key`` as bytes,
        ``image_hash``) to
        ``out[pos[r]:pos[r] + length]`` (their places in the tar being laid out), checking each
        against its source tar header. Returns the rows whose ingest hash is to be checked
        (``check_hashes``: every 16th, the first of each file; all with ``verify="all"``).
        Neighbouring images of a tar (at most 16 KB apart) come in one ``pread`` of the whole
        span, headers and skipped members included, into a pooled staging buffer that stays in
        cache; one numba kernel then checks every header and copies every image to its place,
        so no Python runs per image."""
        n = b.num_rows
        paths = b.column("image_path")
        offs = b.column("image_offset").to_numpy()
        lens = b.column("image_length").to_numpy()
        tar, url = (b.column(c).to_numpy(False) for c in ("tar", "url"))
        gap = offs[1:] - BLOCK - (offs[:-1] + lens[:-1])
        joined = np.concatenate([[False], b.column("same").to_numpy(False)[1:] & tar[1:]
                                 & tar[:-1] & (gap >= 0) & (gap <= GAP)])
        starts = np.flatnonzero(~joined)
        stops = np.append(starts[1:], n)
        first = offs[starts] - np.where(tar[starts], BLOCK, 0)  # a run's first byte in its file
        span = np.where(url[starts], 0, offs[stops - 1] + lens[stops - 1] - first)
        base = np.concatenate([[0], np.cumsum(span)]).astype(np.int64)  # each run in staging
        run_of = np.repeat(np.arange(len(starts)), stops - starts)
        at = base[run_of] + offs - first[run_of]  # each image in staging
        staging = self.buffers.get(max(int(base[-1]), 1))
        view = memoryview(staging)
        first_of_file: list[int] = []
        for j, a in enumerate(starts.tolist()):
            path = paths[a].as_py()
            if url[a]:
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
            got = os.preadv(self.fd, [view[base[j]:base[j + 1]]], int(first[j]))
            if got != span[j] or (not tar[a] and os.fstat(self.fd).st_size != lens[a]):
                raise SourceChanged(f"source {path} changed since ingest: it is shorter than "
                                    f"ingest found it (or an image file changed size)")
        self._check_headers(b, staging, at, lens, tar)
        if len(out) < int((pos + lens).max(initial=0)) or len(staging) < int(
                (at + lens)[~url].max(initial=0)):
            raise ValueError("image places outside the buffers")  # memmove checks nothing
        _scatter(COPY, staging, at, out, pos, lens, ~url)
        self.buffers.put(staging)
        every = np.flatnonzero(b.column("i").to_numpy() % self.every == 0).tolist()
        return sorted({*first_of_file, *every})

    def check_hashes(self, b: pa.RecordBatch, rows: list[int], out: np.ndarray,
                     pos: np.ndarray) -> None:
        """Each of ``rows``' image bytes in ``out`` against its ingest hash."""
        for r in rows:
            self._check(b, r, out, pos)

    def _fetch(self, url: str) -> bytes:
        try:
            return fetch_url(url)
        except OSError as e:
            raise SourceChanged(f"source {url} cannot be fetched ({e})") from None

    def _check_headers(self, b: pa.RecordBatch, buf: np.ndarray, at: np.ndarray,
                       lens: np.ndarray, tar: np.ndarray) -> None:
        keys, key_at = binary(b.column("source_key"))
        ok = _fast_headers(buf, at, lens, keys, key_at, tar)
        for r in np.flatnonzero(~ok):
            key = b.column("source_key")[r].as_py().decode()
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
                f"key {b.column('source_key')[r].as_py().decode()} at byte "
                f"{b.column('image_offset')[r].as_py()} does not have its ingest hash")
