"""The shapes videohook trades in: the provider's callback, queue messages, stored videos.

Parsing lives here so that the HTTP layer and the reconcile job accept exactly the same
things; every refusal is a BadRequest with a machine code the provider's logs can show.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from videohook.errors import BadRequest
from videohook.policy import SourcePolicy, check_url
from videohook.redact import scrub

TASK_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_CALLBACK_BYTES = 64 * 1024
MAX_MSG_CHARS = 1000
SUCCESS_CODE = 200
# The provider's codes are HTTP-like; anything outside a 32-bit integer is not one of them.
CODE_RANGE = range(-(2**31), 2**31)


def check_task_id(value: Any) -> str:
    """A task id is used in S3 keys and log lines, so only a safe alphabet is accepted."""
    if not isinstance(value, str) or not TASK_ID_PATTERN.fullmatch(value):
        raise BadRequest("task_id must be 1-128 letters, digits, '_', '.' or '-'", code="invalid_task_id")
    return value


@dataclass(frozen=True)
class Callback:
    """One provider callback, validated."""

    code: int
    msg: str
    task_id: str
    video_url: str | None
    # The verified X-Webhook-Timestamp of a signed callback (None: unsigned, or a poll result):
    # the same task and timestamp again is a replay, applied once (docs/task-record.md).
    signed_at: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.code == SUCCESS_CODE


def _storable(value: Any) -> bool:
    """False for text that cannot be stored: JSON may escape lone surrogates ("\\ud800")."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


def parse_json_object(body: bytes | str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_shape")
    try:
        storable = _storable(document)
    except RecursionError:
        raise BadRequest("the body is nested too deeply", code="invalid_json") from None
    if not storable:
        raise BadRequest("the body contains text that is not valid Unicode", code="invalid_json")
    return document


def parse_callback(body: bytes | str, policy: SourcePolicy, secrets: Iterable[str | None] = ()) -> Callback:
    """Validate a callback body (docs/api.md, `POST /callbacks`); unknown extra fields are ignored.

    `msg` is kept with `secrets` and every `token=` value masked (it is stored, shown and
    published, and a provider may quote our callback URL in it).
    """
    document = parse_json_object(body)
    code = document.get("code")
    if not isinstance(code, int) or isinstance(code, bool) or code not in CODE_RANGE:
        raise BadRequest("code must be an integer (32-bit)", code="invalid_code")
    msg = document.get("msg")
    if msg is None:
        msg = ""
    if not isinstance(msg, str):
        raise BadRequest("msg must be a string", code="invalid_msg")
    data = document.get("data")
    if not isinstance(data, dict):
        raise BadRequest("data must be an object", code="invalid_shape")
    task_id = check_task_id(data.get("task_id"))
    video_url = data.get("video_url")
    if code == SUCCESS_CODE:
        if not isinstance(video_url, str) or not video_url:
            raise BadRequest("a success callback needs data.video_url", code="missing_video_url")
        check_url(video_url, policy)
    elif video_url in (None, ""):
        video_url = None
    elif not isinstance(video_url, str):
        raise BadRequest("data.video_url must be a string", code="invalid_video_url")
    else:
        video_url = None  # a failure callback's URL is never fetched, so it is not kept
    return Callback(code=code, msg=scrub(msg, secrets)[:MAX_MSG_CHARS], task_id=task_id, video_url=video_url)


@dataclass(frozen=True)
class TransferRequest:
    """The body of a transfer message on SQS: which task to copy (the record has the rest)."""

    task_id: str

    def to_json(self) -> str:
        return json.dumps({"task_id": self.task_id})

    @classmethod
    def from_json(cls, body: str) -> TransferRequest:
        document = parse_json_object(body)
        return cls(task_id=check_task_id(document.get("task_id")))


@dataclass(frozen=True)
class StoredVideo:
    """A verified video in S3: what the copier made and what the task record keeps of it."""

    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int
    duration_seconds: float | None
    width: int | None
    height: int | None
    rotation: int | None = None  # clockwise degrees a player turns the video: 0, 90, 180, 270
    warnings: tuple[str, ...] = ()  # what the MP4 check tolerated, in words
