"""`GET /tasks`: the archive, newest first, a page at a time, never a table scan.

Two global secondary indexes serve it, both sorted by `updated_at`:

* `by-updated` - partition `list_partition`, a constant every write that sets `updated_at`
  also sets (store.TaskStore), so it holds every task: "all tasks, newest first";
* `by-status` - partition `status`: "the tasks in one status, newest first".

Both project every attribute, so a page is one Query (two when a page crosses DynamoDB's
1 MB answer limit) and its cost is its size. A page reads one item more than it returns,
so that the last page says `next_cursor: null` instead of leading to an empty page.

The cursor is opaque to callers and tamper-evident: the position (the last task's
`task_id` and `updated_at`, and the status the listing is filtered by) as compact JSON,
then an HMAC of it, both base64url. A cursor whose digest does not match, that fails the
strict shape check, or that belongs to another filter answers 400 `invalid_cursor`; a
forged position can therefore never reach DynamoDB as an ExclusiveStartKey.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from videohook.errors import BadRequest
from videohook.lifecycle import LIST_PARTITION, LIST_PARTITION_ATTRIBUTE, TaskStatus, public_record
from videohook.models import TASK_ID_PATTERN
from videohook.store import ALL_INDEX, STATUS_INDEX, TaskStore

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_CURSOR_CHARS = 1024
DIGEST_BYTES = 16
# store.iso_now's form: 2026-01-31T12:00:00.000Z
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


@dataclass(frozen=True)
class ListRequest:
    status: TaskStatus | None
    limit: int
    after: Position | None


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last task returned (its index keys)."""

    task_id: str
    updated_at: str


@dataclass(frozen=True)
class Page:
    tasks: list[dict[str, Any]]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "next_cursor": self.next_cursor}


def cursor_key(secret: str | None) -> bytes:
    """The HMAC key of cursors, derived from a deployment secret (the callback token).

    Without one (local development) the key is a constant: the digest still catches any
    changed byte, and the strict shape check refuses what it could not.
    """
    return hashlib.sha256(b"videohook list cursor\x00" + (secret or "").encode()).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # the last character's spare bits changed: still a changed cursor
        raise ValueError("not the canonical encoding")
    return raw


def encode_cursor(key: bytes, status: TaskStatus | None, position: Position) -> str:
    payload = json.dumps(
        {"s": status.value if status else None, "i": position.task_id, "u": position.updated_at},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    digest = hmac.new(key, payload, hashlib.sha256).digest()[:DIGEST_BYTES]
    return f"{_b64(payload)}.{_b64(digest)}"


def decode_cursor(key: bytes, status: TaskStatus | None, cursor: str) -> Position:
    """The position a cursor names; BadRequest `invalid_cursor` for anything else."""
    invalid = BadRequest("cursor is not a next_cursor this listing gave", code="invalid_cursor")
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or cursor.count(".") != 1:
        raise invalid
    body, mac = cursor.split(".")
    try:
        payload, digest = _unb64(body), _unb64(mac)
    except (ValueError, binascii.Error):
        raise invalid from None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:DIGEST_BYTES]
    if not hmac.compare_digest(digest, expected):
        raise invalid
    try:
        document = json.loads(payload)
    except ValueError:
        raise invalid from None
    if not isinstance(document, dict) or set(document) != {"s", "i", "u"}:
        raise invalid
    task_id, stamp = document["i"], document["u"]
    if document["s"] != (status.value if status else None):
        raise invalid  # a cursor of another filter would start the page at a foreign position
    if not isinstance(task_id, str) or not TASK_ID_PATTERN.fullmatch(task_id):
        raise invalid
    if not isinstance(stamp, str) or not _STAMP.fullmatch(stamp):
        raise invalid
    return Position(task_id=task_id, updated_at=stamp)


def parse_list_request(query: Mapping[str, str] | None, key: bytes) -> ListRequest:
    """Validate `status`, `limit` and `cursor` (400 `invalid_status` / `invalid_limit` / `invalid_cursor`)."""
    query = query or {}
    status = None
    raw_status = query.get("status")
    if raw_status is not None:
        try:
            status = TaskStatus(raw_status)
        except ValueError:
            allowed = ", ".join(s.value for s in TaskStatus)
            raise BadRequest(f"status must be one of {allowed}", code="invalid_status") from None
    limit = DEFAULT_LIMIT
    raw_limit = query.get("limit")
    if raw_limit is not None:
        if not re.fullmatch(r"[0-9]{1,3}", raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", code="invalid_limit")
        limit = int(raw_limit)
    raw_cursor = query.get("cursor")
    after = decode_cursor(key, status, raw_cursor) if raw_cursor is not None else None
    return ListRequest(status=status, limit=limit, after=after)


def list_tasks(store: TaskStore, request: ListRequest, key: bytes) -> Page:
    """One page of the archive, newest first (Query on an index; never a Scan)."""
    if request.status is None:
        index, partition_name, partition = ALL_INDEX, LIST_PARTITION_ATTRIBUTE, LIST_PARTITION
    else:
        index, partition_name, partition = STATUS_INDEX, "status", request.status.value
    kwargs: dict[str, Any] = {
        "IndexName": index,
        "KeyConditionExpression": "#p = :p",
        "ExpressionAttributeNames": {"#p": partition_name},
        "ExpressionAttributeValues": {":p": {"S": partition}},
        "ScanIndexForward": False,
    }
    if request.after is not None:
        kwargs["ExclusiveStartKey"] = {
            partition_name: {"S": partition},
            "updated_at": {"S": request.after.updated_at},
            "task_id": {"S": request.after.task_id},
        }
    items: list[dict[str, Any]] = []
    wanted = request.limit + 1  # one more than shown: is there a next page at all?
    while len(items) < wanted:
        answer = store.query(Limit=wanted - len(items), **kwargs)
        items += answer["Items"]
        if "LastEvaluatedKey" not in answer:
            break
        kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
    shown = items[: request.limit]
    next_cursor = None
    if len(items) > request.limit:
        last = shown[-1]
        position = Position(task_id=last["task_id"], updated_at=last["updated_at"])
        next_cursor = encode_cursor(key, request.status, position)
    return Page(tasks=[public_record(item) for item in shown], next_cursor=next_cursor)
