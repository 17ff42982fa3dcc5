"""What one stored video costs in AWS requests, end to end: callback, transfer and its event.

Every AWS call is counted with a botocore hook on the functions' own session (so the
count is what the handlers really do) and on the session that plays Lambda's event sources
(SQS receive/delete, the stream read). The breakdown is printed (`pytest -s`) and held to
what each step needs, so a change that adds calls shows up here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import publish
import pytest
from botocore.config import Config

import ingest
import transfer
from infra.local.streams import filters_of, lambda_record, matches
from testkit.lambda_context import LambdaContext
from testkit.video_source import VideoServer
from tests.conftest import FIXTURES, AwsWorld, signed_callback
from tests.event_schemas import check_event
from videohook import aws as aws_clients
from videohook import services


class Tally:
    """AWS calls by (service, operation), per phase."""

    def __init__(self) -> None:
        self.phase = "-"
        self.calls: Counter[tuple[str, str, str]] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.calls[(self.phase, model.service_model.service_name, model.name)] += 1

    def attach(self, session: Any) -> None:
        session.events.register("after-call", self)

    def of(self, phase: str) -> Counter[str]:
        """The phase's calls, without the secrets a cold start reads (cached 5 min per container)."""
        return Counter(
            {f"{s}:{op}": n for (p, s, op), n in self.calls.items() if p == phase and s != "secretsmanager"}
        )

    @property
    def cold_start(self) -> int:
        return sum(n for (_, s, _), n in self.calls.items() if s == "secretsmanager")


def use_only(aws: AwsWorld, function: str, **overrides: str) -> None:
    """The function's environment and nothing of the other functions' (one process plays all)."""
    for name in {n for f in aws.stack.functions() for n in aws.stack.function_environment(f)}:
        aws.monkeypatch.delenv(name, raising=False)
    aws.use_function(function, **overrides)


@pytest.fixture
def tally(aws: AwsWorld) -> Iterator[Tally]:
    counted = Tally()
    counted.attach(aws_clients._session())  # the functions' clients are made from this session
    services.reset()
    publish.publisher.cache_clear()
    yield counted
    aws_clients._session().events.unregister("after-call", counted)
    publish.publisher.cache_clear()


def test_one_stored_video_costs_a_known_number_of_aws_requests(aws: AwsWorld, tally: Tally) -> None:
    # GIVEN Lambda's event sources played by a counted session of their own, and a video source
    source = boto3.session.Session()
    tally.attach(source)
    sqs = source.client("sqs")
    streams = source.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
    data = (FIXTURES / "faststart.mp4").read_bytes()
    with VideoServer() as server:
        url = server.add("/cdn/faststart.mp4", data)
        # WHEN the provider's callback arrives
        tally.phase = "callback"
        use_only(aws, "IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
        body = {"code": 200, "msg": "success", "data": {"task_id": "task-cost", "video_url": url}}
        event = signed_callback("callback_success.json", token=aws.callback_token, body=body)
        assert ingest.lambda_handler(event, LambdaContext())["statusCode"] == 200
        # AND the SQS event source hands its message to the transfer function
        tally.phase = "transfer"
        use_only(aws, "TransferFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
        queue = aws.output("TransferQueue")
        (message,) = sqs.receive_message(QueueUrl=queue, AttributeNames=["All"])["Messages"]
        record = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
        }
        assert transfer.lambda_handler({"Records": [record]}, LambdaContext()) == {"batchItemFailures": []}
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    # AND the stream event source reads the changes and hands the matching ones to the events function
    tally.phase = "events"
    use_only(aws, "EventsFunction")
    arn = aws.stack.attributes[("TasksTable", "StreamArn")]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )
    changes = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    patterns = filters_of(aws.stack.function_spec("EventsFunction")["Events"]["TaskChanges"]["Properties"])
    delivered = [
        r
        for r in (lambda_record(c, arn, "us-east-1") for c in changes)
        if any(matches(p, r) for p in patterns)
    ]
    assert publish.lambda_handler({"Records": delivered}, LambdaContext()) == {"batchItemFailures": []}
    # THEN the video is stored
    tally.phase = "check"
    assert services.services().store.get("task-cost")["status"] == "STORED"
    # AND each phase made only the calls it needs
    callback, copy, events = tally.of("callback"), tally.of("transfer"), tally.of("events")
    report = {
        "callback": dict(callback),
        "transfer": dict(copy),
        "events": dict(events),
        "stream records": len(changes),
        "delivered to the events function": len(delivered),
        "total": sum(callback.values()) + sum(copy.values()) + sum(events.values()),
        "secret reads per cold start (all three functions)": tally.cold_start,
    }
    print("\nAWS requests for one stored video:\n" + json.dumps(report, indent=2))
    assert callback == Counter({"dynamodb:GetItem": 1, "dynamodb:UpdateItem": 2, "sqs:SendMessage": 1})
    assert copy["sqs:ReceiveMessage"] == 1 and copy["sqs:DeleteMessage"] == 1
    assert copy["s3:PutObject"] + copy["s3:CreateMultipartUpload"] == 1  # one object written
    assert events == Counter(
        {
            "dynamodbstreams:DescribeStream": 1,
            "dynamodbstreams:GetShardIterator": 1,
            "dynamodbstreams:GetRecords": 1,
            "events:PutEvents": 1,
        }
    )
    assert len(delivered) == 1  # the template's filter passes only the STORED change
    assert not any("Scan" in name for name in (*callback, *copy, *events))


def test_the_sample_stored_event_validates() -> None:
    # The event the schemas promise, built from the repository's sample stream record
    from tests.conftest import load_event
    from videohook.events import event_of_change

    event = event_of_change(load_event("stream_stored.json")["Records"][0])
    envelope = {"source": "videohook", "detail-type": event.detail_type, "detail": event.detail}
    assert check_event(envelope)["status"] == "STORED"
