"""Lambda's DynamoDB stream event source, against the embedded endpoint's table streams.

`StreamPoller` does for a `DynamoDB` event of the template what Lambda's event source
mapping does: read each shard of the table's stream in order (DescribeStream,
GetShardIterator, GetRecords, as a user would with boto3), drop the records the event's
`FilterCriteria` do not match, and hand the rest to the function in batches of `BatchSize`
in Lambda's DynamoDB event shape. Then, as Lambda does:

* with `ReportBatchItemFailures`, the answer's `batchItemFailures` name failed records by
  sequence number: the records before the first failed one are done, the batch is retried
  from it; an error, or an answer Lambda cannot read, fails the whole batch;
* with `BisectBatchOnFunctionError`, a failing batch of more than one record is split and
  its first half retried (a split is not counted as a retry), so a poisoned record ends
  alone and its neighbours get through;
* a batch that fails `MaximumRetryAttempts` retries (-1: for ever) is given up: Lambda's
  on-failure record (which shard, which sequence numbers; not the records) is sent to the
  `DestinationConfig.OnFailure` queue, and the shard moves on.

Local differences, on purpose: retries come after `retry_seconds` (Lambda backs off on
its own schedule), `MaximumRecordAgeInSeconds` is not applied (the embedded stream keeps
every record while the stack runs), and each shard is read by one thread.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra.local.lambdas import LocalFunction

log = logging.getLogger("infra.local")
GET_RECORDS_LIMIT = 1000


def _epoch(value: Any) -> Any:
    return value.timestamp() if isinstance(value, datetime) else value


def lambda_record(record: dict[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """One `Records` entry as Lambda's DynamoDB event source builds it from a GetRecords record."""
    dynamodb = dict(record["dynamodb"])
    if "ApproximateCreationDateTime" in dynamodb:
        dynamodb["ApproximateCreationDateTime"] = _epoch(dynamodb["ApproximateCreationDateTime"])
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    }


def _check_pattern(pattern: Any, where: str = "pattern") -> None:
    """Only the literal form is emulated: objects of keys, leaves as lists of literal values."""
    if isinstance(pattern, dict):
        for key, value in pattern.items():
            _check_pattern(value, f"{where}.{key}")
    elif not isinstance(pattern, list) or any(isinstance(v, (dict, list)) for v in pattern):
        raise ValueError(f"{where}: only literal filter values are emulated locally")


def matches(pattern: Any, value: Any) -> bool:
    """EventBridge-style matching of a Lambda filter pattern (literal values) against a record."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and matches(sub, value[key]) for key, sub in pattern.items()
        )
    return value in pattern


def filters_of(props: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's `FilterCriteria` patterns, parsed and checked (any one must match)."""
    patterns = []
    for item in (props.get("FilterCriteria") or {}).get("Filters", []):
        pattern = json.loads(item["Pattern"])
        _check_pattern(pattern)
        patterns.append(pattern)
    return patterns


def failed_index(answer: Any, batch: list[dict[str, Any]], reports_failures: bool) -> int | None:
    """Where the batch failed, read from the answer as Lambda reads it; None when it succeeded.

    With `ReportBatchItemFailures`, the first record (in stream order) the answer names; an
    answer Lambda cannot read, or a sequence number not in the batch, fails it from the start.
    """
    if not reports_failures or answer is None:
        return None
    if not isinstance(answer, dict):
        return 0
    sequence = [r["dynamodb"]["SequenceNumber"] for r in batch]
    positions = []
    for item in answer.get("batchItemFailures") or []:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if identifier not in sequence:
            return 0
        positions.append(sequence.index(identifier))
    return min(positions) if positions else None


@dataclass
class StreamPoller:
    """Lambda's event source mapping for one function and one table stream."""

    function: LocalFunction
    streams: Any  # a dynamodbstreams client on the embedded endpoint
    sqs: Any
    stream_arn: str
    region: str
    batch_size: int
    starting_position: str
    reports_failures: bool
    bisect: bool
    max_retries: int
    on_failure_queue_url: str | None
    filters: list[dict[str, Any]]
    retry_seconds: float
    poll_seconds: float
    stop: threading.Event
    # Told of each shard iterator once it is used up: the embedded endpoint keeps every
    # iterator it ever handed out, and four polls a second would pile up ~30 MB an hour.
    release: Callable[[str], None] | None = None
    stats: dict[str, int] = field(
        default_factory=lambda: {"batches": 0, "records": 0, "retries": 0, "given_up": 0}
    )

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"{self.function.tag}-stream", daemon=True)
        self._busy = False
        self._idle = threading.Condition()
        self._done: dict[str, str] = {}  # per shard: the last sequence number handled or given up

    def start(self) -> None:
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def drain(self, timeout: float) -> bool:
        """After `stop`: wait for the batch being handled (an idle poll is not waited for)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout)

    def describe(self) -> str:
        retries = "for ever" if self.max_retries < 0 else f"{self.max_retries} retries"
        bisect = ", bisect on error" if self.bisect else ""
        to = "the on-failure queue" if self.on_failure_queue_url else "nowhere (dropped)"
        return (
            f"table stream, batch {self.batch_size}, {retries} {self.retry_seconds:g} s apart{bisect}, "
            f"then {to}; polled every {self.poll_seconds:g} s"
        )

    # --- reading the stream -------------------------------------------------------------

    def _run(self) -> None:
        iterators: dict[str, str] = {}
        pending: dict[str, list[dict[str, Any]]] = {}
        while not self.stop.is_set():
            try:
                if not iterators:
                    iterators = self._iterators()
                    pending = {shard: [] for shard in iterators}
                worked = False
                for shard in iterators:
                    if not pending[shard]:
                        used = iterators[shard]
                        answer = self.streams.get_records(ShardIterator=used, Limit=GET_RECORDS_LIMIT)
                        iterators[shard] = answer["NextShardIterator"]
                        if self.release is not None:
                            self.release(used)
                        records = [lambda_record(r, self.stream_arn, self.region) for r in answer["Records"]]
                        pending[shard] = [r for r in records if self._wanted(r)]
                    if pending[shard]:
                        worked = True
                        self._handle(shard, pending[shard])
                if not worked:
                    self.stop.wait(self.poll_seconds)
            except Exception:
                if self.stop.is_set():
                    return  # the endpoint is going away with us
                log.exception("%s: reading %s failed; retrying in 1 s", self.function.tag, self.stream_arn)
                iterators = {}  # start the shards again where Lambda would: at the position kept below
                self.stop.wait(1)

    def _iterators(self) -> dict[str, str]:
        stream = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        iterators = {}
        for shard in stream["Shards"]:
            shard_id = shard["ShardId"]
            done = self._done.get(shard_id)
            position = (
                {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": done}
                if done
                else {"ShardIteratorType": self.starting_position}
            )
            iterators[shard_id] = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, **position
            )["ShardIterator"]
        return iterators

    def _wanted(self, record: dict[str, Any]) -> bool:
        return not self.filters or any(matches(pattern, record) for pattern in self.filters)

    # --- one batch, with Lambda's retries ----------------------------------------------------

    def _handle(self, shard: str, pending: list[dict[str, Any]]) -> None:
        """Deliver the first batch of `pending`; remove from it what is done or given up."""
        with self._idle:
            self._busy = True
        try:
            batch = pending[: self.batch_size]
            retries = 0
            while batch and not self.stop.is_set():
                self.stats["batches"] += 1
                try:
                    answer = self.function.invoke({"Records": batch})
                    failed_at = failed_index(answer, batch, self.reports_failures)
                except Exception:
                    failed_at = 0  # an unhandled error fails the whole batch
                if failed_at is None:
                    self._done_with(shard, pending, len(batch))
                    self.stats["records"] += len(batch)
                    return
                # The records before the failed one are done; the batch is retried from it.
                self._done_with(shard, pending, failed_at)
                self.stats["records"] += failed_at
                batch = batch[failed_at:]
                if self.bisect and len(batch) > 1:
                    batch = batch[: (len(batch) + 1) // 2]  # a split is not counted as a retry
                    log.warning(
                        "%s: batch failed; split, retrying %d record(s)", self.function.tag, len(batch)
                    )
                    continue
                retries += 1
                if 0 <= self.max_retries < retries:
                    self._give_up(shard, batch, retries)
                    self._done_with(shard, pending, len(batch))
                    return
                self.stats["retries"] += 1
                log.warning(
                    "%s: batch of %d record(s) failed (retry %d of %s) at sequence number %s",
                    self.function.tag,
                    len(batch),
                    retries,
                    "unlimited" if self.max_retries < 0 else self.max_retries,
                    batch[0]["dynamodb"]["SequenceNumber"],
                )
                self.stop.wait(self.retry_seconds)
        finally:
            with self._idle:
                self._busy = False
                self._idle.notify_all()

    def _done_with(self, shard: str, pending: list[dict[str, Any]], count: int) -> None:
        if count:
            self._done[shard] = pending[count - 1]["dynamodb"]["SequenceNumber"]
            del pending[:count]

    def _give_up(self, shard: str, batch: list[dict[str, Any]], retries: int) -> None:
        """Lambda's on-failure record for a stream batch: where it was, not what it held."""
        self.stats["given_up"] += 1
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        record = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function.arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": retries,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        log.error(
            "%s: gave up on %d record(s) from sequence number %s after %d retries; %s",
            self.function.tag,
            len(batch),
            first["SequenceNumber"],
            retries - 1,
            "sent to the on-failure queue" if self.on_failure_queue_url else "dropped (no on-failure queue)",
        )
        if self.on_failure_queue_url:
            self.sqs.send_message(QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(record))


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)):
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
