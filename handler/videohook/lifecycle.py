"""The task rules: statuses, the moves between them, and what each event changes.

Pure functions over plain values, free of boto3 and of DynamoDB's expression syntax: each
rule returns a `Change` (fields to set, counters to add, fields to remove) and the store
turns it into one conditional write. The record, its statuses and moves are described in
docs/task-record.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from videohook.models import Callback, StoredVideo


class TaskStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    RECEIVED = "RECEIVED"
    TRANSFERRING = "TRANSFERRING"
    STORED = "STORED"
    GENERATION_FAILED = "GENERATION_FAILED"
    TRANSFER_FAILED = "TRANSFER_FAILED"


# Every move a task may make; `None` is "no record yet". Staying in a status is not a move.
MOVES: Mapping[TaskStatus | None, frozenset[TaskStatus]] = {
    None: frozenset({TaskStatus.SUBMITTED, TaskStatus.RECEIVED, TaskStatus.GENERATION_FAILED}),
    TaskStatus.SUBMITTED: frozenset({TaskStatus.RECEIVED, TaskStatus.GENERATION_FAILED}),
    TaskStatus.RECEIVED: frozenset({TaskStatus.TRANSFERRING}),
    # Back to RECEIVED is a retry; TRANSFER_FAILED comes after the last attempt.
    TaskStatus.TRANSFERRING: frozenset({TaskStatus.RECEIVED, TaskStatus.STORED, TaskStatus.TRANSFER_FAILED}),
    # A new callback or an operator's redrive queues it again.
    TaskStatus.TRANSFER_FAILED: frozenset({TaskStatus.RECEIVED}),
    TaskStatus.GENERATION_FAILED: frozenset(),
    TaskStatus.STORED: frozenset(),
}
# Statuses no worker or schedule moves on its own (TRANSFER_FAILED waits for a person or a callback).
FINAL_STATUSES = frozenset({TaskStatus.STORED, TaskStatus.GENERATION_FAILED, TaskStatus.TRANSFER_FAILED})


def may_move(source: TaskStatus | None, target: TaskStatus) -> bool:
    return source == target or target in MOVES[source]


# Attributes that steer the machinery and are not part of the public record.
INTERNAL_FIELDS = frozenset(
    {"revision", "lease_owner", "lease_expires", "transfer_queued", "poll_partition", "poll_due"}
)
# The value every task waiting for the provider carries in `poll_partition`: the key of the
# sparse index the reconcile job reads (only waiting tasks have it, so it never scans).
POLL_PARTITION = "due"
POLL_FIELDS = frozenset({"poll_partition", "poll_due"})
LEASE_FIELDS = frozenset({"lease_owner", "lease_expires"})


def iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_record(item: Mapping[str, Any]) -> dict[str, Any]:
    """The task record as users see it (docs/task-record.md), without the machinery."""
    return {k: v for k, v in sorted(item.items()) if k not in INTERNAL_FIELDS}


@dataclass
class Change:
    """What one write does to a record: fields to set, counters to add, fields to remove."""

    sets: dict[str, Any] = field(default_factory=dict)
    adds: dict[str, int] = field(default_factory=dict)
    removes: set[str] = field(default_factory=set)

    @property
    def status(self) -> TaskStatus | None:
        """The status this change moves the task to, if it moves it."""
        value = self.sets.get("status")
        return TaskStatus(value) if value is not None else None


@dataclass(frozen=True)
class CallbackPlan:
    """What one callback changes, whether a transfer must be queued, and a note when suspect."""

    change: Change
    queue_transfer: bool
    suspicious: str | None = None


def plan_callback(
    item: Mapping[str, Any] | None,
    callback: Callback,
    now: float,
    *,
    poll_after: int,
    counted: bool = True,
    audio_id: str | None = None,
) -> CallbackPlan:
    """Decide what one callback changes, given the record as read (None: unknown task).

    A poll of the provider that finds the task finished is applied through the same rules,
    as a callback that is not `counted`. A contradicting callback is only noted (logged,
    never acted on).
    """
    stamp = iso_now(now)
    change = Change(sets={"updated_at": stamp}, adds={"revision": 1})
    if counted:
        change.adds["callbacks"] = 1
    elif item is None:
        change.sets["callbacks"] = 0
    if audio_id and not (item or {}).get("audio_id"):
        change.sets["audio_id"] = audio_id
    provider = {"provider_code": callback.code, "provider_msg": callback.msg}
    status = TaskStatus(item["status"]) if item is not None else None
    if item is None:
        change.sets["created_at"] = stamp

    if not callback.succeeded:
        if status in (None, TaskStatus.SUBMITTED, TaskStatus.GENERATION_FAILED):
            change.sets.update(provider, status=TaskStatus.GENERATION_FAILED.value)
            change.removes |= POLL_FIELDS
            return CallbackPlan(change, queue_transfer=False)
        # The provider's code and message are recorded; nothing else changes.
        change.sets.update(provider)
        return CallbackPlan(
            change, False, f"failure callback (code {callback.code}) for a task already {status}"
        )

    if item is not None and status in (TaskStatus.RECEIVED, TaskStatus.TRANSFERRING, TaskStatus.STORED):
        suspicious = None
        if item.get("video_url") != callback.video_url:
            suspicious = f"success callback names a different video_url for a task already {status}"
        queue = status is TaskStatus.RECEIVED and not item.get("transfer_queued")
        return CallbackPlan(change, queue, suspicious)

    if status is TaskStatus.GENERATION_FAILED:
        # No move leads on from GENERATION_FAILED; one callback stage exists, so a success
        # after a failure is suspect and only counted.
        return CallbackPlan(change, False, "success callback for a task recorded as GENERATION_FAILED")

    # New, SUBMITTED, or TRANSFER_FAILED (a new callback re-queues it): (re)start with this URL.
    change.sets.update(
        provider,
        status=TaskStatus.RECEIVED.value,
        video_url=callback.video_url,
        # Reconcile looks at the task if its transfer is still not queued by then.
        poll_partition=POLL_PARTITION,
        poll_due=int(now) + poll_after,
    )
    change.removes |= {"transfer_queued", "error"}
    return CallbackPlan(change, queue_transfer=True)


# --- the other writes, each with the statuses it may start from ---------------------------


def plan_submitted(audio_id: str, now: float, *, poll_after: int) -> Change:
    """A task submitted through videohook: SUBMITTED, polled if its callback is late."""
    stamp = iso_now(now)
    return Change(
        sets={
            "status": TaskStatus.SUBMITTED.value,
            "audio_id": audio_id,
            "created_at": stamp,
            "updated_at": stamp,
            "callbacks": 0,
            "attempts": 0,
            "revision": 1,
            "poll_partition": POLL_PARTITION,
            "poll_due": int(now) + poll_after,
        }
    )


# A transfer message exists for the task (a worker may already hold it): duplicates queue no other.
QUEUED_FROM = (TaskStatus.RECEIVED, TaskStatus.TRANSFERRING)


def plan_queued() -> Change:
    return Change(sets={"transfer_queued": True}, removes=set(POLL_FIELDS))


REDRIVE_FROM = (TaskStatus.TRANSFER_FAILED,)


def plan_redrive(now: float) -> Change:
    """TRANSFER_FAILED -> RECEIVED: an operator queues the task again."""
    return Change(
        sets={"status": TaskStatus.RECEIVED.value, "updated_at": iso_now(now)},
        adds={"revision": 1},
        removes={"transfer_queued"},
    )


def plan_poll(now: float, delay_seconds: int) -> Change:
    """Look at a waiting task again in `delay_seconds`."""
    return Change(sets={"poll_due": int(now) + delay_seconds, "polled_at": iso_now(now)})


def plan_stop_polling() -> Change:
    return Change(removes=set(POLL_FIELDS))


# A worker takes a RECEIVED task, or a TRANSFERRING one whose lease has expired.
LEASE_FROM = (TaskStatus.RECEIVED, TaskStatus.TRANSFERRING)
# Every write under a lease starts from TRANSFERRING, held by the same owner.
LEASED_FROM = (TaskStatus.TRANSFERRING,)


def plan_lease(owner: str, now: float, lease_seconds: int) -> Change:
    return Change(
        sets={
            "status": TaskStatus.TRANSFERRING.value,
            "lease_owner": owner,
            "lease_expires": int(now) + lease_seconds,
            "bytes_transferred": 0,
            "updated_at": iso_now(now),
        },
        adds={"attempts": 1, "revision": 1},
        removes={"content_length"},
    )


def plan_progress(done: int, total: int | None, now: float, lease_seconds: int) -> Change:
    """Progress of the copy, renewing the lease in the same write."""
    sets: dict[str, Any] = {
        "bytes_transferred": done,
        "lease_expires": int(now) + lease_seconds,
        "updated_at": iso_now(now),
    }
    if total is not None:
        sets["content_length"] = total
    return Change(sets=sets)


def plan_stored(video: StoredVideo, now: float) -> Change:
    """The object is in S3 and verified: STORED, with what it is (docs/stored-video.md)."""
    stamp = iso_now(now)
    sets: dict[str, Any] = {
        "status": TaskStatus.STORED.value,
        "s3_bucket": video.bucket,
        "s3_key": video.key,
        "sha256": video.sha256,
        "size": video.size,
        "bytes_transferred": video.size,
        "stored_at": stamp,
        "updated_at": stamp,
        # Always present once STORED; null when the file has no video track or gives no duration.
        "duration_seconds": round(video.duration_seconds, 3) if video.duration_seconds is not None else None,
        "width": video.width,
        "height": video.height,
        "rotation": video.rotation if video.rotation is not None else 0,
    }
    optional = {
        "s3_version_id": video.version_id,
        "warnings": list(video.warnings) or None,  # absent when the check tolerated nothing
    }
    sets.update({k: v for k, v in optional.items() if v is not None})
    return Change(sets=sets, adds={"revision": 1}, removes=set(LEASE_FIELDS | POLL_FIELDS | {"error"}))


def plan_retry(error: str, now: float) -> Change:
    """Give the task back (RECEIVED) so the redelivered message can try again."""
    return Change(
        sets={"status": TaskStatus.RECEIVED.value, "error": error, "updated_at": iso_now(now)},
        adds={"revision": 1},
        removes=set(LEASE_FIELDS),
    )


def plan_transfer_failed(error: str, now: float) -> Change:
    return Change(
        sets={"status": TaskStatus.TRANSFER_FAILED.value, "error": error, "updated_at": iso_now(now)},
        adds={"revision": 1},
        removes=set(LEASE_FIELDS | {"transfer_queued"}),
    )
