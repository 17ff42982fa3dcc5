"""The template's non-HTTP event sources: SQS event source mappings and schedules.

`SqsPoller` does what Lambda's SQS event source mapping does: long-poll the queue, hand
each batch to the function in Lambda's SQS event shape, delete what succeeded, and leave
what failed on the queue; the queue's redrive policy (moto implements it, as SQS does)
moves a message received `maxReceiveCount` times to the dead-letter queue.

One local difference, on purpose: deployed, a failed message becomes visible again only
when its visibility timeout ends, and the template sets that to 5400 s (6x the transfer
function's 900 s timeout, as Lambda's SQS guidance asks). Locally that would make one
retry take an hour and a half and the dead-letter path untestable, so a failed message is
made visible again after `LOCAL_RETRY_SECONDS` (default 2) with ChangeMessageVisibility.
The message is still received with the queue's own visibility timeout, so a long copy is
never delivered twice while it runs.

A second one, only when asked for (`visibility_seconds`, from `LOCAL_VISIBILITY_SECONDS`;
always on with `LOCAL_TRANSFER_PROCESSES`, see worker.py for why): messages are received
with that shorter visibility timeout, and a heartbeat extends it every quarter of it for
as long as their handler runs. A live copy is still never delivered twice; a worker that
is killed stops its heartbeat, and its messages come back within `visibility_seconds`.

`Scheduler` invokes a function with EventBridge's scheduled event every period.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from infra.local.lambdas import LocalFunction

log = logging.getLogger("infra.local")
LONG_POLL_SECONDS = 1  # short, so that stopping never waits long for an empty receive
HEARTBEATS_PER_VISIBILITY = 4  # the heartbeat extends the visibility every quarter of it


def _message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """SQS API message attributes in the camelCase form Lambda's SQS event uses."""
    converted = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        converted[name] = item
    return converted


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One `Records` entry exactly as Lambda's SQS event source builds it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": _message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_ids(answer: Any, message_ids: list[str], reports_failures: bool) -> set[str]:
    """The messages to retry, read from the answer as Lambda reads it.

    With `ReportBatchItemFailures`, the answer lists the failed message ids; an answer
    Lambda cannot read, or an id not in the batch, fails the whole batch. Without it, an
    answer means the whole batch succeeded.
    """
    if not reports_failures or answer is None:
        return set()
    if not isinstance(answer, dict):
        return set(message_ids)
    items = answer.get("batchItemFailures") or []
    failed = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


@dataclass
class SqsPoller:
    """Lambda's SQS event source mapping for one function and queue, on worker threads."""

    function: LocalFunction
    sqs: Any
    queue_url: str
    queue_arn: str
    region: str
    batch_size: int
    reports_failures: bool
    concurrency: int
    retry_seconds: int
    max_receives: int | None
    stop: threading.Event
    visibility_seconds: int | None = None  # None: the queue's own, and no heartbeat
    on_change: Callable[[dict[str, str]], None] | None = None  # told what is in flight, on every change

    def __post_init__(self) -> None:
        self.threads = [
            threading.Thread(target=self._run, name=f"{self.function.tag}-poller-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        self._busy = 0
        self._idle = threading.Condition()
        self.in_flight: dict[str, str] = {}  # message id -> its task id (or message id), being handled

    def drain(self, timeout: float) -> bool:
        """After `stop`: wait for batches being processed; idle long-polls are not waited for."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    @property
    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                visibility = {"VisibilityTimeout": self.visibility_seconds} if self.visibility_seconds else {}
                answer = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=self.batch_size,
                    WaitTimeSeconds=LONG_POLL_SECONDS,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                    **visibility,
                )
                messages = answer.get("Messages", [])
                with self._idle:
                    if not messages or self.stop.is_set():
                        continue  # received while stopping: the in-memory queue goes away with us
                    self._busy += 1
                try:
                    self._deliver(messages)
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
            except Exception:
                if self.stop.is_set():
                    return  # the endpoint is going away with us
                log.exception("%s: polling %s failed; retrying in 1 s", self.function.tag, self.queue_url)
                self.stop.wait(1)

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        ids = [m["MessageId"] for m in messages]
        event = {"Records": [sqs_record(m, self.queue_arn, self.region) for m in messages]}
        self._track(messages, True)
        try:
            with _Heartbeat(self, messages):
                try:
                    failed = failed_ids(self.function.invoke(event), ids, self.reports_failures)
                except Exception:
                    failed = set(ids)  # an unhandled error fails the whole batch
        finally:
            self._track(messages, False)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done)],
            )
        retry = [m for m in messages if m["MessageId"] in failed]
        if retry:
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(n),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.retry_seconds,
                    }
                    for n, m in enumerate(retry)
                ],
            )
        for message in retry:
            receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
            after = (
                "moves to the dead-letter queue on its next receive"
                if self.max_receives is not None and receives == str(self.max_receives)
                else f"visible again in {self.retry_seconds} s"
            )
            log.warning(
                "%s: message %s failed (receive %s of %s); %s",
                self.function.tag,
                message["MessageId"],
                receives,
                self.max_receives or "unlimited",
                after,
            )

    def _track(self, messages: list[dict[str, Any]], started: bool) -> None:
        """Keep `in_flight` current and tell `on_change` (a worker process reports it to serve)."""
        with self._idle:
            for message in messages:
                if started:
                    self.in_flight[message["MessageId"]] = _task_of(message)
                else:
                    self.in_flight.pop(message["MessageId"], None)
            snapshot = dict(self.in_flight)
        if self.on_change is not None:
            with contextlib.suppress(Exception):
                self.on_change(snapshot)


def _task_of(message: dict[str, Any]) -> str:
    """The task a transfer message is about (its body's task_id), else the message id."""
    try:
        body = json.loads(message.get("Body") or "")
    except ValueError:
        body = None
    task_id = body.get("task_id") if isinstance(body, dict) else None
    return str(task_id) if task_id else str(message["MessageId"])


class _Heartbeat:
    """While a batch is handled, extend its messages' visibility every quarter of it.

    Only with `visibility_seconds`: the batch was received with that short timeout, and
    would otherwise be delivered again while its handler still runs.
    """

    def __init__(self, poller: SqsPoller, messages: list[dict[str, Any]]) -> None:
        self.poller = poller
        self.messages = messages
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self.poller.visibility_seconds:
            self.thread = threading.Thread(
                target=self._run, name=f"{self.poller.function.tag}-heartbeat", daemon=True
            )
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def _run(self) -> None:
        visibility = int(self.poller.visibility_seconds or 0)
        while not self.done.wait(visibility / HEARTBEATS_PER_VISIBILITY):
            try:
                self.poller.sqs.change_message_visibility_batch(
                    QueueUrl=self.poller.queue_url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": visibility}
                        for n, m in enumerate(self.messages)
                    ],
                )
            except Exception as error:  # the next beat tries again; the handler goes on
                log.warning("%s: visibility heartbeat failed: %s", self.poller.function.tag, error)


_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of an EventBridge `rate(...)` expression; None for `cron(...)`."""
    found = _RATE.match(expression.strip())
    if not found:
        return None
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


@dataclass
class Scheduler:
    """EventBridge's schedule rule for one function: the scheduled event every `period`.

    Like a `rate` rule, the first run is one period after start. Runs never overlap here
    (EventBridge would start another invocation even if one is still running).
    """

    function: LocalFunction
    rule_name: str
    period: float
    region: str
    account: str
    stop: threading.Event

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"{self.function.tag}-schedule", daemon=True)

    def start(self) -> None:
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def event(self) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account}:rule/{self.rule_name}"],
            "detail": {},
        }

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            # An error is logged by invoke; EventBridge would retry, here the next period does.
            with contextlib.suppress(Exception):
                self.function.invoke(self.event())
