"""Who sent this callback: the provider's HMAC signature and the URL token.

Both compares are constant-time. The signature covers only `task_id + "." + timestamp`
(docs/provider.md), so it proves the sender knows a key, not that the body is genuine; the URL
token and the provider confirmation cover the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from videohook.errors import Unauthorized

TIMESTAMP_HEADER = "x-webhook-timestamp"
SIGNATURE_HEADER = "x-webhook-signature"


def sign(key: str, task_id: str, timestamp: str) -> str:
    """The provider's signature; used by tests, the demo and anyone replaying a callback."""
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_signature(
    headers: Mapping[str, str],
    task_id: str,
    keys: Sequence[str],
    tolerance_seconds: int,
    now: float | None = None,
) -> str:
    """The signed timestamp; Unauthorized unless it is fresh and signed by one of the keys (rotation).

    The caller remembers the timestamp with the task: the same one again is a replay.
    """
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signature = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise Unauthorized("the webhook signature headers are missing", code="missing_signature")
    timestamp = timestamp.strip()
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise Unauthorized("the webhook timestamp is not a Unix time in seconds", code="bad_timestamp")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance_seconds:
        raise Unauthorized("the webhook timestamp is outside the allowed window", code="stale_timestamp")
    presented = signature.strip().encode()
    # Check every key without stopping early, so timing does not tell which key matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(sign(key, task_id, timestamp).encode(), presented)
    if not matched:
        raise Unauthorized("the webhook signature does not match", code="bad_signature")
    return timestamp


def verify_token(presented: str | None, expected: str) -> None:
    """Raise Unauthorized unless the `token` query parameter equals the configured token."""
    if presented is None:
        raise Unauthorized("the callback token is missing", code="missing_token")
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("the callback token does not match", code="bad_token")
