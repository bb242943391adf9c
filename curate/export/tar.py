"""Tar shards for ``curate export``, built a batch of samples at a time.

A numba kernel lays out each sample's members (``{key}.{ext}``, ``{key}.txt``, ``{key}.json``:
ustar header, data, zero padding) straight into one buffer, so no Python runs per sample; the
bytes are reproducible (mode 0444, uid/gid 0, mtime 0, user and group ``bigdata`` as webdataset's
TarWriter writes). ``Sink`` hashes those buffers (BLAKE3: a cryptographic checksum, five times
faster than sha256 here; ``b3sum -c`` checks it) while they are in cache and writes them on a
background thread, to a hidden temporary file renamed into place only when the shard is
complete.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import blake3
import numba
import numpy as np

from curate.files import commit

BLOCK, RECORD = 512, 10240  # tar block; archives are padded to whole records like GNU tar
MAX_SIZE = 8**11 - 1  # the largest member a plain ustar size field holds (8 GiB)
_MODE_IDS = b"0000444\x000000000\x000000000\x00"  # mode 0444, uid 0, gid 0
_MTIME = b"00000000000\x00"
_TAIL = (b"0" + bytes(100) + b"ustar\x0000" + b"bigdata".ljust(32, b"\0") * 2
         + bytes(16 + 155 + 12))
# a header with an empty name and size and the checksum field as spaces, as the sum wants it
TEMPLATE = np.frombuffer(bytes(100) + _MODE_IDS + bytes(12) + _MTIME + b" " * 8 + _TAIL,
                         np.uint8)


def header(name: bytes, size: int) -> bytes:
    """A ustar header block for a regular file ``name`` (< 100 bytes) of ``size`` bytes: the
    reference for what the kernel writes."""
    if len(name) >= 100 or size > MAX_SIZE:
        raise ValueError(f"tar member {name!r} ({size} bytes) does not fit a ustar header")
    h = bytearray(TEMPLATE.tobytes())
    h[:len(name)] = name
    h[124:136] = b"%011o\x00" % size
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def padded(n: np.ndarray) -> np.ndarray:
    """Bytes a member of ``n`` data bytes takes: header plus data padded to a block."""
    return BLOCK + n + (-n % BLOCK)


def end_size(written: int) -> int:
    """Bytes of the end-of-archive blocks and record padding after ``written`` bytes."""
    end = written + 2 * BLOCK
    return end + (-end % RECORD) - written


TEMPLATE_SUM = int(TEMPLATE.sum())  # the name and size fields are zeros in the template
COPY = ctypes.memmove  # what the kernels copy with: numba's slice copy runs at a third the speed


@numba.njit(cache=True, nogil=True)
def _header(copy, out, p, key, width, ext, length):  # noqa: ANN001, ANN202
    """Write the header block of member ``{key}.{ext}`` of ``length`` bytes at ``out[p]``."""
    copy(out.ctypes.data + p, TEMPLATE.ctypes.data, BLOCK)
    chk = TEMPLATE_SUM + 46
    k = key
    for d in range(width - 1, -1, -1):
        out[p + d] = 48 + k % 10
        chk += 48 + k % 10
        k //= 10
    out[p + width] = 46  # "."
    for j in range(ext.shape[0]):
        out[p + width + 1 + j] = ext[j]
        chk += ext[j]
    v = length
    for d in range(10, -1, -1):
        out[p + 124 + d] = 48 + (v & 7)
        chk += 48 + (v & 7)
        v >>= 3
    for d in range(5, -1, -1):
        out[p + 148 + d] = 48 + (chk & 7)
        chk >>= 3
    out[p + 154] = 0


@numba.njit(cache=True, nogil=True)
def _pad(out, p, length):  # noqa: ANN001, ANN202
    end = p + (BLOCK - length % BLOCK) % BLOCK
    for q in range(p, end):
        out[q] = 0
    return end


@numba.njit(cache=True, nogil=True)
def _member(copy, out, p, key, width, ext, data, start, length):  # noqa: ANN001, ANN202
    """Write member ``{key}.{ext}`` (header, data, zero padding) at ``out[p]``; return its end."""
    _header(copy, out, p, key, width, ext, length)
    copy(out.ctypes.data + p + BLOCK, data.ctypes.data + start, length)
    return _pad(out, p + BLOCK + length, length)


@numba.njit(cache=True, nogil=True)
def _fill(copy, out, keys, width, img_len, ext, ext_at, txt, txt_at, js, js_at):  # noqa: ANN001, ANN202, E501
    """Every member of samples ``keys`` around images already read into their places."""
    txt_ext = np.array([116, 120, 116], np.uint8)  # "txt"
    json_ext = np.array([106, 115, 111, 110], np.uint8)  # "json"
    p = 0
    for s in range(keys.shape[0]):
        _header(copy, out, p, keys[s], width, ext[ext_at[s]:ext_at[s + 1]], img_len[s])
        p = _pad(out, p + BLOCK + img_len[s], img_len[s])
        p = _member(copy, out, p, keys[s], width, txt_ext, txt, txt_at[s],
                    txt_at[s + 1] - txt_at[s])
        p = _member(copy, out, p, keys[s], width, json_ext, js, js_at[s],
                    js_at[s + 1] - js_at[s])
    return p


def image_places(sizes: np.ndarray) -> np.ndarray:
    """Where each sample's image bytes go in the tar blocks of samples of ``sizes``."""
    return np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.int64) + BLOCK


def tar_blocks(keys: np.ndarray, width: int, img_len: np.ndarray,
               ext: tuple[np.ndarray, np.ndarray], txt: tuple[np.ndarray, np.ndarray],
               js: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> np.ndarray:
    """The tar blocks of samples ``keys`` (key ``%0{width}d``) laid out in ``out`` (exactly
    their size; one contiguous buffer hashes and writes fastest) around their images, which the
    caller has read into ``out[image_places(sizes)]`` (the original bytes, as they are);
    extensions, captions and .json texts come as (bytes, offsets) like Arrow binary arrays."""
    if width + 1 + int(np.diff(ext[1]).max(initial=0)) >= 100 or int(
            img_len.max(initial=0)) > MAX_SIZE:
        raise ValueError("keys, extensions or images too large for ustar headers")
    if int(sample_size(img_len, np.diff(txt[1]), np.diff(js[1])).sum()) != len(out):
        raise ValueError("the tar buffer is not the samples' size")  # the kernels copy unchecked
    _fill(COPY, out, keys, width, img_len, ext[0], ext[1], txt[0], txt[1], js[0], js[1])
    return out


def sample_size(img_len: np.ndarray, txt_len: np.ndarray, js_len: np.ndarray) -> np.ndarray:
    """Bytes each sample's three members take in the tar."""
    return padded(img_len) + padded(txt_len) + padded(js_len)


WRITE = 256 << 10  # bytes per write(2); see _write_all
# buffers queued for the writer: a write that stalls (page-cache folios on a fragmented VM)
# is absorbed instead of stopping the layout; 6 of export's slices (~19 MB each) against 3 was
# 0.92 against 0.83 of a raw copy at 95k (A/B, 16 pairs)
QUEUED = 6


LIBC = ctypes.CDLL(None, use_errno=True)  # read.py's preadv comes from here too
WRITE_FN = LIBC.write  # called from numba without the GIL; see _write_all
WRITE_FN.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
WRITE_FN.restype = ctypes.c_ssize_t


@numba.njit(cache=True, nogil=True)
def _write_loop(write, fd, buf, step):  # noqa: ANN001, ANN202
    """write(2) all of ``buf``, ``step`` bytes a call; the bytes written before a call that
    failed (or wrote nothing), whose error the caller then gets by writing the rest itself."""
    n = buf.shape[0]
    at = 0
    while at < n:
        k = write(fd, buf.ctypes.data + at, min(step, n - at))
        if k <= 0:
            return at
        at += k
    return at


def _write_all(fd: int, pieces: list) -> None:
    """Write the buffers in order, ``WRITE`` bytes per call, in one numba loop that holds no
    GIL: called from Python, each ``os.write`` gave the GIL up and waited to get it back from the
    main thread laying out the next samples (0.525 s against 0.533 s an export, 32 runs each).
    Larger writes let the kernel put the page cache in large folios, whose allocation stalls
    once memory is fragmented: on the dev VM (Linux 6.18, ext4) 500 MB in 4 MB writes took 0.12 s
    on a fresh boot and 1.3-1.6 s once a few GB had been written. 29 files of 17.5 MB took
    0.117-0.121 s in 256 KB writes, 0.136 s in 64 KB and 0.209 s in 16 KB ones, with no stall in
    7 repeats; 1 MB and 4 MB writes stalled once a series (0.65-0.81 s). A failed write is
    retried by ``os.write``, which raises its error (EINTR is retried there)."""
    for piece in pieces:
        arr = piece if isinstance(piece, np.ndarray) else np.frombuffer(piece, np.uint8)
        view = memoryview(arr)[_write_loop(WRITE_FN, fd, arr, WRITE):]
        while view:
            view = view[os.write(fd, view):]


class Buffers:
    """Reusable byte buffers: the writer thread hands each back once written, so laying out
    a shard touches memory already mapped instead of fresh pages each time (a fresh page costs
    more than the copy into it). Sizes are rounded up to a power of two, so a buffer serves any
    smaller request later, and none is thrown away for being too small."""

    def __init__(self) -> None:
        self.free: list[np.ndarray] = []
        self.lock = threading.Lock()

    def get(self, size: int) -> np.ndarray:
        with self.lock:
            fits = [i for i, b in enumerate(self.free) if len(b) >= size]
            if fits:
                buf = self.free.pop(min(fits, key=lambda i: len(self.free[i])))
                return buf[:size]
        return np.empty(1 << max(20, (size - 1).bit_length()), np.uint8)[:size]

    def put(self, view: np.ndarray) -> None:
        with self.lock:
            self.free.append(view.base if view.base is not None else view)


class Shard:
    """One shard being written: its final path, hidden temporary path, samples and bytes."""

    def __init__(self, final: Path, info: dict) -> None:
        self.final, self.info = Path(final), info
        self.tmp = self.final.with_name(f".{self.final.name}.{os.getpid()}.tmp")
        self.samples = self.size = 0


class Sink:
    """Hashes each shard's bytes (BLAKE3) as they are added, and one background thread writes
    them in order and finishes each shard (close, rename into place, then
    ``on_done(shard, bytes, digest)``), so the caller never waits for a write or a shard's end.
    Errors surface on the caller's next call."""

    def __init__(self, on_done: Callable[[Shard, int, str], None]) -> None:
        self.on_done, self.buffers = on_done, Buffers()
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUED)
        self.error: BaseException | None = None
        self.open: Shard | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        fd = -1
        while (item := self.queue.get()) is not None:
            kind, arg = item
            if self.error is not None:
                continue
            try:
                if kind == "open":
                    fd = os.open(arg.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                elif kind == "data":
                    pieces, owner = arg
                    _write_all(fd, pieces)
                    if owner is not None:
                        self.buffers.put(owner)
                else:
                    os.close(fd)
                    fd = -1
                    self._close_file(*arg)
            except BaseException as e:  # handed to the caller, which raises it
                self.error = e
        if fd >= 0:
            os.close(fd)

    def _close_file(self, shard: Shard, digest: str) -> None:
        commit(shard.tmp, shard.final)
        self.on_done(shard, shard.size, digest)

    def _put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def start(self, final: Path, info: dict) -> Shard:
        self.open = Shard(final, info)
        self.digest = blake3.blake3()
        self._put(("open", self.open))
        return self.open

    def add(self, pieces: list, samples: int, owner: np.ndarray | None = None) -> None:
        """Append ``samples`` whole samples' tar blocks (buffers written in order); ``owner``
        goes back to ``buffers`` once they are written. They are hashed here, on the caller's
        thread, while they are still in its cache."""
        assert self.open is not None
        for piece in pieces:
            self.digest.update(piece)
        self._put(("data", (pieces, owner)))
        self.open.size += sum(len(p) for p in pieces)
        self.open.samples += samples

    def close(self) -> None:
        """End the open shard (end-of-archive blocks); it is renamed once written."""
        shard, self.open = self.open, None
        if shard is not None:
            end = bytes(end_size(shard.size))
            self.digest.update(end)
            self._put(("data", ([end], None)))
            shard.size += len(end)
            self._put(("close", (shard, self.digest.hexdigest())))

    def finish(self) -> None:
        """Wait until everything queued is written; raise what went wrong, if anything."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop without finishing the open shard; its temporary file is removed."""
        if self.thread.is_alive():
            self.error = self.error or RuntimeError("aborted")
            self.queue.put(None)
            self.thread.join()
        if self.open is not None:
            self.open.tmp.unlink(missing_ok=True)
