"""The task table: every state change is a conditional DynamoDB write.

Callbacks arrive duplicated and interleaved, and transfer messages are delivered at least
once, so no decision here is taken on a value read earlier without checking, at write time,
that the item has not moved since. State-changing writes carry a `revision` condition
(optimistic concurrency, retried a few times); the transfer worker's ownership is a lease
(`lease_owner` + `lease_expires`) taken and renewed by conditional updates.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from videohook.errors import AwsFault, LeaseLost
from videohook.models import Callback, TaskStatus

# Attributes that steer the machinery and are not part of the public record.
INTERNAL_FIELDS = frozenset(
    {
        "revision",
        "lease_owner",
        "lease_expires",
        "transfer_queued",
        "poll_partition",
        "poll_due",
        "list_partition",
    }
)
# The archive list's index key (listing.py): a constant on every task, written with every
# `updated_at`, so the `by-updated` index holds all tasks ordered by their last change.
LIST_PARTITION_ATTRIBUTE = "list_partition"
LIST_PARTITION = "tasks"
# The sparse index reconcile reads: only tasks waiting for the provider carry its keys.
POLL_INDEX = "poll-due"
POLL_PARTITION = "due"
OPTIMISTIC_RETRIES = 8
# Upper bound of the random pause after the n-th lost race: 10 ms, 20 ms, 40 ms, ...
CONFLICT_BACKOFF_SECONDS = 0.01

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def iso_now(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; the record is served as JSON."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def public_record(item: dict[str, Any]) -> dict[str, Any]:
    """The task record as users see it: the fields of SPEC.md, without the machinery."""
    return {k: v for k, v in sorted(item.items()) if k not in INTERNAL_FIELDS}


@dataclass
class Update:
    """One UpdateItem, built up field by field so every write says exactly what it changes."""

    sets: dict[str, Any] = field(default_factory=dict)
    adds: dict[str, int] = field(default_factory=dict)
    removes: set[str] = field(default_factory=set)

    def expression(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        parts = []
        if self.sets:
            clauses = []
            for i, (name, value) in enumerate(self.sets.items()):
                names[f"#s{i}"] = name
                values[f":s{i}"] = value
                clauses.append(f"#s{i} = :s{i}")
            parts.append("SET " + ", ".join(clauses))
        if self.adds:
            clauses = []
            for i, (name, value) in enumerate(self.adds.items()):
                names[f"#a{i}"] = name
                values[f":a{i}"] = value
                clauses.append(f"#a{i} :a{i}")
            parts.append("ADD " + ", ".join(clauses))
        removes = sorted(self.removes - set(self.sets))
        if removes:
            for i, name in enumerate(removes):
                names[f"#r{i}"] = name
            parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes))))
        return " ".join(parts), names, values


@dataclass(frozen=True)
class CallbackOutcome:
    """What a callback did to its task, and whether a transfer must be queued for it."""

    record: dict[str, Any]
    queue_transfer: bool
    suspicious: str | None = None


@dataclass(frozen=True)
class StoredVideo:
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int
    duration_seconds: float | None
    width: int | None
    height: int | None


def plan_callback(
    item: dict[str, Any] | None,
    callback: Callback,
    now: float,
    *,
    poll_after: int,
    counted: bool = True,
    audio_id: str | None = None,
) -> tuple[Update, bool, str | None]:
    """Decide what one callback changes (pure, so the rules of SPEC.md are testable alone).

    A poll of the provider that finds the task finished is applied through the same rules,
    as a callback that is not `counted`. Returns the update, whether a transfer must be
    queued, and a note when the callback contradicts what is known (logged, never acted on).
    """
    stamp = iso_now(now)
    update = Update(sets={"updated_at": stamp}, adds={"revision": 1})
    if counted:
        update.adds["callbacks"] = 1
    elif item is None:
        update.sets["callbacks"] = 0
    if audio_id and not (item or {}).get("audio_id"):
        update.sets["audio_id"] = audio_id
    provider = {"provider_code": callback.code, "provider_msg": callback.msg}
    status = TaskStatus(item["status"]) if item else None
    if item is None:
        update.sets["created_at"] = stamp
    suspicious = None

    if not callback.succeeded:
        if status in (None, TaskStatus.SUBMITTED, TaskStatus.GENERATION_FAILED):
            update.sets.update(provider, status=TaskStatus.GENERATION_FAILED.value)
            update.removes |= {"poll_partition", "poll_due"}
            return update, False, None
        # SPEC: the provider's code and message are recorded; nothing else changes.
        update.sets.update(provider)
        return update, False, f"failure callback (code {callback.code}) for a task already {status}"

    if status in (TaskStatus.RECEIVED, TaskStatus.TRANSFERRING, TaskStatus.STORED):
        if item and item.get("video_url") != callback.video_url:
            suspicious = f"success callback names a different video_url for a task already {status}"
        queue = status is TaskStatus.RECEIVED and not item.get("transfer_queued")
        return update, queue, suspicious

    if status is TaskStatus.GENERATION_FAILED:
        # SPEC's status moves lead nowhere from GENERATION_FAILED; one callback stage exists,
        # so a success after a failure is suspect and only counted.
        return update, False, "success callback for a task recorded as GENERATION_FAILED"

    # New, SUBMITTED, or TRANSFER_FAILED (a new callback re-queues it): (re)start with this URL.
    update.sets.update(
        provider,
        status=TaskStatus.RECEIVED.value,
        video_url=callback.video_url,
        # Reconcile looks at the task if its transfer is still not queued by then.
        poll_partition=POLL_PARTITION,
        poll_due=int(now) + poll_after,
    )
    update.removes |= {"transfer_queued", "error"}
    return update, True, suspicious


class TaskStore:
    """DynamoDB access for task records; raises AwsFault when DynamoDB cannot be reached."""

    def __init__(
        self,
        table_name: str,
        client: Any,
        *,
        poll_after_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table_name = table_name
        self.client = client
        self.poll_after_seconds = poll_after_seconds
        self.clock = clock

    # --- low level -------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(TableName=self.table_name, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise
            raise AwsFault(f"DynamoDB {operation} failed ({exc.response['Error'].get('Code')})") from exc
        except BotoCoreError as exc:
            raise AwsFault(f"DynamoDB {operation} failed ({type(exc).__name__})") from exc

    @staticmethod
    def _key(task_id: str) -> dict[str, Any]:
        return {"task_id": {"S": task_id}}

    @staticmethod
    def _decode(image: dict[str, Any] | None) -> dict[str, Any] | None:
        if not image:
            return None
        return {k: _plain(_deserializer.deserialize(v)) for k, v in image.items()}

    def _update(
        self, task_id: str, update: Update, condition: str, values: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Apply an update under a condition; None when the condition did not hold."""
        if "updated_at" in update.sets:  # keeps the task in the archive list's index (listing.py)
            update = Update(
                {**update.sets, LIST_PARTITION_ATTRIBUTE: LIST_PARTITION}, update.adds, update.removes
            )
        expression, names, expr_values = update.expression()
        expr_values.update(values or {})
        if "#st" in condition:
            names["#st"] = "status"
        extra: dict[str, Any] = {}
        if expr_values:  # DynamoDB refuses an empty map, and a REMOVE-only update has no values
            extra["ExpressionAttributeValues"] = {k: _serializer.serialize(v) for k, v in expr_values.items()}
        try:
            answer = self._call(
                "update_item",
                Key=self._key(task_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW",
                **extra,
            )
        except ClientError:
            return None
        return self._decode(answer.get("Attributes"))

    def _get(self, task_id: str) -> dict[str, Any] | None:
        answer = self._call("get_item", Key=self._key(task_id), ConsistentRead=True)
        return self._decode(answer.get("Item"))

    def _revised(self, task_id: str, item: dict[str, Any] | None, update: Update) -> dict[str, Any] | None:
        """Write only if nobody changed the task since `item` was read."""
        if item is None:
            return self._update(task_id, update, "attribute_not_exists(task_id)")
        return self._update(task_id, update, "revision = :seen", {":seen": item.get("revision", 0)})

    # --- reads ---------------------------------------------------------------------------

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self._get(task_id)

    def query(self, **kwargs: Any) -> dict[str, Any]:
        """One Query page (an index of the table), items decoded; for listing.py."""
        answer = self._call("query", **kwargs)
        items = [self._decode(item) or {} for item in answer.get("Items", [])]
        return {**answer, "Items": items}

    # --- callbacks and submits -------------------------------------------------------------

    def record_callback(
        self, callback: Callback, *, counted: bool = True, audio_id: str | None = None
    ) -> CallbackOutcome:
        """Count the callback and move the task as SPEC.md says, atomically.

        `counted=False` applies a poll result: the same moves, without counting a callback.
        """
        for attempt in range(OPTIMISTIC_RETRIES):
            if attempt:
                # Duplicates arrive together: jitter so the racers do not collide again.
                time.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * 2**attempt))
            item = self._get(callback.task_id)
            update, queue, suspicious = plan_callback(
                item,
                callback,
                self.clock(),
                poll_after=self.poll_after_seconds,
                counted=counted,
                audio_id=audio_id,
            )
            record = self._revised(callback.task_id, item, update)
            if record is not None:
                return CallbackOutcome(record, queue, suspicious)
        raise AwsFault("the task changed too often while recording the callback")

    def mark_queued(self, task_id: str) -> None:
        """Remember that a transfer message exists, so duplicates do not queue another."""
        update = Update(sets={"transfer_queued": True}, removes={"poll_partition", "poll_due"})
        # A worker may already hold the task: the message it got is the one being recorded.
        self._update(
            task_id,
            update,
            "#st IN (:received, :transferring)",
            {":received": TaskStatus.RECEIVED.value, ":transferring": TaskStatus.TRANSFERRING.value},
        )

    def record_submitted(self, task_id: str, audio_id: str) -> tuple[dict[str, Any], bool]:
        """Create a SUBMITTED task; (record, False) when the task is already known."""
        now = self.clock()
        stamp = iso_now(now)
        update = Update(
            sets={
                "status": TaskStatus.SUBMITTED.value,
                "audio_id": audio_id,
                "created_at": stamp,
                "updated_at": stamp,
                "callbacks": 0,
                "attempts": 0,
                "revision": 1,
                "poll_partition": POLL_PARTITION,
                "poll_due": int(now) + self.poll_after_seconds,
            }
        )
        record = self._update(task_id, update, "attribute_not_exists(task_id)")
        if record is not None:
            return record, True
        existing = self._get(task_id)
        if existing is None:
            raise AwsFault("the task vanished while being submitted")
        return existing, False

    def forget_submitted(self, task_id: str) -> None:
        """Remove a SUBMITTED task the provider refused, so that it can be submitted again."""
        # A callback that arrived meanwhile makes the condition fail: the task is real after all.
        with contextlib.suppress(ClientError):
            self._call(
                "delete_item",
                Key=self._key(task_id),
                ConditionExpression="#st = :submitted AND callbacks = :zero",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":submitted": {"S": TaskStatus.SUBMITTED.value},
                    ":zero": {"N": "0"},
                },
            )

    def requeue_failed(self, task_id: str) -> bool:
        """TRANSFER_FAILED -> RECEIVED (an operator's redrive); False if the task is not failed."""
        update = Update(
            sets={"status": TaskStatus.RECEIVED.value, "updated_at": iso_now(self.clock())},
            adds={"revision": 1},
            removes={"transfer_queued"},
        )
        return (
            self._update(task_id, update, "#st = :failed", {":failed": TaskStatus.TRANSFER_FAILED.value})
            is not None
        )

    def failed_transfers(self) -> list[str]:
        """Every TRANSFER_FAILED task id. A scan: for an operator's occasional redrive only."""
        task_ids: list[str] = []
        kwargs: dict[str, Any] = {
            "FilterExpression": "#st = :failed",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":failed": {"S": TaskStatus.TRANSFER_FAILED.value}},
            "ProjectionExpression": "task_id",
        }
        while True:
            answer = self._call("scan", **kwargs)
            task_ids += [item["task_id"]["S"] for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return task_ids
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # --- reconcile -----------------------------------------------------------------------

    def due_for_poll(self, limit: int) -> list[str]:
        """Task ids waiting on the provider whose poll is due (sparse index; no scan)."""
        task_ids: list[str] = []
        kwargs: dict[str, Any] = {
            "IndexName": POLL_INDEX,
            "KeyConditionExpression": "poll_partition = :p AND poll_due <= :now",
            "ExpressionAttributeValues": {":p": {"S": POLL_PARTITION}, ":now": {"N": str(int(self.clock()))}},
        }
        while len(task_ids) < limit:
            answer = self._call("query", Limit=min(1000, limit - len(task_ids)), **kwargs)
            task_ids += [item["task_id"]["S"] for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                break
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return task_ids

    def schedule_poll(self, task_id: str, delay_seconds: int) -> None:
        """Look at the task again in `delay_seconds` (the provider said wait, or to back off)."""
        now = self.clock()
        update = Update(sets={"poll_due": int(now) + delay_seconds, "polled_at": iso_now(now)})
        self._update(task_id, update, "attribute_exists(poll_partition)")

    def stop_polling(self, task_id: str) -> None:
        self._update(task_id, Update(removes={"poll_partition", "poll_due"}), "attribute_exists(task_id)")

    # --- the transfer lease ---------------------------------------------------------------

    def acquire_lease(self, task_id: str, owner: str, lease_seconds: int) -> dict[str, Any] | None:
        """Take the task for one copy: RECEIVED, or TRANSFERRING under an expired lease."""
        now = self.clock()
        update = Update(
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
        condition = "#st = :received OR (#st = :transferring AND lease_expires < :now)"
        values = {
            ":received": TaskStatus.RECEIVED.value,
            ":transferring": TaskStatus.TRANSFERRING.value,
            ":now": int(now),
        }
        return self._update(task_id, update, condition, values)

    def _leased(self, task_id: str, owner: str, update: Update, what: str) -> dict[str, Any]:
        condition = "#st = :transferring AND lease_owner = :owner"
        values = {":transferring": TaskStatus.TRANSFERRING.value, ":owner": owner}
        record = self._update(task_id, update, condition, values)
        if record is None:
            raise LeaseLost(f"the lease on the task was lost before {what}")
        return record

    def report_progress(
        self, task_id: str, owner: str, bytes_transferred: int, content_length: int | None, lease_seconds: int
    ) -> None:
        """Write progress and renew the lease in one conditional write."""
        now = self.clock()
        sets: dict[str, Any] = {
            "bytes_transferred": bytes_transferred,
            "lease_expires": int(now) + lease_seconds,
            "updated_at": iso_now(now),
        }
        if content_length is not None:
            sets["content_length"] = content_length
        self._leased(task_id, owner, Update(sets=sets), "reporting progress")

    def mark_stored(self, task_id: str, owner: str, video: StoredVideo) -> dict[str, Any]:
        stamp = iso_now(self.clock())
        sets: dict[str, Any] = {
            "status": TaskStatus.STORED.value,
            "s3_bucket": video.bucket,
            "s3_key": video.key,
            "sha256": video.sha256,
            "size": video.size,
            "bytes_transferred": video.size,
            "stored_at": stamp,
            "updated_at": stamp,
        }
        optional = {
            "s3_version_id": video.version_id,
            "duration_seconds": Decimal(str(round(video.duration_seconds, 3)))
            if video.duration_seconds is not None
            else None,
            "width": video.width,
            "height": video.height,
        }
        sets.update({k: v for k, v in optional.items() if v is not None})
        update = Update(
            sets=sets,
            adds={"revision": 1},
            removes={"lease_owner", "lease_expires", "error", "poll_partition", "poll_due"},
        )
        return self._leased(task_id, owner, update, "storing")

    def release_for_retry(self, task_id: str, owner: str, error: str) -> None:
        """Give the task back (RECEIVED) so the redelivered message can try again."""
        update = Update(
            sets={"status": TaskStatus.RECEIVED.value, "error": error, "updated_at": iso_now(self.clock())},
            adds={"revision": 1},
            removes={"lease_owner", "lease_expires"},
        )
        self._leased(task_id, owner, update, "releasing it")

    def mark_transfer_failed(self, task_id: str, owner: str, error: str) -> dict[str, Any]:
        update = Update(
            sets={
                "status": TaskStatus.TRANSFER_FAILED.value,
                "error": error,
                "updated_at": iso_now(self.clock()),
            },
            adds={"revision": 1},
            removes={"lease_owner", "lease_expires", "transfer_queued"},
        )
        return self._leased(task_id, owner, update, "failing it")
