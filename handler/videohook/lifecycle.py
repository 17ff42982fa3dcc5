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


# The archive list's index key (listing.py): a constant every write that sets `updated_at`
# also sets, so the `by-updated` index holds every task, ordered by its last change.
LIST_PARTITION_ATTRIBUTE = "list_partition"
LIST_PARTITION = "tasks"
# The value every task that is not final carries in `poll_partition`, with its due time in
# `poll_due`: the keys of the sparse index the reconcile job reads (only tasks with a due time
# are in it, so it never scans). docs/task-record.md "Nothing is stuck".
POLL_PARTITION = "due"
POLL_FIELDS = frozenset({"poll_partition", "poll_due"})
LEASE_FIELDS = frozenset({"lease_owner", "lease_expires"})
# Attributes that steer the machinery and are not part of the public record.
INTERNAL_FIELDS = (
    POLL_FIELDS
    | LEASE_FIELDS
    | {
        LIST_PARTITION_ATTRIBUTE,
        "revision",
        "transfer_queued",
        "requeues",
        "seen_timestamps",
    }
)

# --- due times: when the reconcile job looks at a task that is not final -------------------

# The provider keeps a video 14 days: a task still SUBMITTED by then will never have one.
SUBMITTED_LIFETIME_SECONDS = 14 * 24 * 3600
# After a lease's expiry, how long before its task counts as abandoned (a renewal in flight).
LEASE_GRACE_SECONDS = 60
# A failed attempt's message comes back after the transfer queue's visibility timeout
# (template.yaml TransferQueue.VisibilityTimeout); reconcile leaves that retry to SQS.
RETRY_REDELIVERY_SECONDS = 5400
# A queued message waits RECONCILE_AFTER_SECONDS (at least a minute) before it counts as lost;
# each time reconcile queues the task again that wait doubles, up to six hours, so that a long
# queue backlog is not answered with ever more messages.
RECOVERY_MIN_SECONDS = 60
RECOVERY_MAX_SECONDS = 6 * 3600


def due_at(when: float) -> dict[str, Any]:
    """The fields that put a task in the reconcile job's index, due at `when`."""
    return {"poll_partition": POLL_PARTITION, "poll_due": int(when)}


def queued_wait(after: int, requeues: int) -> int:
    """How long a queued transfer message may wait before reconcile queues another."""
    base = max(after, RECOVERY_MIN_SECONDS)
    return int(min(base * 2 ** min(requeues, 32), RECOVERY_MAX_SECONDS))


def created_epoch(item: Mapping[str, Any]) -> int:
    """`created_at` (or, for a record without one, `updated_at`) in whole seconds since the epoch."""
    stamp = str(item.get("created_at") or item["updated_at"])
    created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(created.timestamp())


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
    """What one callback changes, whether a transfer must be queued, and a note when suspect.

    `replayed`: a signed callback already applied (same timestamp): nothing is written.
    """

    change: Change
    queue_transfer: bool
    suspicious: str | None = None
    replayed: bool = False


def remembered_timestamps(
    item: Mapping[str, Any] | None, signed_at: str, now: float, window: int
) -> list[str] | None:
    """The signed timestamps to keep with the task after this one, or None for a replay.

    Only the timestamps a replay could still present are kept: one older than the signature
    window is refused before it gets here, so the list stays short whatever comes.
    """
    seen = [str(s) for s in (item or {}).get("seen_timestamps") or []]
    if signed_at in seen:
        return None
    return sorted({s for s in seen if int(s) >= now - window} | {signed_at}, key=int)


def plan_callback(
    item: Mapping[str, Any] | None,
    callback: Callback,
    now: float,
    *,
    poll_after: int,
    counted: bool = True,
    audio_id: str | None = None,
    signature_window: int = 300,
) -> CallbackPlan:
    """Decide what one callback changes, given the record as read (None: unknown task).

    A poll of the provider that finds the task finished is applied through the same rules,
    as a callback that is not `counted`. A contradicting callback is only noted (logged,
    never acted on). A signed callback is applied once: its timestamp is remembered in the
    same write, and the same timestamp again changes nothing (docs/task-record.md).
    """
    stamp = iso_now(now)
    change = Change(sets={"updated_at": stamp}, adds={"revision": 1})
    if callback.signed_at is not None:
        remembered = remembered_timestamps(item, callback.signed_at, now, signature_window)
        if remembered is None:
            # Nothing is written. Only a transfer that the first delivery recorded but could
            # not queue (it was answered 500) is queued, as for any duplicate.
            unqueued = (
                item is not None and item["status"] == TaskStatus.RECEIVED and not item.get("transfer_queued")
            )
            return CallbackPlan(Change(), queue_transfer=unqueued, replayed=True)
        change.sets["seen_timestamps"] = remembered
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

    # New, SUBMITTED, or TRANSFER_FAILED (a new callback re-queues it). The first video_url
    # wins: a task that has one keeps it (only the provider's confirmation replaces it).
    first_url = item.get("video_url") if item is not None else None
    suspicious = None
    if first_url and first_url != callback.video_url:
        suspicious = (
            f"success callback names a different video_url for a task already {status}; kept the first"
        )
    change.sets.update(
        provider,
        status=TaskStatus.RECEIVED.value,
        video_url=first_url or callback.video_url,
        # Reconcile looks at the task if its transfer is still not queued by then.
        **due_at(now + poll_after),
    )
    change.removes |= {"transfer_queued", "error"}
    return CallbackPlan(change, queue_transfer=True, suspicious=suspicious)


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


def plan_queued(now: float, *, poll_after: int, requeues: int = 0) -> Change:
    """A transfer message was sent. Reconcile looks again once it should have been picked up.

    `requeues`: how many times reconcile has queued the task again (0 for a callback, a poll
    or a redrive); each one doubles the wait before the next (see `queued_wait`).
    """
    sets: dict[str, Any] = {"transfer_queued": True, **due_at(now + queued_wait(poll_after, requeues))}
    if requeues:
        sets["requeues"] = requeues
    return Change(sets=sets)


REDRIVE_FROM = (TaskStatus.TRANSFER_FAILED,)


def plan_redrive(now: float, *, poll_after: int) -> Change:
    """TRANSFER_FAILED -> RECEIVED: an operator queues the task again."""
    return Change(
        sets={"status": TaskStatus.RECEIVED.value, "updated_at": iso_now(now), **due_at(now + poll_after)},
        adds={"revision": 1},
        removes={"transfer_queued"},
    )


def plan_due(when: float) -> Change:
    """Look at a task again at `when` (a poll's next turn, a back-off, a live lease's end)."""
    return Change(sets=due_at(when))


def plan_expired(now: float) -> Change:
    """SUBMITTED for 14 days: GENERATION_FAILED, the reason in words."""
    return Change(
        sets={
            "status": TaskStatus.GENERATION_FAILED.value,
            "provider_msg": (
                "no callback and no result from the provider within 14 days of the submit "
                "(the provider keeps videos 14 days)"
            ),
            "updated_at": iso_now(now),
        },
        adds={"revision": 1},
        removes=set(POLL_FIELDS),
    )


def plan_confirmed_url(url: str, now: float) -> Change:
    """The provider's record-info names another video than the callback: it is the one copied."""
    return Change(sets={"video_url": url, "updated_at": iso_now(now)})


def plan_stop_polling() -> Change:
    return Change(removes=set(POLL_FIELDS))


# A worker takes a RECEIVED task, or a TRANSFERRING one whose lease has expired.
LEASE_FROM = (TaskStatus.RECEIVED, TaskStatus.TRANSFERRING)
# Every write under a lease starts from TRANSFERRING, held by the same owner.
LEASED_FROM = (TaskStatus.TRANSFERRING,)


def plan_lease(owner: str, now: float, lease_seconds: int) -> Change:
    """A worker takes the task. Reconcile looks once the lease could have expired unrenewed
    (renewals move only `lease_expires`; a visit to a live lease just looks again later)."""
    return Change(
        sets={
            "status": TaskStatus.TRANSFERRING.value,
            "lease_owner": owner,
            "lease_expires": int(now) + lease_seconds,
            "bytes_transferred": 0,
            "updated_at": iso_now(now),
            **due_at(int(now) + lease_seconds + LEASE_GRACE_SECONDS),
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


def plan_retry(error: str, now: float, *, poll_after: int) -> Change:
    """Give the task back (RECEIVED) so the redelivered message can try again.

    SQS delivers that message again after its visibility timeout; reconcile looks only if it
    has not come back by then (the message lost meanwhile).
    """
    return Change(
        sets={
            "status": TaskStatus.RECEIVED.value,
            "error": error,
            "updated_at": iso_now(now),
            **due_at(now + RETRY_REDELIVERY_SECONDS + poll_after),
        },
        adds={"revision": 1},
        removes=set(LEASE_FIELDS),
    )


def plan_transfer_failed(error: str, now: float) -> Change:
    return Change(
        sets={"status": TaskStatus.TRANSFER_FAILED.value, "error": error, "updated_at": iso_now(now)},
        adds={"revision": 1},
        removes=set(LEASE_FIELDS | POLL_FIELDS | {"transfer_queued"}),
    )


# --- what the reconcile job does with a due task -------------------------------------------


class Check(StrEnum):
    """What a visit to a due task calls for."""

    POLL = "poll"  # ask the provider's record-info (an API key is configured)
    QUEUE = "queue"  # queue its transfer again: never queued, message lost, or lease expired
    END = "end"  # SUBMITTED for 14 days: GENERATION_FAILED
    LATER = "later"  # nothing to do yet: look again at `due`
    NOT_DUE = "not_due"  # its due time moved on since the index was read: leave it
    DROP = "drop"  # final or gone: off the index


@dataclass(frozen=True)
class Verdict:
    check: Check
    reason: str = ""
    due: int | None = None  # for LATER


def plan_check(item: Mapping[str, Any] | None, now: float, *, can_poll: bool) -> Verdict:
    """Decide what the reconcile job does with a task it found due (docs/reconcile.md)."""
    if item is None:
        return Verdict(Check.DROP, "no such task")
    status = TaskStatus(item["status"])
    if status in FINAL_STATUSES:
        return Verdict(Check.DROP, f"the task is {status}")
    due = item.get("poll_due")
    if due is not None and int(due) > now:
        return Verdict(Check.NOT_DUE)
    if status is TaskStatus.SUBMITTED:
        expires = created_epoch(item) + SUBMITTED_LIFETIME_SECONDS
        if now >= expires:
            return Verdict(Check.END, "still SUBMITTED 14 days after it was created")
        if can_poll:
            return Verdict(Check.POLL)
        return Verdict(Check.LATER, "no provider API key to ask: waiting for the callback", expires)
    if status is TaskStatus.RECEIVED:
        if not item.get("transfer_queued"):
            if can_poll:
                return Verdict(Check.POLL)
            return Verdict(Check.QUEUE, "its transfer was never queued (the send failed)")
        return Verdict(
            Check.QUEUE,
            f"its queued transfer was not picked up in time (message lost?), requeued "
            f"{int(item.get('requeues', 0))} time(s) before",
        )
    lease_expires = item.get("lease_expires")
    if lease_expires is not None and now < int(lease_expires) + LEASE_GRACE_SECONDS:
        return Verdict(Check.LATER, "a worker holds a live lease", int(lease_expires) + LEASE_GRACE_SECONDS)
    expired = iso_now(float(lease_expires)) if lease_expires is not None else "unknown"
    return Verdict(Check.QUEUE, f"its worker's lease expired at {expired} with no renewal")
