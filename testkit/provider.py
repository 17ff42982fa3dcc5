"""A fake of the provider's music-video API, served over real HTTP on 127.0.0.1.

Why a real server rather than mocking `requests`: the client's timeouts, headers, query
encoding and error handling are exactly what the tests must exercise, and the other suites
(transfer confirmation, reconcile, the local stack) need a provider that a separate process
can reach too.

    with FakeProvider(api_key="k") as fp:
        fp.script("t1", [fp.pending(), fp.success("https://cdn.example.com/v.mp4")])
        client = ProviderClient(fp.base_url, "k")
        client.record_info("t1")   # PENDING
        client.record_info("t1")   # SUCCESS, and every later call too (the last answer repeats)

Answers (built with the helpers, consumed in order per task, the last one repeating):
  * a dict: the `data` of a code-200 answer (`taskId` filled in when absent);
  * `fp.error(http_status, code, msg)`: an error envelope (`code` may differ from the status);
    in an answer to `generate`, `{callBackUrl}` in `msg` echoes the callBackUrl sent;
  * `fp.raw(http_status, body)`: any bytes, for non-JSON and wrong-shape answers;
  * `fp.delay(seconds, then)`: sleep, then give `then` (default: PENDING), for timeouts.

Defaults: `record-info` for a task nobody scripted answers code 200 with PENDING (a task the
provider is still working on); `generate` answers `{"code": 200, "data": {"taskId": <sent>}}`
and remembers the `callBackUrl` per task (`fp.callback_urls`) unless `fp.script_generate` says
otherwise. A missing or wrong bearer key gets HTTP 401 with body code 401, before any script.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from requests.structures import CaseInsensitiveDict

GENERATE_PATH = "/api/v1/mp4/generate"
RECORD_INFO_PATH = "/api/v1/mp4/record-info"
#: In the `msg` of an error answer to `generate`, replaced by the `callBackUrl` that was sent.
ECHO_CALLBACK_URL = "{callBackUrl}"

#: The times every helper answer carries unless told otherwise (docs/provider.md's example values).
CREATE_TIME = datetime(2024, 12, 31, 16, 10, 0, tzinfo=UTC)
COMPLETE_TIME = datetime(2024, 12, 31, 16, 12, 30, tzinfo=UTC)


class ReceivedRequest(NamedTuple):
    """One request as the fake saw it (a tuple: `method, path, query, body, headers = r`)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any  # the parsed JSON body, None when absent or not JSON
    headers: CaseInsensitiveDict[str]


@dataclass(frozen=True)
class ErrorAnswer:
    http_status: int
    code: int
    msg: str


@dataclass(frozen=True)
class RawAnswer:
    http_status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class DelayedAnswer:
    seconds: float
    then: Answer


Answer = dict[str, Any] | ErrorAnswer | RawAnswer | DelayedAnswer


@dataclass
class _Script:
    answers: list[Answer] = field(default_factory=list)

    def next(self) -> Answer:
        """The next answer; the last one stays (so a settled task keeps its state)."""
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _time(value: datetime | None, time_format: str) -> int | str | None:
    """The two brands' time shapes: epoch milliseconds, or "YYYY-MM-DD HH:MM:SS" in UTC."""
    if value is None:
        return None
    if time_format == "ms":
        return int(value.timestamp() * 1000)
    if time_format == "string":
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    raise ValueError(f"time_format must be 'ms' or 'string', not {time_format!r}")


class FakeProvider:
    """The provider API on an ephemeral port; use as a context manager (starts and stops the server)."""

    def __init__(self, api_key: str = "test-provider-key") -> None:
        self.api_key = api_key
        self.requests: list[ReceivedRequest] = []
        self.callback_urls: dict[str, str] = {}
        self._scripts: dict[str, _Script] = {}
        self._generate_script: _Script | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> FakeProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._closing.clear()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; requests still sleeping in `delay` are woken and dropped."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake provider is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- scripting --------------------------------------------------------------------

    def script(self, task_id: str, answers: list[Answer]) -> None:
        """What `record-info` answers for `task_id`, one answer per call, the last repeating."""
        if not answers:
            raise ValueError("script at least one answer")
        with self._lock:
            self._scripts[task_id] = _Script(list(answers))

    def script_generate(self, answers: Answer | list[Answer] | None) -> None:
        """What `generate` answers (one answer, or a list consumed in order); None restores the default."""
        with self._lock:
            if answers is None:
                self._generate_script = None
            else:
                self._generate_script = _Script(list(answers) if isinstance(answers, list) else [answers])

    def reset(self, api_key: str | None = None) -> FakeProvider:
        """Forget scripts, recorded requests and callback URLs (to share one server between tests).

        `api_key` changes the key it expects from now on. Returns the fake, ready for a test.
        """
        with self._lock:
            if api_key is not None:
                self.api_key = api_key
            self.requests.clear()
            self.callback_urls.clear()
            self._scripts.clear()
            self._generate_script = None
        return self

    def requests_to(self, path: str, task_id: str | None = None) -> list[ReceivedRequest]:
        """The requests received on `path` (optionally only those about `task_id`)."""
        with self._lock:
            found = [r for r in self.requests if r.path == path]
        if task_id is None:
            return found
        return [r for r in found if task_id in (r.query.get("taskId"), _body_task_id(r.body))]

    # --- answer helpers ---------------------------------------------------------------

    @staticmethod
    def pending() -> dict[str, Any]:
        return {
            "successFlag": "PENDING",
            "response": None,
            "errorCode": None,
            "errorMessage": None,
            "createTime": _time(CREATE_TIME, "ms"),
            "completeTime": None,
        }

    @staticmethod
    def success(
        video_url: str,
        *,
        audio_id: str | None = "audio-0001",
        music_id: str | None = None,
        time_format: str = "ms",
        flag: str = "SUCCESS",
    ) -> dict[str, Any]:
        """A finished task; `audio_id=None, music_id=...` is the brand that only sends `musicId`."""
        data: dict[str, Any] = {
            "successFlag": flag,
            "response": {"videoUrl": video_url},
            "musicIndex": 0,
            "createTime": _time(CREATE_TIME, time_format),
            "completeTime": _time(COMPLETE_TIME, time_format),
            "errorCode": None,
            "errorMessage": None,
        }
        if audio_id is not None:
            data["audioId"] = audio_id
        if music_id is not None:
            data["musicId"] = music_id
        return data

    @classmethod
    def callback_exception(cls, video_url: str | None, **kwargs: Any) -> dict[str, Any]:
        """The provider failed to deliver the callback; the video exists when `video_url` is set."""
        data = cls.success(video_url or "", flag="CALLBACK_EXCEPTION", **kwargs)
        if not video_url:
            data["response"] = None
        return data

    @staticmethod
    def failed(
        flag: str = "GENERATE_MP4_FAILED",
        code: int | None = 400,
        msg: str = "generation failed",
    ) -> dict[str, Any]:
        return {
            "successFlag": flag,
            "response": None,
            "errorCode": code,
            "errorMessage": msg,
            "createTime": _time(CREATE_TIME, "ms"),
            "completeTime": _time(COMPLETE_TIME, "ms"),
        }

    @staticmethod
    def error(http_status: int, code: int | None = None, msg: str = "error") -> ErrorAnswer:
        """An error envelope; e.g. `error(200, 430, ...)` is the provider's "HTTP 200 but code 430"."""
        return ErrorAnswer(http_status, http_status if code is None else code, msg)

    @staticmethod
    def raw(http_status: int, body: bytes | str, content_type: str = "text/html") -> RawAnswer:
        return RawAnswer(http_status, body.encode() if isinstance(body, str) else body, content_type)

    @classmethod
    def delay(cls, seconds: float, then: Answer | None = None) -> DelayedAnswer:
        return DelayedAnswer(seconds, cls.pending() if then is None else then)

    # --- serving (called from the handler threads) ------------------------------------

    def _answer_for(self, req: ReceivedRequest) -> tuple[int, bytes, str]:
        if req.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _envelope(401, 401, "You do not have access permissions", None)
        if req.path == RECORD_INFO_PATH and req.method == "GET":
            task_id = req.query.get("taskId", "")
            if not task_id:
                return _envelope(400, 400, "taskId is required", None)
            with self._lock:
                script = self._scripts.get(task_id)
                answer = script.next() if script else self.pending()
                callback_url = self.callback_urls.get(task_id)
            defaults = {"taskId": task_id, "callbackUrl": callback_url}
            return self._render(answer, defaults)
        if req.path == GENERATE_PATH and req.method == "POST":
            body = req.body if isinstance(req.body, dict) else {}
            task_id = body.get("taskId")
            required = ("taskId", "audioId", "callBackUrl")
            if not all(isinstance(body.get(k), str) and body[k] for k in required):
                return _envelope(400, 400, "taskId, audioId and callBackUrl are required", None)
            with self._lock:
                answer = self._generate_script.next() if self._generate_script else {}
                if isinstance(answer, dict):
                    self.callback_urls[task_id] = body["callBackUrl"]
            if isinstance(answer, ErrorAnswer) and ECHO_CALLBACK_URL in answer.msg:
                # Some providers quote the request back in their error text, token and all.
                answer = ErrorAnswer(
                    answer.http_status,
                    answer.code,
                    answer.msg.replace(ECHO_CALLBACK_URL, body["callBackUrl"]),
                )
            return self._render(answer, {"taskId": task_id})
        return _envelope(404, 404, "Not Found", None)

    def _render(self, answer: Answer, defaults: dict[str, Any]) -> tuple[int, bytes, str]:
        if isinstance(answer, DelayedAnswer):
            if self._closing.wait(answer.seconds):
                raise ConnectionAbortedError("the fake provider is stopping")
            return self._render(answer.then, defaults)
        if isinstance(answer, ErrorAnswer):
            return _envelope(answer.http_status, answer.code, answer.msg, None)
        if isinstance(answer, RawAnswer):
            return answer.http_status, answer.body, answer.content_type
        return _envelope(200, 200, "success", {**defaults, **answer})


def _body_task_id(body: Any) -> Any:
    return body.get("taskId") if isinstance(body, dict) else None


def _envelope(http_status: int, code: int, msg: str, data: Any) -> tuple[int, bytes, str]:
    body = json.dumps({"code": code, "msg": msg, "data": data}).encode()
    return http_status, body, "application/json"


class _Server(ThreadingHTTPServer):
    # socketserver's backlog is 5: under reconcile's 16 parallel polls (and a busy GIL) the kernel
    # drops SYNs and the client sees 3 s ConnectTimeouts no real provider causes.
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that time out and hang up are what the timeout tests are made of."""


def _handler_for(fake: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: pytest output stays readable."""

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            req = ReceivedRequest(
                method=self.command,
                path=url.path,
                query=dict(parse_qsl(url.query, keep_blank_values=True)),
                body=body,
                headers=CaseInsensitiveDict(self.headers.items()),
            )
            with fake._lock:
                fake.requests.append(req)
            status, payload, content_type = fake._answer_for(req)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
