"""Client for the provider's "Create Music Video" API: submit (`mp4/generate`) and poll (`mp4/record-info`).

Why this module exists: three paths talk to the provider (`POST /tasks` submits, the transfer
path confirms a callback's `video_url` because the webhook signature does not cover the body,
and reconcile polls tasks whose callback is late). They all need the same three things:

* one error model. The provider answers with an HTTP status *and* a JSON `code` that may
  disagree (HTTP 200 with `{"code": 430}` is normal). The body's `code` wins when present,
  else the HTTP status. Every failure becomes a `ProviderError` whose `retryable` flag tells
  the caller whether to back off and try again (405, 429, 430, 455, 5xx, timeouts, garbled
  answers) or to give up (400, 401, 404, 413 and anything else);
* tolerant parsing. The same API is served under several brands: times come as epoch
  milliseconds or as `"YYYY-MM-DD HH:MM:SS"`, the track id as `audioId` or `musicId`, and any
  field may be missing or null. `RecordInfo` hides those differences;
* secrets that never leak. The bearer key is sent in a header only; it is never logged, never
  in `repr(client)`. The provider's own text (error messages, `errorMessage`) is scrubbed
  before it goes anywhere: the key, the callback token, the callBackUrl just sent and any
  `token=` value are masked even if the provider echoes them back (`videohook.redact`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from aws_lambda_powertools import Logger
from requests.adapters import HTTPAdapter

from videohook.errors import ConfigError, ProviderError
from videohook.redact import scrub

__all__ = ["RETRYABLE_CODES", "ProviderClient", "RecordInfo", "SuccessFlag", "is_retryable_code"]

logger = Logger(child=True)

#: Provider codes worth retrying later (over the call limit, insufficient credits, calling too
#: often, maintenance). Every 5xx is retryable as well: see `is_retryable_code`.
RETRYABLE_CODES: frozenset[int] = frozenset({405, 429, 430, 455})

#: The provider's own `msg` is kept in our messages (it is what an operator needs) but clipped:
#: it ends up in logs and in `POST /tasks` answers.
MESSAGE_LIMIT = 300

#: The API answers a few hundred bytes; a bigger body is not the API (a proxy page, a wrong base).
MAX_ANSWER_BYTES = 1024 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class SuccessFlag(StrEnum):
    """`data.successFlag` of `record-info`.

    A value outside this list (a brand adding a state) is kept verbatim in
    `RecordInfo.success_flag` and treated like `PENDING`: neither failed nor ready, so callers
    wait and ask again instead of failing a task on a word they do not know.
    """

    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    CREATE_TASK_FAILED = "CREATE_TASK_FAILED"
    GENERATE_MP4_FAILED = "GENERATE_MP4_FAILED"
    CALLBACK_EXCEPTION = "CALLBACK_EXCEPTION"


_FAILED_FLAGS = frozenset({SuccessFlag.CREATE_TASK_FAILED, SuccessFlag.GENERATE_MP4_FAILED})


def is_retryable_code(code: int) -> bool:
    """True when a provider code means "try again later" rather than "this will never work"."""
    return code in RETRYABLE_CODES or 500 <= code <= 599


@dataclass(frozen=True)
class RecordInfo:
    """What `record-info` says about one task, the same whatever the brand.

    `success_flag` is a `SuccessFlag` member when the value is known (compared case-insensitively),
    else the provider's string verbatim; a missing or null flag reads as `PENDING`.
    Times are timezone-aware UTC; `None` when missing, zero or unparseable.
    """

    task_id: str
    success_flag: str
    video_url: str | None
    audio_id: str | None
    error_code: int | None
    error_message: str | None
    create_time: datetime | None
    complete_time: datetime | None

    @property
    def is_failed(self) -> bool:
        """The provider gave up on this task: record `GENERATION_FAILED`, poll no more."""
        return self.success_flag in _FAILED_FLAGS

    @property
    def video_ready(self) -> bool:
        """A video can be copied now: `SUCCESS`, or `CALLBACK_EXCEPTION` that still has a `videoUrl`.

        `CALLBACK_EXCEPTION` means the provider failed to *deliver* the callback, not to make
        the video; the video is usable when the provider reports its URL. A `SUCCESS` without
        a URL is not ready either: there is nothing to copy, so callers wait and ask again
        (neither ready nor failed) rather than queue a transfer of nothing.
        """
        ready_flags = (SuccessFlag.SUCCESS, SuccessFlag.CALLBACK_EXCEPTION)
        return self.success_flag in ready_flags and self.video_url is not None

    @classmethod
    def from_data(
        cls, data: dict[str, Any], *, task_id: str, clean: Callable[[str], str] | None = None
    ) -> RecordInfo:
        """Build from the `data` object of a `record-info` answer; `task_id` is used when it lacks one.

        `clean` makes the provider's `errorMessage` fit to store and show (default: clipped);
        the client passes one that also scrubs its secrets, before clipping.
        """
        response = data.get("response")
        video_url = _text(response.get("videoUrl")) if isinstance(response, dict) else None
        error_message = _text(data.get("errorMessage"))
        return cls(
            task_id=_text(data.get("taskId")) or task_id,
            success_flag=_success_flag(data.get("successFlag")),
            video_url=video_url,
            audio_id=_text(data.get("audioId")) or _text(data.get("musicId")),
            error_code=_as_int(data.get("errorCode")),
            error_message=(clean or _clip)(error_message) if error_message else None,
            create_time=parse_time(data.get("createTime")),
            complete_time=parse_time(data.get("completeTime")),
        )


class _Secret:
    """Holds secrets so that no `repr`, `vars()` dump or debugger view prints them."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def reveal(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return "'***'"


POOL_CONNECTIONS = 32


def _pooled_session() -> requests.Session:
    """A session whose pool fits reconcile's parallel polls (requests keeps only 10 by default)."""
    session = requests.Session()
    session.mount("https://", HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))
    session.mount("http://", HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))
    return session


class ProviderClient:
    """Talks to one provider API base with one key. Thread-safe as far as `requests.Session` is.

    `timeout` is (connect, read) seconds; the read timeout bounds each socket read, and the
    whole answer must also arrive within connect + read seconds, so a server that drips bytes
    cannot hold a Lambda for minutes. Redirects are not followed: the API never redirects, and
    following one would send the key to wherever it points.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        redact: Iterable[str | None] = (),
    ) -> None:
        """`redact`: more secrets to mask in the provider's text (the callback token)."""
        base = (base_url or "").strip().rstrip("/")
        if not base.startswith(("https://", "http://")):
            raise ConfigError("PROVIDER_API_BASE must be an http(s) URL")
        if not api_key or not api_key.strip():
            raise ConfigError("the provider API key is empty")
        self.base_url = base
        self.timeout = timeout
        self._key = _Secret(api_key.strip())
        self._redact = _Secret(tuple(s for s in redact if s))
        self._session = session or _pooled_session()

    def __repr__(self) -> str:
        return f"ProviderClient(base_url={self.base_url!r}, timeout={self.timeout!r})"

    # --- the two endpoints ------------------------------------------------------------

    def generate(
        self,
        *,
        task_id: str,
        audio_id: str,
        callback_url: str,
        author: str | None = None,
        domain_name: str | None = None,
    ) -> str:
        """Ask the provider to make the video of `audio_id`; returns the task id its callback will carry.

        A retryable error here is ambiguous for timeouts (the provider may have accepted the task
        before the answer was lost): callers that retry may cause a duplicate, which the
        callback path tolerates. When a 200 answer lacks `data.taskId` the task *was* accepted,
        so the id we sent is returned rather than an error that would invite a second submit.
        """
        body: dict[str, str] = {"taskId": task_id, "audioId": audio_id, "callBackUrl": callback_url}
        if author is not None:
            body["author"] = author
        if domain_name is not None:
            body["domainName"] = domain_name
        what = f"generate for task {task_id!r}"
        # The provider may quote the callBackUrl back: every value of its query is secret.
        echoed = tuple(value for _, value in parse_qsl(urlsplit(callback_url).query))
        data = self._call("POST", "/api/v1/mp4/generate", what=what, json_body=body, secrets=echoed)
        accepted = _text(data.get("taskId")) if isinstance(data, dict) else None
        if accepted is None:
            logger.warning(
                "provider generate answered 200 without data.taskId; using the id sent",
                extra={"task_id": task_id},
            )
            return task_id
        return accepted

    def record_info(self, task_id: str) -> RecordInfo:
        """Poll the state of one task (used to confirm callbacks and to reconcile late ones).

        A 200 answer without a `data` object, or about another task, is a `ProviderError`
        (retryable): nothing can be concluded from it, and retrying later is what reconcile
        does anyway.
        """
        what = f"record-info for task {task_id!r}"
        data = self._call("GET", "/api/v1/mp4/record-info", what=what, params={"taskId": task_id})
        if not isinstance(data, dict):
            raise ProviderError(f"provider {what} answered 200 without a data object", retryable=True)
        info = RecordInfo.from_data(data, task_id=task_id, clean=self._safe)
        if info.task_id != task_id:
            raise ProviderError(
                f"provider {what} answered about another task ({self._safe(info.task_id)!r})", retryable=True
            )
        return info

    # --- transport and error model ---------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        json_body: dict[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> Any:
        """Send one request and return the answer's `data` (any JSON value), or raise `ProviderError`.

        `secrets`: what this request sent that the provider's text must not carry onward.
        """
        headers = {"Authorization": f"Bearer {self._key.reveal()}", "Accept": "application/json"}
        started = time.monotonic()
        try:
            with self._session.request(
                method,
                self.base_url + path,
                params=params,
                json=json_body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                raw = self._read(response, started, what)
        except requests.Timeout as exc:
            # A read timeout comes after the request was sent: the provider may have acted on it.
            raise ProviderError(
                f"provider {what} timed out ({type(exc).__name__})",
                retryable=True,
                maybe_delivered=not isinstance(exc, requests.ConnectTimeout),
            ) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidHeader,
        ) as exc:
            # Configuration (a bad base URL or key), which no retry will fix.
            raise ProviderError(f"provider {what} could not be sent ({type(exc).__name__})") from exc
        except requests.RequestException as exc:
            # Refused or dropped connections, broken chunked bodies: the next attempt may work.
            raise ProviderError(
                f"provider {what} failed in transit ({type(exc).__name__})", retryable=True
            ) from exc

        elapsed_ms = round((time.monotonic() - started) * 1000)
        body = _decode(raw)
        code, msg, data = self._interpret(status, body)
        logger.debug(
            "provider answered",
            extra={"call": what, "http_status": status, "provider_code": code, "elapsed_ms": elapsed_ms},
        )
        if code is None:
            raise ProviderError(
                f"provider {what} answered HTTP {status} with {_describe(body)}", retryable=True
            )
        if code != 200:
            detail = f": {self._safe(msg, secrets)}" if msg else ""
            raise ProviderError(
                f"provider {what} answered code {code}{detail}",
                provider_code=code,
                retryable=is_retryable_code(code),
            )
        return data

    def _read(self, response: requests.Response, started: float, what: str) -> bytes:
        """Read the body, bounded in size and in total time (see the class docstring)."""
        deadline = started + sum(self.timeout)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=16384):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise ProviderError(
                    f"provider {what} answered more than {MAX_ANSWER_BYTES} bytes", retryable=True
                )
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise requests.Timeout("the answer took longer than the timeout in total")
        return b"".join(chunks)

    @staticmethod
    def _interpret(status: int, body: Any) -> tuple[int | None, str, Any]:
        """Decide the effective code: (code, msg, data); code None means "not an answer of the API".

        The body's `code` wins over the HTTP status, except that a body claiming 200 under a
        non-2xx status is not believed (a proxy or error page echoing a template): the status wins.
        A body that is not a JSON object carries no code, so an error status speaks for itself
        (a 503 page from a load balancer is still a retryable 503) and a 2xx one is garbled.
        """
        if not isinstance(body, dict):
            return (None if 200 <= status < 300 else status), "", None
        msg = body.get("msg")
        msg = msg if isinstance(msg, str) else ""
        if "code" not in body or body["code"] is None:
            return status, msg, body.get("data")
        body_code = _as_int(body["code"])
        if body_code is None:
            return (None if 200 <= status < 300 else status), msg, None
        if body_code == 200 and not 200 <= status < 300:
            return status, msg, None
        return body_code, msg, body.get("data")

    def _safe(self, text: str, secrets: Iterable[str] = ()) -> str:
        """Provider text fit for our messages: secrets scrubbed (before clipping, which could
        cut one in two and leave a part unrecognised), then clipped to one short line."""
        return _clip(scrub(text, (self._key.reveal(), *self._redact.reveal(), *secrets)))


# --- parsing helpers -------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """Read a provider time: epoch ms (number or numeric string) or "YYYY-MM-DD HH:MM:SS" (UTC).

    Zero and negative values read as None: some brands send 0 for "not completed yet".
    ISO 8601 with a `T` or an offset is accepted too; naive times are taken as UTC.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _from_ms(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if _NUMERIC.match(text):
        return _from_ms(float(text))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _from_ms(ms: float) -> datetime | None:
    if not math.isfinite(ms) or ms <= 0:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return None


def _success_flag(value: Any) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        return SuccessFlag.PENDING
    text = str(value).strip()
    try:
        return SuccessFlag(text.upper())
    except ValueError:
        return text


def _text(value: Any) -> str | None:
    """A non-empty string with surrounding blanks removed, numbers accepted as text; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value.strip()):
        return int(value.strip())
    return None


def _clip(text: str) -> str:
    """One line, at most MESSAGE_LIMIT characters: provider text goes into logs and answers."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 1] + "…"


def _decode(raw: bytes) -> Any:
    """The JSON value of the body, or a `_NotJson` marker describing why there is none."""
    if not raw.strip():
        return _NotJson("an empty body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _NotJson("a body that is not JSON")


class _NotJson:
    def __init__(self, description: str) -> None:
        self.description = description


def _describe(body: Any) -> str:
    """Words for an answer that is not the API's envelope (for the error message)."""
    if isinstance(body, _NotJson):
        return body.description
    if isinstance(body, dict):
        return "a JSON object whose code is not a number"
    return f"a JSON {type(body).__name__} instead of an object"
