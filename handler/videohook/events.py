"""Task events: what a committed change of a task record announces on EventBridge.

The events function reads the table's stream (new and old images, docs/events.md), so an
event is derived from a change that was written, never from a function's memory: a change
is published at least once even if the function that wrote it died right after, and a
change that was not written is never published.

An event is built only for a change *into* a state the owner acts on - the old image's
status differs from the new one's and the new one is STORED, GENERATION_FAILED or
TRANSFER_FAILED. A duplicate callback rewrites the record without changing its status, so
it announces nothing. `event_id` is derived from the change itself (task, status, the
record's revision and update time), so every delivery of one change - a retried batch, a
replayed shard - carries the same id, and consumers dedupe on it.

Nothing secret goes out: the source is named by its host only (the provider's URL is
signed), and any URL in the provider's message or the error text is cut to its host.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from videohook.errors import AwsFault, ConfigError
from videohook.lifecycle import TaskStatus
from videohook.store import decode_image

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

SOURCE = "videohook"
DETAIL_TYPES = {
    TaskStatus.STORED: "Video Stored",
    TaskStatus.GENERATION_FAILED: "Video Generation Failed",
    TaskStatus.TRANSFER_FAILED: "Video Transfer Failed",
}
DEFAULT_BUS = "default"
# An event bus name, or its ARN (EventBridge accepts both for EventBusName).
_BUS = re.compile(
    r"[A-Za-z0-9._/-]{1,256}|arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/[A-Za-z0-9._/-]{1,256}"
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
# A query string without a scheme before it ("cdn.example.com/v.mp4?X-Amz-Signature=..."), also
# URL-encoded ("%3FSignature%3D..."): from the "?" on, it goes.
_QUERY = re.compile(r"(?<=[^\s?])(?:\?|%3[Ff])(?=[^\s\"'<>()\[\]]*?(?:=|%3[Dd]))[^\s\"'<>()\[\]]*")
_ID_NAMESPACE = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
MAX_TEXT_CHARS = 1000


class MalformedChange(ValueError):
    """A stream record whose new image cannot make the event its status calls for.

    Raised, not skipped: the batch reports the record failed, it is retried, and in the end
    it lands in the on-failure queue with an alarm - never silently dropped.
    """


@dataclass(frozen=True)
class TaskEvent:
    """One event, ready for PutEvents."""

    detail_type: str
    detail: dict[str, Any]
    occurred_at: str

    @property
    def event_id(self) -> str:
        return str(self.detail["event_id"])

    def entry(self, bus_name: str) -> PutEventsRequestEntryTypeDef:
        entry: PutEventsRequestEntryTypeDef = {
            "Source": SOURCE,
            "DetailType": self.detail_type,
            "Detail": json.dumps(self.detail, separators=(",", ":"), sort_keys=True),
            "EventBusName": bus_name,
        }
        # Unreadable: EventBridge stamps its own time; occurred_at stays in the detail.
        with contextlib.suppress(ValueError):
            entry["Time"] = datetime.fromisoformat(self.occurred_at.replace("Z", "+00:00"))
        return entry


def bus_name(env: Mapping[str, str]) -> str:
    """EVENT_BUS_NAME, checked (one line naming the variable when it is not a bus name or ARN)."""
    raw = env.get("EVENT_BUS_NAME", "").strip() or DEFAULT_BUS
    if not _BUS.fullmatch(raw):
        raise ConfigError(f"EVENT_BUS_NAME must be an event bus name or ARN, got {raw[:60]!r}")
    return raw


def without_urls(text: str | None) -> str | None:
    """Text for an event: every URL cut to its scheme and host, and any other query string cut
    off (a signed URL is a secret, with or without its scheme)."""
    if text is None:
        return None

    def host_only(match: re.Match[str]) -> str:
        parts = urlsplit(match.group(0))
        return f"{parts.scheme}://{parts.hostname or ''}/..."

    return _QUERY.sub("?...", _URL.sub(host_only, str(text)))[:MAX_TEXT_CHARS]


def event_id(task_id: str, status: str, revision: Any, updated_at: Any) -> str:
    """The same for every delivery of one change: a name-based UUID of what changed."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{task_id}\x00{status}\x00{revision}\x00{updated_at}"))


def _required(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedChange(f"a {record.get('status')} record without a valid {name}")
    return value


def _optional(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedChange(f"a {record.get('status')} record with an invalid {name}")
    return value


def _source_host(video_url: Any) -> str | None:
    if not isinstance(video_url, str) or not video_url:
        return None
    return urlsplit(video_url).hostname or None


def build_event(new: Mapping[str, Any]) -> TaskEvent:
    """The event that announces `new` (a record that just moved into an announced status)."""
    status = TaskStatus(new["status"])
    task_id = _required(new, "task_id", str)
    occurred_at = _required(new, "updated_at", str)
    detail: dict[str, Any] = {
        "event_id": event_id(task_id, status.value, new.get("revision"), occurred_at),
        "task_id": task_id,
        "status": status.value,
        "audio_id": _optional(new, "audio_id", str),
        "occurred_at": occurred_at,
    }
    if status is TaskStatus.STORED:
        detail.update(
            s3_bucket=_required(new, "s3_bucket", str),
            s3_key=_required(new, "s3_key", str),
            s3_version_id=_optional(new, "s3_version_id", str),
            sha256=_required(new, "sha256", str),
            size=_required(new, "size", int),
            duration_seconds=_optional(new, "duration_seconds", (int, float)),
            width=_optional(new, "width", int),
            height=_optional(new, "height", int),
            rotation=_optional(new, "rotation", int),
            source_host=_source_host(new.get("video_url")),
            stored_at=_required(new, "stored_at", str),
        )
    elif status is TaskStatus.GENERATION_FAILED:
        detail.update(
            provider_code=_optional(new, "provider_code", int),
            provider_msg=without_urls(_optional(new, "provider_msg", str)),
        )
    else:
        detail.update(
            error=without_urls(_optional(new, "error", str)),
            attempts=_optional(new, "attempts", int) or 0,
        )
    return TaskEvent(detail_type=DETAIL_TYPES[status], detail=detail, occurred_at=occurred_at)


def event_of_change(change: Mapping[str, Any]) -> TaskEvent | None:
    """The event a stream record announces, or None when it announces nothing.

    `change` is a DynamoDB Streams record (`eventName`, `dynamodb.OldImage/NewImage`), as
    GetRecords returns it and Lambda delivers it.
    """
    if change.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    images = change.get("dynamodb") or {}
    new = decode_image(images.get("NewImage"))
    if new is None:
        raise MalformedChange(
            "a stream record without its new image (the stream must show NEW_AND_OLD_IMAGES)"
        )
    old = decode_image(images.get("OldImage")) or {}
    status = new.get("status")
    if status == old.get("status"):
        return None  # a rewrite (duplicate callback, progress): nothing moved
    try:
        announced = TaskStatus(str(status)) in DETAIL_TYPES
    except ValueError:
        raise MalformedChange(f"a record with an unknown status {str(status)[:40]!r}") from None
    return build_event(new) if announced else None


class EventPublisher:
    """PutEvents to one bus; raises AwsFault unless EventBridge took every entry."""

    def __init__(self, client: EventBridgeClient, bus: str) -> None:
        self.client = client
        self.bus = bus

    def publish(self, events: list[TaskEvent]) -> None:
        for start in range(0, len(events), 10):  # PutEvents takes at most 10 entries
            chunk = events[start : start + 10]
            try:
                answer = self.client.put_events(Entries=[event.entry(self.bus) for event in chunk])
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                raise AwsFault(f"EventBridge PutEvents failed ({code})") from exc
            except BotoCoreError as exc:
                raise AwsFault(f"EventBridge PutEvents failed ({type(exc).__name__})") from exc
            if answer.get("FailedEntryCount"):
                codes = sorted(
                    {e.get("ErrorCode", "?") for e in answer.get("Entries", []) if e.get("ErrorCode")}
                )
                raise AwsFault(
                    f"EventBridge refused {answer['FailedEntryCount']} entries ({', '.join(codes)})"
                )
