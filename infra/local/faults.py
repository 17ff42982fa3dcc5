"""Fault injection in front of the embedded AWS endpoint: `LOCAL_FAULTS=true` only.

A WSGI middleware (like `serve.AtomicDynamoDB`) that answers chosen AWS calls with an
error instead of handing them to moto, so the reliability suite can prove from the
outside that a transient S3 or DynamoDB fault mid-copy is retried and leaves nothing
behind. It lives in infra/local and is installed only when the local stack is started
with `LOCAL_FAULTS=true`; the deployed template has nothing like it.

Controlled over HTTP on the embedded AWS port itself (`_local` can never be a bucket name,
since S3 forbids underscores in bucket names):

    POST   /_local/faults  {"operation": "UploadPart", "count": 3, "status": 500,
                            "contains": "videos/task-1.mp4", "after": 0, "code": "InternalError"}
    GET    /_local/faults  the rules, with how many calls each has failed so far
    DELETE /_local/faults  remove every rule

A rule fails the next `count` calls of `operation` (after letting `after` matching calls
through) whose path and query, or JSON body, contain `contains` (when given; a list: every
string in it). The query is matched as `?&a=1&b=2&`, so `["videos/t.mp4", "&partNumber=2&"]`
picks one part of one upload. Operations are named as in the AWS API: S3 calls are recognised by method and query (`UploadPart` is
a PUT with `partNumber`; `CreateMultipartUpload` a POST with `uploads`, and so on), the
JSON-protocol services (DynamoDB, SQS, Secrets Manager) by their `X-Amz-Target` header.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

log = logging.getLogger("infra.local")
CONTROL_PATH = "/_local/faults"
_SERVICE = re.compile(r"Credential=[^/,]+/[^/,]+/[^/,]+/([^/,]+)/")
_S3_CODES = {500: "InternalError", 503: "SlowDown", 400: "BadRequest", 403: "AccessDenied"}
_JSON_CODES = {
    500: "InternalServerError",
    503: "ServiceUnavailable",
    400: "ThrottlingException",
}


@dataclass
class FaultRule:
    operation: str
    count: int = 1
    status: int = 500
    contains: str | list[str] | None = None
    after: int = 0
    code: str | None = None
    seen: int = 0  # matching calls so far
    failed: int = 0  # calls answered with the fault so far

    @classmethod
    def parse(cls, document: Any) -> FaultRule:
        if not isinstance(document, dict) or not isinstance(document.get("operation"), str):
            raise ValueError('a rule is a JSON object with at least "operation"')
        rule = cls(
            operation=document["operation"],
            count=int(document.get("count", 1)),
            status=int(document.get("status", 500)),
            contains=document.get("contains"),
            after=int(document.get("after", 0)),
            code=document.get("code"),
        )
        if rule.count < 1 or rule.after < 0 or not 400 <= rule.status <= 599:
            raise ValueError("count must be at least 1, after at least 0, status a 4xx or 5xx")
        pieces = [rule.contains] if isinstance(rule.contains, str) else rule.contains or []
        if not isinstance(pieces, list) or not all(isinstance(p, str) for p in pieces):
            raise ValueError("contains must be a string or a list of strings")
        return rule

    def matches(self, text: str) -> bool:
        pieces = [self.contains] if isinstance(self.contains, str) else self.contains or []
        return all(piece in text for piece in pieces)


def s3_operation(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """The S3 API operation a path-style request is, for the operations worth failing."""
    is_object = path.strip("/").count("/") >= 1
    if method == "PUT" and "partNumber" in query and "uploadId" in query:
        return "UploadPartCopy" if "HTTP_X_AMZ_COPY_SOURCE" in headers else "UploadPart"
    if method == "POST" and "uploads" in query:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in query:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in query:
        return "AbortMultipartUpload"
    if method == "GET" and "uploadId" in query:
        return "ListParts"
    if method == "GET" and not is_object and "uploads" in query:
        return "ListMultipartUploads"
    if method == "GET" and not is_object and "versions" in query:
        return "ListObjectVersions"
    if method == "PUT" and is_object and not query:
        return "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in headers else "PutObject"
    if method == "GET" and is_object and not set(query) - {"versionId"}:
        return "GetObject"
    if method == "HEAD" and is_object:
        return "HeadObject"
    if method == "DELETE" and is_object:
        return "DeleteObject"
    return f"S3:{method}"


class FaultInjector:
    """WSGI middleware: the control endpoint, and the faults its rules ask for."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: list[FaultRule] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == CONTROL_PATH:
            return self._control(environ, start_response)
        with self.lock:
            active = bool(self.rules)
        if not active:
            return self.app(environ, start_response)
        service, operation = self._identify(environ)
        rule = self._match(environ, operation)
        if rule is None:
            return self.app(environ, start_response)
        _drain(environ)
        log.warning("fault injected: %s %s answered %d (%s)", service, operation, rule.status, rule.contains)
        return self._fault(service, rule, start_response)

    # --- which call is this ------------------------------------------------------------------

    @staticmethod
    def _identify(environ: dict[str, Any]) -> tuple[str, str]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        found = _SERVICE.search(environ.get("HTTP_AUTHORIZATION", ""))
        service = found.group(1) if found else ""
        if target:
            return service or target.split("_", 1)[0].split(".", 1)[0].lower(), target.rsplit(".", 1)[-1]
        if service == "s3":
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
            return service, s3_operation(
                environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""), query, headers
            )
        return service, f"{service}:{environ.get('REQUEST_METHOD', '')}"

    def _match(self, environ: dict[str, Any], operation: str) -> FaultRule | None:
        with self.lock:
            candidates = [r for r in self.rules if r.operation == operation and r.failed < r.count]
        if not candidates:
            return None
        text = environ.get("PATH_INFO", "") + "?&" + environ.get("QUERY_STRING", "") + "&"
        if any(r.contains for r in candidates) and environ.get("HTTP_X_AMZ_TARGET"):
            text += "\n" + _buffer_body(environ).decode("utf-8", "replace")  # JSON bodies are small
        with self.lock:
            for rule in candidates:
                if not rule.matches(text):
                    continue
                if rule.failed >= rule.count:
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                rule.failed += 1
                return rule
        return None

    # --- answers -------------------------------------------------------------------------------

    @staticmethod
    def _fault(service: str, rule: FaultRule, start_response: Any) -> list[bytes]:
        reason = f"{rule.status} Injected Fault"
        if service == "s3":
            code = rule.code or _S3_CODES.get(rule.status, "InternalError")
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>injected by LOCAL_FAULTS</Message>"
                "<RequestId>local-fault</RequestId></Error>"
            ).encode()
            kind = "application/xml"
        else:
            code = rule.code or _JSON_CODES.get(rule.status, "InternalServerError")
            body = json.dumps(
                {"__type": f"com.amazonaws.local#{code}", "message": "injected by LOCAL_FAULTS"}
            )
            body = body.encode()
            kind = "application/x-amz-json-1.0"
        start_response(
            reason,
            [("Content-Type", kind), ("Content-Length", str(len(body))), ("x-amzn-ErrorType", code)],
        )
        return [body]

    def _control(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        status = "200 OK"
        with self.lock:
            if method == "POST":
                try:
                    rule = FaultRule.parse(json.loads(_buffer_body(environ) or b"null"))
                except (ValueError, TypeError) as error:
                    return _json(start_response, "400 Bad Request", {"error": str(error)})
                self.rules.append(rule)
                log.warning("fault rule added: %s", asdict(rule))
                status = "201 Created"
            elif method == "DELETE":
                self.rules.clear()
            elif method != "GET":
                return _json(start_response, "405 Method Not Allowed", {"error": "GET, POST or DELETE"})
            document = {"rules": [asdict(rule) for rule in self.rules]}
        return _json(start_response, status, document)


def _json(start_response: Any, status: str, document: dict[str, Any]) -> list[bytes]:
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _buffer_body(environ: dict[str, Any]) -> bytes:
    """Read the whole (small) body and put it back, so the app downstream still reads it."""
    if "local.faults.body" in environ:
        return environ["local.faults.body"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["local.faults.body"] = body
    return body


def _drain(environ: dict[str, Any]) -> None:
    """Read and drop a failed call's body, so its connection stays usable for the next call."""
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        while length > 0:
            chunk = stream.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)
    elif environ.get("wsgi.input_terminated"):
        while stream.read(1 << 16):
            pass
