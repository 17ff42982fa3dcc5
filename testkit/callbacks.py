"""The provider's callbacks as the provider signs and sends them (docs/api.md, POST /callbacks).

`callback_body` is the JSON the provider posts; `signed_headers` the two headers of its
HMAC signature (made with the handler's own `sign`); `signed_event` turns a sample API
Gateway event from events/ into a freshly signed one, for invoking the ingest function
directly; `post_callback` sends one over HTTP, as the provider does.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import requests

from videohook.signature import sign

EVENTS = Path(__file__).resolve().parent.parent / "events"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"
SUCCESS_MSG = "All generated successfully."


def load_event(name: str) -> dict[str, Any]:
    """A sample event from events/ (as `sam local invoke` reads it)."""
    return dict(json.loads((EVENTS / name).read_text()))


def callback_body(
    task_id: str, video_url: str | None = None, *, code: int = 200, msg: str | None = None
) -> dict[str, Any]:
    """The provider's callback body: a success with `video_url`, or a failure with `code`."""
    if msg is None:
        msg = SUCCESS_MSG if code == 200 else "generation failed"
    return {"code": code, "msg": msg, "data": {"task_id": task_id, "video_url": video_url}}


def signed_headers(key: str, task_id: str, timestamp: int | str | None = None) -> dict[str, str]:
    """The signature headers for `task_id` at `timestamp` (default: now)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: sign(key, task_id, stamp)}


def signed_event(
    event: dict[str, Any],
    *,
    key: str,
    token: str | None,
    body: dict[str, Any] | None = None,
    timestamp: int | str | None = None,
) -> dict[str, Any]:
    """A copy of an API Gateway callback event with a fresh signature, `token` and optionally `body`."""
    event = copy.deepcopy(event)
    if body is not None:
        event["body"] = json.dumps(body)
    task_id = json.loads(event["body"])["data"]["task_id"]
    for name, value in signed_headers(key, task_id, timestamp).items():
        event["headers"][name] = value
        if event.get("multiValueHeaders") is not None:
            event["multiValueHeaders"][name] = [value]
    event["queryStringParameters"] = {"token": token} if token is not None else None
    event["multiValueQueryStringParameters"] = {"token": [token]} if token is not None else None
    return event


def post_callback(
    url: str,
    body: dict[str, Any],
    *,
    key: str,
    token: str | None,
    session: requests.Session | None = None,
    timeout: float = 15,
) -> requests.Response:
    """POST a signed callback to `url` (the stack's /callbacks) as the provider does."""
    headers = {"Content-Type": "application/json", **signed_headers(key, body["data"]["task_id"])}
    send = session.post if session is not None else requests.post
    return send(
        url,
        params={"token": token} if token is not None else None,
        data=json.dumps(body),
        headers=headers,
        timeout=timeout,
    )
