"""Downloading image URLs once, at ingest: http and https only, in parallel threads with a
bounded number of requests in flight, a timeout on each connect and read, a deadline on each
URL as a whole (a server that drips bytes is cut off; the DNS lookup is bounded by it too), and
a size cap. A failure is a message
(the row's ``failed_to_download: ...``), never an exception out of ``fetch_all``.

Not a source kind: the readers of URL tables call it. ``bench/ingest_kinds.py`` measures it
against img2dataset over loopback.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FetchConfig:
    """How URLs are fetched: ``workers`` requests in flight per source, ``timeout`` seconds
    for the connect and for each read, ``deadline`` seconds for one URL in all (redirects
    included), at most ``max_bytes`` per image and ``redirects`` redirects."""

    workers: int = 32
    timeout: float = 10.0
    deadline: float = 30.0
    max_bytes: int = 32 << 20
    redirects: int = 5
    user_agent: str = "curate"

    def __post_init__(self) -> None:
        if self.workers < 1 or self.timeout <= 0 or self.deadline <= 0 or self.max_bytes < 1:
            raise ValueError("fetch: workers, timeout, deadline and max_bytes must be positive")


class FetchError(Exception):
    """Why one URL gave no image (one line)."""


def resolve(host: str, port: int, timeout: float) -> str:
    """The first address of ``host``, looked up within ``timeout`` seconds: the system's
    resolver takes no timeout, so it runs in a daemon thread that is left behind (never
    waited for) when it overruns, and the URL fails with one line."""
    found: dict[str, object] = {}

    def look() -> None:
        try:
            found["addr"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as e:
            found["error"] = e

    t = threading.Thread(target=look, name="curate-dns", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise FetchError(f"DNS lookup of {host} took over {timeout:g}s")
    if "error" in found:
        raise FetchError(f"DNS lookup of {host} failed: {found['error']}")
    return str(found["addr"])


class _Resolved(http.client.HTTPConnection):
    """A connection to an address looked up beforehand (``resolve``), under the host's name
    (its Host header and, for https, its TLS server name)."""

    address = ""

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ResolvedHTTPS(http.client.HTTPSConnection, _Resolved):
    """https over ``_Resolved``: HTTPSConnection.connect wraps the socket _Resolved opens."""


def fetch(url: str, config: FetchConfig = FetchConfig()) -> bytes:
    """The body of ``url`` (following redirects); raises ``FetchError`` with the reason."""
    start = time.monotonic()

    def left() -> float:
        remaining = config.deadline - (time.monotonic() - start)
        if remaining <= 0:
            raise FetchError(f"deadline of {config.deadline:g}s passed")
        return min(config.timeout, remaining)

    try:
        for _ in range(config.redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in SCHEMES:
                raise FetchError(f"unsupported scheme {parts.scheme!r} (http and https only)")
            if not parts.hostname:
                raise FetchError("no host in the URL")
            cls = _ResolvedHTTPS if parts.scheme == "https" else _Resolved
            conn = cls(parts.hostname, parts.port, timeout=left())
            conn.address = resolve(parts.hostname, conn.port, left())
            try:
                target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
                target += f"?{parts.query}" if parts.query else ""
                conn.request("GET", target, headers={"User-Agent": config.user_agent,
                                                     "Accept": "image/*, */*"})
                sock = conn.sock  # the connection lets go of it once the response is read
                resp = conn.getresponse()
                if resp.status in REDIRECTS and resp.getheader("Location"):
                    url = urljoin(url, resp.getheader("Location"))
                    continue
                if resp.status != 200:
                    raise FetchError(f"HTTP Error {resp.status}: {resp.reason}")
                return _body(sock, resp, config, left)
            finally:
                conn.close()
        raise FetchError(f"more than {config.redirects} redirects")
    except (OSError, http.client.HTTPException, ValueError) as e:
        if time.monotonic() - start >= config.deadline:  # its last read was cut short by it
            raise FetchError(f"deadline of {config.deadline:g}s passed") from None
        raise FetchError(f"{type(e).__name__}: {e}") from None


def _body(sock: socket.socket, resp: http.client.HTTPResponse,
          config: FetchConfig, left: Callable[[], float]) -> bytes:
    """Read the body in pieces, each read under the timeout and the URL's deadline."""
    size = resp.getheader("Content-Length")
    if size and size.isdigit() and int(size) > config.max_bytes:
        raise FetchError(f"{size} bytes is over the cap of {config.max_bytes}")
    chunks, n = [], 0
    while True:
        sock.settimeout(left())
        chunk = resp.read1(1 << 16)
        if not chunk:
            return b"".join(chunks)
        n += len(chunk)
        if n > config.max_bytes:
            raise FetchError(f"over the cap of {config.max_bytes} bytes")
        chunks.append(chunk)


def _one(url: str, config: FetchConfig) -> tuple[bytes | None, str | None]:
    try:
        return fetch(url, config), None
    except FetchError as e:
        return None, str(e)


def fetch_all(urls: Iterable[str | None], config: FetchConfig = FetchConfig()
              ) -> Iterator[tuple[bytes | None, str | None]]:
    """``(bytes, None)`` or ``(None, reason)`` for each URL, in order (``(None, None)`` for a
    ``None``, so callers can pass rows that have no URL); at most ``config.workers`` requests
    in flight and a few times that many results held."""
    window: deque[Future] = deque()
    with ThreadPoolExecutor(config.workers, thread_name_prefix="curate-fetch") as pool:
        for url in urls:
            if url is None:
                done: Future = Future()
                done.set_result((None, None))
                window.append(done)
            else:
                window.append(pool.submit(_one, url, config))
            if len(window) >= 4 * config.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
