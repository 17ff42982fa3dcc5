"""The local API Gateway's HTTP framing, over a real socket: malformed bodies get an answer.

A request whose body cannot be framed (a chunk size that is not hex, a Content-Length that is
not a number or is negative, both framings at once, a body shorter than announced) must be
answered 400 or 408 and its connection closed - never read to EOF, never left hanging, never a
traceback. Each case is sent byte for byte with a raw `socket`, the way a broken or hostile
client would, to an `ApiServer` listening on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from infra.local.api import ApiServer, LocalApi

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 0.5  # the server's per-request time limit in these tests
CLIENT_WAIT = 5.0  # how long the client waits for an answer: far longer than the server may take


@pytest.fixture
def server() -> Iterator[ApiServer]:
    api = LocalApi([], "Prod", "us-east-1", "123456789012", lambda: (200, {"status": "ok"}))
    api.ready = True
    http = ApiServer(HOST, 0, api, request_timeout=REQUEST_TIMEOUT)
    thread = threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield http
    http.shutdown()
    http.server_close()
    thread.join(5)


def exchange(server: ApiServer, raw: bytes, *, half_close: bool = False) -> tuple[bytes, float, bool]:
    """Send `raw`, keep the connection open (unless half_close), read until the server closes.

    Returns (everything the server sent, seconds until it closed, whether it closed in time).
    """
    with socket.create_connection(server.server_address[:2], timeout=CLIENT_WAIT) as sock:
        started = time.monotonic()
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, time.monotonic() - started, False
        return received, time.monotonic() - started, True


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def json_body(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


def post(headers: str, body: bytes = b"") -> bytes:
    return f"POST /Prod/callbacks HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n".encode() + body


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param("Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", id="chunk-size-not-hex"),
        pytest.param("Transfer-Encoding: chunked\r\n", b"-5\r\nhello\r\n0\r\n\r\n", id="chunk-size-negative"),
        pytest.param("Transfer-Encoding: chunked\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", id="chunk-size-0x"),
        pytest.param(
            "Transfer-Encoding: chunked\r\n",
            b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
            id="chunk-size-underscore",
        ),
        pytest.param("Transfer-Encoding: chunked\r\n", b"5\r\nhelloXX0\r\n\r\n", id="chunk-without-crlf"),
        pytest.param("Transfer-Encoding: chunked\r\n", b"f" * 5000 + b"\r\n", id="chunk-size-line-too-long"),
        pytest.param("Content-Length: abc\r\n", b"{}", id="content-length-abc"),
        pytest.param("Content-Length: -1\r\n", b"{}", id="content-length-negative"),
        pytest.param("Content-Length: +2\r\n", b"{}", id="content-length-plus"),
        pytest.param("Content-Length: 2\r\nContent-Length: 3\r\n", b"{}", id="content-length-twice"),
        pytest.param("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", b"{}", id="both-framings"),
        pytest.param("Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n", id="chunked-not-last"),
    ],
)
def test_a_body_that_cannot_be_framed_answers_400_and_closes(
    server: ApiServer, headers: str, body: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the local API WHEN a request arrives whose body framing is broken (connection left open)
    answer, seconds, closed = exchange(server, post(headers, body))
    # THEN it is answered 400 with API Gateway's error shape, at once, and the connection is closed
    assert closed, f"no answer within {CLIENT_WAIT} s: {answer[:200]!r}"
    assert status_of(answer) == 400
    assert "message" in json_body(answer)
    assert seconds < REQUEST_TIMEOUT + 1
    # AND nothing was printed as a traceback
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_shorter_than_its_content_length_times_out_with_408(
    server: ApiServer, capfd: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a client that announces 100 bytes, sends 10 and then waits, keeping the connection open
    answer, seconds, closed = exchange(server, post("Content-Length: 100\r\n", b"0123456789"))
    # THEN the server answers 408 after its request timeout and closes, instead of waiting forever
    assert closed, f"no answer within {CLIENT_WAIT} s"
    assert status_of(answer) == 408
    assert REQUEST_TIMEOUT * 0.8 <= seconds < REQUEST_TIMEOUT + 1.5
    assert "Traceback" not in capfd.readouterr().err


def test_a_chunk_shorter_than_its_size_times_out_with_408(server: ApiServer) -> None:
    answer, _, closed = exchange(server, post("Transfer-Encoding: chunked\r\n", b"64\r\nonly a few bytes"))
    assert closed and status_of(answer) == 408


def test_a_body_cut_short_by_the_client_answers_400(server: ApiServer) -> None:
    # GIVEN a client that announces 100 bytes, sends 10 and closes its side
    answer, _, closed = exchange(server, post("Content-Length: 100\r\n", b"0123456789"), half_close=True)
    # THEN 400 (the body ended early), not a request handed on with a truncated body
    assert closed and status_of(answer) == 400


def test_a_body_over_the_payload_limit_still_answers_413(server: ApiServer) -> None:
    answer, _, closed = exchange(server, post(f"Content-Length: {10 * 1024 * 1024 + 1}\r\n"))
    assert closed and status_of(answer) == 413


def test_well_framed_requests_still_share_one_connection(server: ApiServer) -> None:
    # GIVEN one keep-alive connection WHEN a Content-Length request, a chunked one (with a chunk
    # extension and a trailer) and a GET /health follow each other on it
    requests_in_a_row = (
        post("Content-Length: 2\r\n", b"{}")
        + post("Transfer-Encoding: chunked\r\n", b"2;ext=1\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n")
        + b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    answer, _, closed = exchange(server, requests_in_a_row)
    # THEN all three are answered in order: the two undeclared routes 404 (docs/api.md), then health
    assert closed
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [404, 404, 200]
