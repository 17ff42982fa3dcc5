"""A local API Gateway (REST, Lambda proxy integration) for the template's `Api` events.

Each request becomes the proxy event API Gateway would build - the same fields, the
path parameters of the matched route, `requestContext.stage` from the template - and the
function's proxy answer is written back the way API Gateway writes it. Deliberately left
out: IAM authorisation (docs/api.md: the local stack does not check it), throttling, and the
29 s integration timeout. Paths are served both bare (`/callbacks`) and under the stage
(`/Prod/callbacks`), so a deployed URL works locally with only the host changed.

`GET /health` belongs to the local stack, not the template: 200 once everything is up.
So do the local-only pages (`pages`): the console at `/` and `GET /_local/stack`, the
stack's own description for the `videohook` command (docs/local-stack.md).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.local.lambdas import LocalFunction
from infra.template import Stack

log = logging.getLogger("infra.local")
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit
API_ID = "local"
MAX_LINE_BYTES = 4096  # a chunk-size or trailer line
MAX_TRAILER_LINES = 64
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _FramingError(Exception):
    """The request's body cannot be read as its headers announce: answered, then hung up."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Route:
    """One `Api` event of a function: its path template and method, as a matcher."""

    path: str
    method: str
    function: LocalFunction
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, path: str, method: str, function: LocalFunction) -> Route:
        regex = ""
        for part in re.split(r"(\{[^}]+\})", path):
            if part.startswith("{") and part.endswith("+}"):
                regex += f"(?P<{part[1:-2]}>.+)"
            elif part.startswith("{"):
                regex += f"(?P<{part[1:-1]}>[^/]+)"
            else:
                regex += re.escape(part)
        return cls(path, method.upper(), function, re.compile(f"^{regex}$"))

    @property
    def specificity(self) -> tuple[int, int]:
        """API Gateway prefers literal segments over variables, and variables over `{proxy+}`."""
        segments = self.path.strip("/").split("/")
        return (-sum(not s.startswith("{") for s in segments), sum(s.endswith("+}") for s in segments))


def routes_of(stack: Stack, functions: list[LocalFunction]) -> tuple[list[Route], str]:
    """Every `Api` event in the template, most specific first, and the API's stage name."""
    routes, stage = [], "Prod"
    for function in functions:
        for event in function.events.values():
            if event["Type"] != "Api":
                continue
            props = event["Properties"]
            routes.append(Route.of(props["Path"], props["Method"], function))
            api = props.get("RestApiId", {})
            if isinstance(api, dict) and api.get("Ref") in stack.resources:
                stage = stack.resources[api["Ref"]].get("Properties", {}).get("StageName", stage)
    routes.sort(key=lambda r: r.specificity)
    return routes, stage


def _gateway_error(status: int, message: str) -> tuple[int, dict[str, list[str]], bytes]:
    return status, {"Content-Type": ["application/json"]}, json.dumps({"message": message}).encode()


class LocalApi:
    """Turns HTTP requests into proxy events for the matched function, and answers back."""

    def __init__(
        self,
        routes: list[Route],
        stage: str,
        region: str,
        account: str,
        health: Callable[[], tuple[int, dict[str, Any]]],
        pages: dict[str, Callable[[], tuple[str, bytes]]] | None = None,
    ) -> None:
        self.routes = routes
        self.pages = pages or {}
        self.stage = stage
        self.region = region
        self.account = account
        self.health = health
        self.ready = False

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def route_miss(self, method: str, path: str) -> tuple[int, dict[str, list[str]], bytes]:
        """A path or method no route declares: 405 with `Allow` where the path exists with other
        methods, else 404 (docs/api.md: never API Gateway's bare 403; the template maps that
        one to the same 404)."""
        allowed = sorted({route.method for route in self.routes if route.pattern.match(path)})
        if allowed:
            body = {"error": "method_not_allowed", "message": "this path does not take this method"}
            headers = {"Content-Type": ["application/json"], "Allow": [", ".join(allowed)]}
            return 405, headers, json.dumps(body).encode()
        body = {"error": "not_found", "message": "no such resource"}
        return 404, {"Content-Type": ["application/json"]}, json.dumps(body).encode()

    def event(
        self,
        route: Route,
        params: dict[str, str],
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> dict[str, Any]:
        """The REST API proxy event, with the fields API Gateway fills for a Lambda proxy."""
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in headers:
            single[name] = value
            multi.setdefault(name, []).append(value)
        pairs = parse_qsl(query, keep_blank_values=True)
        query_single = {k: v for k, v in pairs}
        query_multi: dict[str, list[str]] = {}
        for key, value in pairs:
            query_multi.setdefault(key, []).append(value)
        text: str | None = None
        encoded = False
        if body:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:  # no binary media types are declared; keep the bytes anyway
                text, encoded = base64.b64encode(body).decode(), True
        now = datetime.now(UTC)
        host = single.get("Host") or next((v for k, v in single.items() if k.lower() == "host"), "")
        user_agent = next((v for k, v in single.items() if k.lower() == "user-agent"), None)
        request_id = str(uuid.uuid4())
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": query_single or None,
            "multiValueQueryStringParameters": query_multi or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": route.function.logical_id,
                "resourcePath": route.path,
                "httpMethod": method,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{path}",
                "accountId": self.account,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": host.split(".", 1)[0],
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": request_id,
                "identity": {
                    "cognitoIdentityPoolId": None,
                    "accountId": None,
                    "cognitoIdentityId": None,
                    "caller": None,
                    "sourceIp": source_ip,
                    "principalOrgId": None,
                    "accessKey": None,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                    "userArn": None,
                    "userAgent": user_agent,
                    "user": None,
                },
                "domainName": host,
                "apiId": API_ID,
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, dict[str, list[str]], bytes, str]:
        """Answer one request: (status, headers, body, tag of who answered)."""
        url = urlsplit(target)
        path = unquote(url.path)
        if path == "/health" and method == "GET":
            status, document = self.health()
            return status, {"Content-Type": ["application/json"]}, json.dumps(document).encode(), "health"
        if not self.ready:
            return (*_gateway_error(503, "the local stack is starting or stopping"), "gateway")
        if path == f"/{self.stage}" or path.startswith(f"/{self.stage}/"):
            path = path[len(self.stage) + 1 :] or "/"
        if path in self.pages and method in ("GET", "HEAD") and self.match(method, path) is None:
            content_type, data = self.pages[path]()
            return 200, {"Content-Type": [content_type], "Cache-Control": ["no-store"]}, data, "local"
        found = self.match(method, path)
        if found is None:
            return (*self.route_miss(method, path), "gateway")
        route, params = found
        event = self.event(route, params, method, path, url.query, headers, body, source_ip)
        try:
            answer = route.function.invoke(event)
            return (*self._answer(answer), route.function.tag)
        except Exception:
            return (*_gateway_error(502, "Internal server error"), route.function.tag)

    @staticmethod
    def _answer(answer: Any) -> tuple[int, dict[str, list[str]], bytes]:
        """Write the proxy answer as API Gateway does: a malformed one is a 502."""
        if not isinstance(answer, dict) or not isinstance(answer.get("statusCode"), int):
            log.error("the function's answer is not a Lambda proxy answer: %.200r", answer)
            return _gateway_error(502, "Internal server error")
        headers: dict[str, list[str]] = {
            k: [str(v) for v in vs] for k, vs in (answer.get("multiValueHeaders") or {}).items()
        }
        lowered = {k.lower() for k in headers}
        for name, value in (answer.get("headers") or {}).items():
            if name.lower() not in lowered:
                headers[name] = [str(value)]
        body = answer.get("body") or ""
        data = base64.b64decode(body) if answer.get("isBase64Encoded") else str(body).encode()
        if "content-type" not in {k.lower() for k in headers}:
            headers["Content-Type"] = ["application/json"]
        return answer["statusCode"], headers, data


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    server: ApiServer

    def setup(self) -> None:
        # Every read and write on the connection is bounded: a client that stops sending
        # (a body shorter than its Content-Length, an idle keep-alive) is not waited on forever.
        self.timeout = self.server.request_timeout
        super().setup()

    def _serve(self) -> None:
        started = time.monotonic()
        try:
            body = self._read_body(started + self.server.request_timeout)
        except _FramingError as error:
            body = None
            status, headers, data, tag = (*_gateway_error(error.status, error.message), "gateway")
        except TimeoutError:
            body = None
            status, headers, data, tag = (*_gateway_error(408, "Request Timeout"), "gateway")
        if body is None:
            # The rest of the stream cannot be trusted to start a request: answer and hang up.
            self.close_connection = True
        else:
            client_ip = self.client_address[0]
            # API Gateway adds these; a proxy or tunnel in front of the local stack knows the
            # outside scheme and port better than this server does, so its values are kept.
            headers_in = [(k, v) for k, v in self.headers.items() if k.lower() != "x-forwarded-for"]
            forwarded = self.headers.get("X-Forwarded-For")
            headers_in.append(("X-Forwarded-For", f"{forwarded}, {client_ip}" if forwarded else client_ip))
            if "X-Forwarded-Proto" not in self.headers:
                headers_in.append(("X-Forwarded-Proto", "http"))
            if "X-Forwarded-Port" not in self.headers:
                headers_in.append(("X-Forwarded-Port", str(self.server.server_address[1])))
            status, headers, data, tag = self.server.api.handle(
                self.command, self.path, headers_in, body, client_ip
            )
        self.send_response(status)
        for name, values in headers.items():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                for value in values:
                    self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        if tag != "health":
            elapsed = (time.monotonic() - started) * 1000
            log.info(
                "api %s %s -> %d %s (%.0f ms)", self.command, self.path.split("?", 1)[0], status, tag, elapsed
            )

    def _read_body(self, deadline: float) -> bytes:
        """The request body, framed as RFC 9112 says; `_FramingError` when it cannot be.

        Refused rather than guessed at: both framings at once (request smuggling), a transfer
        coding other than chunked, a Content-Length that is not one plain number (a negative
        one would read to EOF), a chunk size that is not plain hex. The whole body must
        arrive by `deadline`; past it the read raises TimeoutError (answered 408).
        """
        lengths = self.headers.get_all("Content-Length") or []
        codings = [
            c.strip().lower()
            for value in self.headers.get_all("Transfer-Encoding") or []
            for c in value.split(",")
            if c.strip()
        ]
        if codings:
            if lengths:
                raise _FramingError(400, "Transfer-Encoding and Content-Length together")
            if codings[-1] != "chunked":
                raise _FramingError(400, "Transfer-Encoding must end with chunked")
            if codings != ["chunked"]:
                raise _FramingError(501, f"Transfer-Encoding {', '.join(codings[:-1])[:40]} is not supported")
            return self._read_chunked(deadline)
        if not lengths:
            return b""
        if len(set(lengths)) > 1 or not _CONTENT_LENGTH.fullmatch(lengths[0].strip()):
            raise _FramingError(400, "Content-Length must be one whole number")
        length = int(lengths[0].strip())
        if length > MAX_PAYLOAD_BYTES:
            raise _FramingError(413, "Request Too Long")
        return self._read_exactly(length, deadline)

    def _read_chunked(self, deadline: float) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line(deadline, "chunk size").split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise _FramingError(400, "a chunk size is not a hexadecimal number")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_TRAILER_LINES):
                    if self._read_line(deadline, "trailer") in (b"\r\n", b"\n"):
                        return b"".join(chunks)
                raise _FramingError(400, "too many trailer lines")
            total += size
            if total > MAX_PAYLOAD_BYTES:
                raise _FramingError(413, "Request Too Long")
            chunks.append(self._read_exactly(size, deadline))
            if self._read_line(deadline, "chunk end") not in (b"\r\n", b"\n"):
                raise _FramingError(400, "a chunk is longer than its size")

    def _read_line(self, deadline: float, what: str) -> bytes:
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if time.monotonic() > deadline:
            raise TimeoutError("the request body took too long")
        if not line:
            raise _FramingError(400, "the body ended early")
        if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
            raise _FramingError(400, f"a {what} line is too long")
        return line

    def _read_exactly(self, length: int, deadline: float) -> bytes:
        """`length` bytes, read piecewise so the deadline is checked between reads."""
        parts: list[bytes] = []
        remaining = length
        while remaining:
            part = self.rfile.read1(min(remaining, 65536))
            if not part:
                raise _FramingError(400, "the body ended before its announced length")
            parts.append(part)
            remaining -= len(part)
            if remaining and time.monotonic() > deadline:
                raise TimeoutError("the request body took too long")
        return b"".join(parts)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: `_serve` logs one line per request on the local stack's logger."""


class ApiServer(ThreadingHTTPServer):
    """One thread per connection; request threads never keep the process alive."""

    daemon_threads = True
    # API Gateway takes bursts; socketserver's default backlog of 5 refused connections when
    # 20 senders called back at once (the reliability suite's callback storm).
    request_queue_size = 128

    def __init__(self, host: str, port: int, api: LocalApi, request_timeout: float = 30.0) -> None:
        self.api = api
        self.request_timeout = request_timeout  # seconds a client may take to send a request
        super().__init__((host, port), _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line for a client that went away; a traceback only for a fault of this server."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("api connection from %s ended: %s", client_address[0], type(error).__name__)
        else:
            log.exception("api: unexpected error serving %s", client_address[0])
