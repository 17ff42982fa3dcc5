"""Task events on the local stack, from the outside: a rule on the embedded bus receives them.

The stack runs as a user runs it (`python -m infra.local.serve`); this suite talks to its
HTTP API and its embedded AWS endpoint only. A rule with an SQS target is created on the
embedded bus exactly as an owner's app would create one; every event it receives is checked
against docs/schemas. Covered: `Video Stored` for a stored video (fields equal to the record),
`Video Generation Failed` for a failure callback, `Video Transfer Failed` for a 404 source;
duplicate callbacks publish nothing more; EventBridge failing mid-batch loses nothing (the
event arrives after the retry); a poisoned record ends in the on-failure queue and the
stream moves on. Also measured: the delay from the STORED write to the event's arrival.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local.harness import StackProcess, booted_stack, wait_for_task
from infra.template import ROOT
from testkit.aws import endpoint_client
from testkit.callbacks import callback_body, post_callback
from testkit.video_source import Video, VideoServer
from tests.event_schemas import check_event

pytestmark = pytest.mark.integration

HMAC_KEY, TOKEN = "events-hmac-key", "events-callback-token"
FIXTURE = ROOT / "tests" / "fixtures" / "faststart.mp4"


class Stack(StackProcess):
    log_path: Path

    def aws(self, service: str) -> Any:
        return endpoint_client(service, self.aws_endpoint)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n--- stack log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def callback(self, task_id: str, *, code: int = 200, url: str | None = None, msg: str = "ok") -> None:
        body = callback_body(task_id, url, code=code, msg=msg)
        answer = post_callback(f"{self.api}/callbacks", body, key=HMAC_KEY, token=TOKEN)
        assert answer.status_code == 200, answer.text


class Inbox:
    """An owner's app: an SQS queue, the target of a rule on the embedded bus."""

    def __init__(self, stack: Stack) -> None:
        self.sqs, events = stack.aws("sqs"), stack.aws("events")
        name = f"owner-app-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]
        events.put_rule(Name=name, EventPattern=json.dumps({"source": ["videohook"]}))
        events.put_targets(Rule=name, Targets=[{"Id": "app", "Arn": arn["QueueArn"]}])
        self.events: list[dict[str, Any]] = []  # every event received so far, schema-checked

    def _receive(self) -> None:
        answer = self.sqs.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
        )
        for message in answer.get("Messages", []):
            envelope = json.loads(message["Body"])
            check_event(envelope)
            envelope["_received_ms"] = int(message["Attributes"]["SentTimestamp"])
            self.events.append(envelope)
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def of(self, task_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["detail"]["task_id"] == task_id]

    def wait_for(self, task_id: str, timeout: float = 20) -> dict[str, Any]:
        """The first event about `task_id`, waiting for it."""
        deadline = time.monotonic() + timeout
        while not self.of(task_id) and time.monotonic() < deadline:
            self._receive()
        found = self.of(task_id)
        assert found, f"no event for {task_id} within {timeout} s"
        return found[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_path = tmp_path_factory.mktemp("events-stack") / "serve.log"
    env = {
        "WEBHOOK_HMAC_KEYS": HMAC_KEY,
        "CALLBACK_TOKEN": TOKEN,
        "VIDEO_SOURCE_ALLOW_PRIVATE": "true",
        "LOCAL_RETRY_SECONDS": "1",
        "LOCAL_STREAM_RETRY_SECONDS": "1",
        "LOCAL_FAULTS": "true",
    }
    with booted_stack(env, log_path, factory=Stack) as running:
        running.log_path = log_path
        yield running


@pytest.fixture(scope="module")
def inbox(stack: Stack) -> Inbox:
    return Inbox(stack)


@pytest.fixture(scope="module")
def origin() -> Iterator[Video]:
    with VideoServer() as videos:
        yield videos.serve_file(FIXTURE)


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def test_a_stored_video_is_announced_with_the_records_fields(
    stack: Stack, inbox: Inbox, origin: Video
) -> None:
    # GIVEN a signed callback for a video the origin serves
    task_id = f"ev-stored-{uuid.uuid4().hex[:8]}"
    stack.callback(task_id, url=origin.url)
    record = wait_for_task(stack.api, task_id, {"STORED", "TRANSFER_FAILED"}, timeout=30)
    assert record["status"] == "STORED", record
    # WHEN the owner's app reads its queue
    event = inbox.wait_for(task_id)
    # THEN a "Video Stored" event arrived whose fields equal the record's
    assert (event["source"], event["detail-type"]) == ("videohook", "Video Stored")
    detail = event["detail"]
    for name in ("task_id", "status", "s3_bucket", "s3_key", "s3_version_id", "sha256", "size"):
        assert detail[name] == record[name], name
    for name in ("duration_seconds", "width", "height", "rotation", "stored_at"):
        assert detail[name] == record[name], name
    assert detail["occurred_at"] == record["updated_at"] and detail["source_host"] == "127.0.0.1"
    assert TOKEN not in json.dumps(event) and "download_url" not in detail
    delay_ms = event["_received_ms"] - _ms(record["stored_at"])
    print(f"\nSTORED write -> event on the rule's queue: {delay_ms} ms")
    assert 0 <= delay_ms < 5000


def test_failures_are_announced_and_duplicate_callbacks_are_not(
    stack: Stack, inbox: Inbox, origin: Video
) -> None:
    # GIVEN a failure callback, and a success callback whose source answers 404
    failed = f"ev-gen-{uuid.uuid4().hex[:8]}"
    missing = f"ev-404-{uuid.uuid4().hex[:8]}"
    stack.callback(failed, code=501, msg="the audio could not be turned into a video")
    stack.callback(missing, url=origin.url.rsplit("/", 1)[0] + "/expired.mp4")
    # WHEN their events arrive
    generation, transfer = inbox.wait_for(failed), inbox.wait_for(missing)
    # THEN they say what happened, with the provider's code and the transfer error
    assert generation["detail-type"] == "Video Generation Failed"
    assert (generation["detail"]["provider_code"], generation["detail"]["provider_msg"]) == (
        501,
        "the audio could not be turned into a video",
    )
    assert transfer["detail-type"] == "Video Transfer Failed"
    assert "404" in transfer["detail"]["error"] and transfer["detail"]["attempts"] == 1
    # WHEN the same callbacks come again (the provider retries), then a new task's failure
    stack.callback(failed, code=501, msg="the audio could not be turned into a video")
    stack.callback(failed, code=501, msg="the audio could not be turned into a video")
    barrier = f"ev-barrier-{uuid.uuid4().hex[:8]}"
    stack.callback(barrier, code=500, msg="later")
    inbox.wait_for(barrier)  # the stream is read in order: the duplicates were read before it
    # THEN the duplicates published nothing more
    assert len(inbox.of(failed)) == 1 and len(inbox.of(missing)) == 1


def test_eventbridge_failing_mid_batch_loses_nothing(stack: Stack, inbox: Inbox) -> None:
    # GIVEN EventBridge refusing the next 3 PutEvents calls that carry one task's event
    task_ids = [f"ev-fault-{n}-{uuid.uuid4().hex[:6]}" for n in range(3)]
    rule = {"operation": "PutEvents", "count": 3, "status": 500, "contains": task_ids[1]}
    assert requests.post(f"{stack.aws_endpoint}/_local/faults", json=rule, timeout=5).ok
    try:
        # WHEN three failures are recorded back to back
        for task_id in task_ids:
            stack.callback(task_id, code=451, msg="refused")
        # THEN every event arrives, the refused one after the retry
        for task_id in task_ids:
            inbox.wait_for(task_id, timeout=30)
        rules = requests.get(f"{stack.aws_endpoint}/_local/faults", timeout=5).json()
        assert [r["failed"] for r in rules["rules"]] == [3], rules
        # (the events function reported the record failed: its batch was split or retried)
        assert re.search(r"publish: batch (failed; split|of \d+ record\(s\) failed)", stack.log()), (
            stack.tail()
        )
        assert {e["detail"]["event_id"] for e in inbox.of(task_ids[1])} == {
            inbox.of(task_ids[1])[0]["detail"]["event_id"]
        }
    finally:
        requests.delete(f"{stack.aws_endpoint}/_local/faults", timeout=5)


def test_a_poisoned_record_ends_in_the_on_failure_queue(stack: Stack, inbox: Inbox) -> None:
    # GIVEN a record no event can be built from (STORED without its S3 fields), written straight
    # to the embedded table, then a good change after it
    health = requests.get(f"{stack.api}/health", timeout=5).json()
    table, dead_letters = health["outputs"]["TasksTableName"], health["outputs"]["EventsDeadLetterQueueUrl"]
    poison = f"ev-poison-{uuid.uuid4().hex[:8]}"
    stack.aws("dynamodb").put_item(
        TableName=table,
        Item={
            "task_id": {"S": poison},
            "status": {"S": "STORED"},
            "updated_at": {"S": "2026-01-01T00:00:00.000Z"},
        },
    )
    after = f"ev-after-{uuid.uuid4().hex[:8]}"
    stack.callback(after, code=500, msg="later")
    # WHEN the events function has retried it as often as the template allows
    sqs, found = stack.aws("sqs"), None
    deadline = time.monotonic() + 30
    while found is None and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=dead_letters, WaitTimeSeconds=1).get("Messages", []):
            found = json.loads(message["Body"])
    # THEN Lambda's on-failure record names the poisoned change, and the stream moved on
    assert found is not None, "nothing reached the on-failure queue" + stack.tail()
    info = found["DDBStreamBatchInfo"]
    assert found["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"]
    streams = stack.aws("dynamodbstreams")
    shard = streams.get_shard_iterator(
        StreamArn=info["streamArn"],
        ShardId=info["shardId"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        SequenceNumber=info["startSequenceNumber"],
    )
    (record, *_) = streams.get_records(ShardIterator=shard["ShardIterator"], Limit=1)["Records"]
    assert record["dynamodb"]["Keys"]["task_id"]["S"] == poison
    assert inbox.wait_for(after)["detail-type"] == "Video Generation Failed"
    assert inbox.of(poison) == []
    streams = requests.get(f"{stack.api}/health", timeout=5).json()["streams"]["publish"]
    assert streams["given_up"] == 1 and streams["retries"] >= 5, streams
