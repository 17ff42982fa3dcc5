"""A video source served over real HTTP on 127.0.0.1, with the ways real CDNs misbehave.

Why a real server: the copier's resume logic depends on what a socket really does when a
peer closes mid-body (urllib3's IncompleteRead, requests' ChunkedEncodingError), on real
Range/If-Range/Content-Length framing and on real timing; a mocked `requests` would only
test the mock. The local stack's demo and tests, the reliability scenarios and the transfer
bench (in a process of its own) use it too: to its client it is a plain HTTP server.

    with VideoServer() as server:
        url = server.add("/v.mp4", data)                      # 200 / 206 with ETag, like S3 or a CDN
        url = server.add("/v.mp4", data, drop_at=100_000)     # first request closes after 100 000 bytes
        url = server.add("/v.mp4", data, drop_at=[5, 9])      # request 1 drops at 5, request 2 at 9
        url = server.add("/v.mp4", data, drop_at=100, drops=None)  # every request drops
        url = server.add("/v.mp4", data, ranges=False)        # ignores Range: always 200 and the whole body
        url = server.add("/v.mp4", data, length_delta=+500)   # Content-Length lies (bigger, or -N smaller)
        url = server.add("/v.mp4", data, framing="close")     # no Content-Length, body ends at close
        url = server.add("/v.mp4", data, framing="chunked")   # Transfer-Encoding: chunked
        url = server.add("/v.mp4", status=410)                # an expired link (any status, small body)
        url = server.add("/v.mp4", data, trickle=(65536, 0.05))  # 64 KiB every 50 ms
        url = server.add("/v.mp4", Generated(size, chunks))   # content made on the fly, never held whole
        url = server.redirect_chain("/v.mp4", hops=3)         # /v.mp4.hop1 -> ... -> /v.mp4
        served = server.serve_file(path)                      # a file at /<its name>: .url .data .sha256
        server.requests_for("/v.mp4")                         # what arrived: ranges, If-Range, count

Every response carries `Connection: close`: each request stands alone, so a lying
Content-Length can never leak bytes into the next response on a kept-alive connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WRITE_BYTES = 64 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Generated:
    """A body made on demand: `chunks(start)` yields the bytes from offset `start` to the end.

    The callable is called once per request, so it may also count calls (or change its
    content between them, to play a source whose bytes change under a resume).
    """

    size: int
    chunks: Callable[[int], Iterable[bytes]]


def repeat_block(block: bytes, size: int, *, start: int = 0) -> Iterator[bytes]:
    """`block` repeated up to `size` bytes, from `start`: a cheap Generated chunks function."""
    offset = start
    while offset < size:
        at = offset % len(block)
        piece = block[at : at + min(len(block) - at, size - offset)]
        yield piece
        offset += len(piece)


@dataclass(frozen=True)
class Video:
    """A source video: its bytes, what the stored copy must match, and where it is served."""

    name: str
    data: bytes
    url: str = ""

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server saw it."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    headers: dict[str, str]

    @property
    def range_start(self) -> int | None:
        match = _RANGE_RE.match(self.range or "")
        return int(match.group(1)) if match and match.group(1) else None


@dataclass
class Route:
    """What one path answers; see the module docstring for the switches."""

    body: bytes | Generated = b""
    status: int = 200
    drop_at: Sequence[int] | int | None = None
    drops: int | None = 1
    ranges: bool = True
    etag: str | None = None
    length_delta: int = 0
    framing: str = "length"  # "length" | "close" | "chunked"
    trickle: tuple[int, float] | None = None
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    served: int = 0  # requests answered so far (drives drop_at / drops)

    @property
    def size(self) -> int:
        return self.body.size if isinstance(self.body, Generated) else len(self.body)

    def read(self, start: int, end: int, write_bytes: int = WRITE_BYTES) -> Iterator[bytes]:
        """The bytes [start, end) in pieces of at most `write_bytes` (or the trickle's size)."""
        step = self.trickle[0] if self.trickle else write_bytes
        if isinstance(self.body, bytes):
            for at in range(start, end, step):
                yield self.body[at : min(at + step, end)]
            return
        offset = start
        for chunk in self.body.chunks(start):
            if offset >= end:
                break
            chunk = chunk[: end - offset]
            for at in range(0, len(chunk), step):
                yield chunk[at : at + step]
            offset += len(chunk)

    def drop_for(self, request_number: int) -> int | None:
        """Where request number `request_number` (0-based) is cut, if it is."""
        if self.drop_at is None:
            return None
        if isinstance(self.drop_at, int):
            if self.drops is None or request_number < self.drops:
                return self.drop_at
            return None
        return self.drop_at[request_number] if request_number < len(self.drop_at) else None


class VideoServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) in a daemon thread; use as a context manager.

    `write_bytes` is the most one socket write sends (a throughput bench wants large writes).
    """

    def __init__(self, write_bytes: int = WRITE_BYTES) -> None:
        self.write_bytes = write_bytes
        self.routes: dict[str, Route] = {}
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.video_server = self  # type: ignore[attr-defined]
        self._server = server
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def add(self, path: str, body: bytes | Generated = b"", **behaviour: Any) -> str:
        """Serve `body` at `path` with the given Route switches; returns the full URL."""
        route = Route(body=body, **behaviour)
        if route.etag is None and route.status == 200:
            route.etag = (
                '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                if isinstance(body, bytes)
                else f'"generated-{body.size}"'
            )
        with self._lock:
            self.routes[path] = route
        return self.url(path)

    def serve_file(self, path: Path, **behaviour: Any) -> Video:
        """Serve a file's bytes at `/<file name>`, as a provider's CDN would."""
        data = path.read_bytes()
        return Video(path.name, data, self.add(f"/{path.name}", data, **behaviour))

    def redirect(self, path: str, to: str, status: int = 302) -> str:
        """`path` answers `status` with Location `to` (a path on this server or a full URL)."""
        return self.add(path, status=status, location=to)

    def redirect_chain(self, target: str, hops: int, status: int = 302) -> str:
        """`hops` redirects ending at `target`; returns the URL of the first one."""
        path = target
        for hop in range(hops, 0, -1):
            source = f"{target}.hop{hop}"
            self.redirect(source, path, status)
            path = source
        return self.url(path)

    def requests_for(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _record(self, seen: SeenRequest) -> Route | None:
        with self._lock:
            self.requests.append(seen)
            return self.routes.get(seen.path)

    def __enter__(self) -> VideoServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="video-server", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests` instead
        pass

    def do_GET(self) -> None:
        video: VideoServer = self.server.video_server
        path = urlsplit(self.path).path
        seen = SeenRequest(
            method="GET",
            path=path,
            range=self.headers.get("Range"),
            if_range=self.headers.get("If-Range"),
            headers=dict(self.headers.items()),
        )
        route = video._record(seen)
        self.close_connection = True
        if route is None:
            return self._small(404, b"no such video")
        with video._lock:
            number = route.served
            route.served += 1
        if route.location is not None:
            return self._small(route.status, b"", {"Location": route.location})
        if route.status != 200:
            return self._small(route.status, f"status {route.status}".encode())
        self._body(route, seen, route.drop_for(number))

    def _small(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(
            status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _body(self, route: Route, seen: SeenRequest, drop: int | None) -> None:
        size = route.size
        start, end, status = 0, size, 200
        match = _RANGE_RE.match(seen.range or "") if route.ranges else None
        if match and (seen.if_range is None or seen.if_range == route.etag):
            first, last = match.groups()
            if first:
                start = int(first)
                end = min(int(last) + 1, size) if last else size
            elif last:  # suffix range: the last N bytes
                start = max(size - int(last), 0)
            if start >= size:
                return self._small(416, b"", {"Content-Range": f"bytes */{size}"})
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes" if route.ranges else "none")
        if route.etag:
            self.send_header("ETag", route.etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if route.framing == "length":
            length = end - start + (route.length_delta if status == 200 else 0)
            self.send_header("Content-Length", str(length))
        elif route.framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self._write(route, start, end, drop)

    def _write(self, route: Route, start: int, end: int, drop: int | None) -> None:
        """Send [start, end); with `drop`, close the socket once the body reaches that offset."""
        sent = start
        chunked = route.framing == "chunked"
        try:
            for piece in route.read(start, end, self.server.video_server.write_bytes):
                if drop is not None and sent + len(piece) >= drop:
                    piece = piece[: max(drop - sent, 0)]
                    self._send_piece(piece, chunked)
                    self._drop()
                    return
                self._send_piece(piece, chunked)
                sent += len(piece)
                if route.trickle is not None:
                    time.sleep(route.trickle[1])
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (it gave up, or a test is over)

    def _send_piece(self, piece: bytes, chunked: bool) -> None:
        if not piece:
            return
        if chunked:
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        else:
            self.wfile.write(piece)
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the connection mid-body (a FIN after the bytes already written)."""
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
