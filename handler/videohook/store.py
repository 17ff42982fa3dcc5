"""The task table: every state change is a conditional DynamoDB write.

Callbacks arrive duplicated and interleaved, and transfer messages are delivered at least
once, so no decision here is taken on a value read earlier without checking, at write time,
that the item has not moved since. State-changing writes carry a `revision` condition
(optimistic concurrency, retried a few times); the transfer worker's ownership is a lease
(`lease_owner` + `lease_expires`) taken and renewed by conditional updates. What each write
changes is decided in lifecycle.py; this module only reads, writes and builds expressions.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from videohook.errors import AwsFault, LeaseLost
from videohook.lifecycle import (
    LEASE_FROM,
    LEASED_FROM,
    LIST_PARTITION,
    LIST_PARTITION_ATTRIBUTE,
    POLL_PARTITION,
    QUEUED_FROM,
    REDRIVE_FROM,
    Change,
    TaskStatus,
    plan_callback,
    plan_confirmed_url,
    plan_due,
    plan_expired,
    plan_lease,
    plan_progress,
    plan_queued,
    plan_redrive,
    plan_retry,
    plan_stop_polling,
    plan_stored,
    plan_submitted,
    plan_transfer_failed,
)
from videohook.models import Callback, StoredVideo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# The sparse index reconcile reads: only tasks waiting for the provider carry its keys.
POLL_INDEX = "poll-due"
# The archive list's indexes (listing.py): every task by its last change, and by status.
ALL_INDEX = "by-updated"
STATUS_INDEX = "by-status"
OPTIMISTIC_RETRIES = 8
# Upper bound of the random pause after the n-th lost race: 10 ms, 20 ms, 40 ms, ...
CONFLICT_BACKOFF_SECONDS = 0.01

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal, and sets as sets; the record is served as JSON."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_plain(v) for v in value]
    return value


def decode_image(image: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An item in DynamoDB JSON (a read's answer, a stream image) as plain values; None for none."""
    if not image:
        return None
    return {k: _plain(_deserializer.deserialize(v)) for k, v in image.items()}


def _attribute(value: Any) -> AttributeValueTypeDef:
    """A plain value as DynamoDB takes it (floats as Decimal: the serializer refuses floats)."""
    if isinstance(value, float):
        value = Decimal(str(value))
    return _serializer.serialize(value)


def update_expression(change: Change) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The UpdateExpression, attribute names and (plain) values of one change."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    parts = []
    for action, tag, separator, fields in (("SET", "s", " = ", change.sets), ("ADD", "a", " ", change.adds)):
        if fields:
            for i, (name, value) in enumerate(fields.items()):
                names[f"#{tag}{i}"] = name
                values[f":{tag}{i}"] = value
            parts.append(
                f"{action} " + ", ".join(f"#{tag}{i}{separator}:{tag}{i}" for i in range(len(fields)))
            )
    removes = sorted(change.removes - set(change.sets))
    if removes:
        for i, name in enumerate(removes):
            names[f"#r{i}"] = name
        parts.append("REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes))))
    return " ".join(parts), names, values


def status_condition(statuses: tuple[TaskStatus, ...]) -> tuple[str, dict[str, Any]]:
    """`#st IN (...)`: the write holds only while the task is in one of `statuses`."""
    values = {f":st{i}": status.value for i, status in enumerate(statuses)}
    return f"#st IN ({', '.join(values)})", values


@contextlib.contextmanager
def _faults(operation: str, *, conditional: bool = False) -> Iterator[None]:
    """AWS errors as AwsFault; a failed condition propagates when the write has one."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if conditional and code == "ConditionalCheckFailedException":
            raise
        raise AwsFault(f"DynamoDB {operation} failed ({code})") from exc
    except BotoCoreError as exc:
        raise AwsFault(f"DynamoDB {operation} failed ({type(exc).__name__})") from exc


@dataclass(frozen=True)
class CallbackOutcome:
    """What a callback did to its task, and whether a transfer must be queued for it."""

    record: dict[str, Any]
    queue_transfer: bool
    suspicious: str | None = None
    # A signed callback presented again (same timestamp): answered 200, nothing written.
    replayed: bool = False


class TaskStore:
    """DynamoDB access for task records; raises AwsFault when DynamoDB cannot be reached."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        *,
        poll_after_seconds: int = 300,
        signature_window_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table_name = table_name
        self.client = client
        self.poll_after_seconds = poll_after_seconds
        self.signature_window_seconds = signature_window_seconds
        self.clock = clock

    # --- low level -------------------------------------------------------------------

    @staticmethod
    def _key(task_id: str) -> dict[str, AttributeValueTypeDef]:
        return {"task_id": {"S": task_id}}

    def _update(
        self, task_id: str, change: Change, condition: str, values: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Apply a change under a condition; None when the condition did not hold."""
        if "updated_at" in change.sets:  # keeps the task in the archive list's index (listing.py)
            change = Change(
                {**change.sets, LIST_PARTITION_ATTRIBUTE: LIST_PARTITION}, change.adds, change.removes
            )
        expression, names, expr_values = update_expression(change)
        expr_values.update(values or {})
        if "#st" in condition:
            names["#st"] = "status"
        extra: dict[str, Any] = {}
        if expr_values:  # DynamoDB refuses an empty map, and a REMOVE-only update has no values
            extra["ExpressionAttributeValues"] = {k: _attribute(v) for k, v in expr_values.items()}
        try:
            with _faults("update_item", conditional=True):
                answer = self.client.update_item(
                    TableName=self.table_name,
                    Key=self._key(task_id),
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ReturnValues="ALL_NEW",
                    **extra,
                )
        except ClientError:
            return None
        return decode_image(answer.get("Attributes"))

    def _get(self, task_id: str) -> dict[str, Any] | None:
        with _faults("get_item"):
            answer = self.client.get_item(
                TableName=self.table_name, Key=self._key(task_id), ConsistentRead=True
            )
        return decode_image(answer.get("Item"))

    def _revised(self, task_id: str, item: dict[str, Any] | None, change: Change) -> dict[str, Any] | None:
        """Write only if nobody changed the task since `item` was read."""
        if item is None:
            return self._update(task_id, change, "attribute_not_exists(task_id)")
        return self._update(task_id, change, "revision = :seen", {":seen": item.get("revision", 0)})

    # --- reads ---------------------------------------------------------------------------

    def get(self, task_id: str) -> dict[str, Any] | None:
        return self._get(task_id)

    def query(self, **kwargs: Any) -> dict[str, Any]:
        """One Query page of an index of the table, items decoded (listing.py)."""
        with _faults("query"):
            answer = self.client.query(TableName=self.table_name, **kwargs)
        items = [decode_image(item) or {} for item in answer.get("Items", [])]
        return {**answer, "Items": items}

    # --- callbacks and submits -------------------------------------------------------------

    def record_callback(
        self, callback: Callback, *, counted: bool = True, audio_id: str | None = None
    ) -> CallbackOutcome:
        """Count the callback and move the task by the rules of lifecycle.plan_callback, atomically.

        `counted=False` applies a poll result: the same moves, without counting a callback.
        A signed callback's timestamp is remembered in the same conditional write, so of two
        racing copies of one signed callback exactly one is applied, the other is a replay.
        """
        for attempt in range(OPTIMISTIC_RETRIES):
            if attempt:
                # Duplicates arrive together: jitter so the racers do not collide again.
                time.sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * 2**attempt))
            item = self._get(callback.task_id)
            plan = plan_callback(
                item,
                callback,
                self.clock(),
                poll_after=self.poll_after_seconds,
                counted=counted,
                audio_id=audio_id,
                signature_window=self.signature_window_seconds,
            )
            if plan.replayed:
                return CallbackOutcome(item or {}, plan.queue_transfer, replayed=True)
            record = self._revised(callback.task_id, item, plan.change)
            if record is not None:
                return CallbackOutcome(record, plan.queue_transfer, plan.suspicious)
        raise AwsFault("the task changed too often while recording the callback")

    def mark_queued(self, task_id: str, *, requeues: int = 0) -> None:
        """Remember that a transfer message exists, so duplicates do not queue another.

        `requeues`: the how-many-th time reconcile queues the task again (0: not a recovery).
        """
        condition, values = status_condition(QUEUED_FROM)
        change = plan_queued(self.clock(), poll_after=self.poll_after_seconds, requeues=requeues)
        self._update(task_id, change, condition, values)

    def record_submitted(self, task_id: str, audio_id: str) -> tuple[dict[str, Any], bool]:
        """Create a SUBMITTED task; (record, False) when the task is already known."""
        change = plan_submitted(audio_id, self.clock(), poll_after=self.poll_after_seconds)
        record = self._update(task_id, change, "attribute_not_exists(task_id)")
        if record is not None:
            return record, True
        existing = self._get(task_id)
        if existing is None:
            raise AwsFault("the task vanished while being submitted")
        return existing, False

    def forget_submitted(self, task_id: str) -> None:
        """Remove a SUBMITTED task the provider refused, so that it can be submitted again."""
        # A callback that arrived meanwhile makes the condition fail: the task is real after all.
        with contextlib.suppress(ClientError), _faults("delete_item", conditional=True):
            self.client.delete_item(
                TableName=self.table_name,
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
        condition, values = status_condition(REDRIVE_FROM)
        change = plan_redrive(self.clock(), poll_after=self.poll_after_seconds)
        return self._update(task_id, change, condition, values) is not None

    def failed_transfers(self) -> list[str]:
        """Every TRANSFER_FAILED task id, for an operator's redrive: a Query of the list's
        `by-status` index (listing.py), never a scan, so its cost is the failed tasks'."""
        task_ids: list[str] = []
        kwargs: dict[str, Any] = {
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#st = :failed",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":failed": {"S": TaskStatus.TRANSFER_FAILED.value}},
            "ProjectionExpression": "task_id",
        }
        while True:
            with _faults("query"):
                answer = self.client.query(TableName=self.table_name, **kwargs)
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
            with _faults("query"):
                answer = self.client.query(
                    TableName=self.table_name, Limit=min(1000, limit - len(task_ids)), **kwargs
                )
            task_ids += [item["task_id"]["S"] for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                break
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return task_ids

    def schedule_poll(self, task_id: str, delay_seconds: int, seen_due: int | None = None) -> None:
        """Look at the task again in `delay_seconds` (the provider said wait, or to back off).

        With `seen_due` (the due time the visit found), only if no other write has given the
        task another due time meanwhile (say, its transfer was queued): that one stands.
        """
        self.schedule_at(task_id, int(self.clock()) + delay_seconds, seen_due)

    def schedule_at(self, task_id: str, due: int, seen_due: int | None = None) -> None:
        """Look at the task again at `due` (epoch seconds); see `schedule_poll`."""
        change = plan_due(due)
        if seen_due is None:
            self._update(task_id, change, "attribute_exists(poll_partition)")
        else:
            self._update(task_id, change, "poll_due = :seen_due", {":seen_due": seen_due})

    def end_submitted(self, task_id: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        """SUBMITTED for 14 days -> GENERATION_FAILED; None if the task moved since `item`."""
        condition, values = status_condition((TaskStatus.SUBMITTED,))
        values[":seen"] = item.get("revision", 0)
        return self._update(task_id, plan_expired(self.clock()), f"{condition} AND revision = :seen", values)

    def stop_polling(self, task_id: str, seen_due: int) -> None:
        """Take a final task off the index, unless a write gave it a new due time meanwhile."""
        self._update(task_id, plan_stop_polling(), "poll_due = :seen_due", {":seen_due": seen_due})

    # --- the transfer lease ---------------------------------------------------------------

    def acquire_lease(self, task_id: str, owner: str, lease_seconds: int) -> dict[str, Any] | None:
        """Take the task for one copy: RECEIVED, or TRANSFERRING under an expired lease."""
        now = self.clock()
        received, transferring = LEASE_FROM
        condition = "#st = :received OR (#st = :transferring AND lease_expires < :now)"
        values = {":received": received.value, ":transferring": transferring.value, ":now": int(now)}
        return self._update(task_id, plan_lease(owner, now, lease_seconds), condition, values)

    def _leased(self, task_id: str, owner: str, change: Change, what: str) -> dict[str, Any]:
        (transferring,) = LEASED_FROM
        condition = "#st = :transferring AND lease_owner = :owner"
        values = {":transferring": transferring.value, ":owner": owner}
        record = self._update(task_id, change, condition, values)
        if record is None:
            raise LeaseLost(f"the lease on the task was lost before {what}")
        return record

    def report_progress(
        self, task_id: str, owner: str, bytes_transferred: int, content_length: int | None, lease_seconds: int
    ) -> None:
        """Write progress and renew the lease in one conditional write."""
        change = plan_progress(bytes_transferred, content_length, self.clock(), lease_seconds)
        self._leased(task_id, owner, change, "reporting progress")

    def mark_stored(self, task_id: str, owner: str, video: StoredVideo) -> dict[str, Any]:
        return self._leased(task_id, owner, plan_stored(video, self.clock()), "storing")

    def release_for_retry(self, task_id: str, owner: str, error: str) -> None:
        """Give the task back (RECEIVED) so the redelivered message can try again."""
        change = plan_retry(error, self.clock(), poll_after=self.poll_after_seconds)
        self._leased(task_id, owner, change, "releasing it")

    def record_confirmed_url(self, task_id: str, owner: str, url: str) -> None:
        """The provider confirmed another video_url than the task had: the record names what is copied."""
        self._leased(task_id, owner, plan_confirmed_url(url, self.clock()), "recording the confirmed URL")

    def mark_transfer_failed(self, task_id: str, owner: str, error: str) -> dict[str, Any]:
        return self._leased(task_id, owner, plan_transfer_failed(error, self.clock()), "failing it")
