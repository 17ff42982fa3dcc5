"""Task events: the table's stream -> the events function -> EventBridge, on moto.

The changes are made by the real store (as the ingest and transfer functions make them),
read back from the table's stream as Lambda's event source would (infra/local/streams.py,
with the template's filter), handed to the events function's handler, and received by a
rule's SQS target on the bus, where every event is checked against docs/schemas.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from jsonschema import ValidationError

import ingest
from infra.local.streams import filters_of, lambda_record, matches
from testkit.lambda_context import LambdaContext
from tests.conftest import AwsWorld, load_event, signed_callback
from tests.event_schemas import check_event, validator
from videohook import services
from videohook.errors import ConfigError
from videohook.events import bus_name, event_of_change, without_urls
from videohook.models import Callback
from videohook.store import StoredVideo

SIGNED_URL = "https://cdn.example.com/v/clip.mp4?X-Amz-Signature=SECRETSIG&token=SECRETTOKEN"


@dataclass
class Bus:
    """The events function over the stream, and a rule's SQS target on the default bus."""

    aws: AwsWorld
    handler: Any
    queue_url: str
    after: str | None = None

    def changes(self) -> list[dict[str, Any]]:
        """Stream records since the last call, as Lambda delivers them (template filter applied)."""
        # botocore's account-based endpoint for streams is one moto's in-process mock does not know.
        streams = self.aws.session.client(
            "dynamodbstreams", config=Config(account_id_endpoint_mode="disabled")
        )
        arn = self.aws.stack.attributes[("TasksTable", "StreamArn")]
        (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        position = (
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.after}
            if self.after
            else {"ShardIteratorType": "TRIM_HORIZON"}
        )
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], **position)
        records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
        if records:
            self.after = records[-1]["dynamodb"]["SequenceNumber"]
        props = self.aws.stack.function_spec("EventsFunction")["Events"]["TaskChanges"]["Properties"]
        patterns = filters_of(props)
        delivered = [lambda_record(r, arn, "us-east-1") for r in records]
        return [r for r in delivered if any(matches(p, r) for p in patterns)]

    def run(self, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        batch = self.changes() if records is None else records
        if not batch:
            return {"batchItemFailures": []}  # Lambda never invokes with an empty batch
        return self.handler({"Records": batch}, LambdaContext())

    def received(self) -> list[dict[str, Any]]:
        """Every event the rule's target got since the last call, each checked against its schema."""
        sqs = self.aws.client("sqs")
        events = []
        while True:
            answer = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return events
            for message in messages:
                envelope = json.loads(message["Body"])
                check_event(envelope)
                events.append(envelope)
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def bus(aws: AwsWorld) -> Iterator[Bus]:
    aws.use_function("EventsFunction")
    module_name, name = aws.stack.function_handler("EventsFunction").rsplit(".", 1)
    module = importlib.import_module(module_name)
    module.publisher.cache_clear()
    queue_url = aws.client("sqs").create_queue(QueueName="owner-app")["QueueUrl"]
    queue_arn = aws.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    events = aws.client("events")
    events.put_rule(Name="videohook-to-owner", EventPattern=json.dumps({"source": ["videohook"]}))
    events.put_targets(
        Rule="videohook-to-owner", Targets=[{"Id": "q", "Arn": queue_arn["Attributes"]["QueueArn"]}]
    )
    yield Bus(aws, getattr(module, name), queue_url)
    module.publisher.cache_clear()


def _store_video(task_id: str, *, audio_id: str | None = None) -> dict[str, Any]:
    store = services.services().store
    if audio_id:
        store.record_submitted(task_id, audio_id)
    store.record_callback(Callback(200, "success", task_id, SIGNED_URL))
    assert store.acquire_lease(task_id, "worker-1", 60) is not None
    video = StoredVideo(
        bucket="videohook-videosbucket",
        key=f"videos/{task_id}.mp4",
        version_id="v1",
        sha256="ab" * 32,
        size=1234567,
        duration_seconds=12.345,
        width=1080,
        height=1920,
    )
    return store.mark_stored(task_id, "worker-1", video)


def test_a_stored_video_is_announced_once_with_the_records_fields(bus: Bus) -> None:
    # GIVEN a task submitted, called back, copied and stored, then called back again (a duplicate)
    _store_video("task-stored", audio_id="audio-7")
    store = services.services().store
    store.record_callback(Callback(200, "success", "task-stored", SIGNED_URL))
    record = store.get("task-stored")
    # WHEN the events function reads the stream
    assert bus.run() == {"batchItemFailures": []}
    # THEN exactly one "Video Stored" event arrived, valid, its fields equal to the record
    (event,) = bus.received()
    assert event["detail-type"] == "Video Stored"
    detail = event["detail"]
    for name in ("task_id", "status", "audio_id", "s3_bucket", "s3_key", "s3_version_id", "sha256", "size"):
        assert detail[name] == record[name], name
    for name in ("duration_seconds", "width", "height", "rotation", "stored_at"):
        assert detail[name] == record[name], name
    assert detail["source_host"] == "cdn.example.com"
    assert "SECRET" not in json.dumps(event)
    # AND nothing else is published when the stream is read again
    assert bus.run() == {"batchItemFailures": []}
    assert bus.received() == []


def test_failures_are_announced_and_duplicates_are_not(bus: Bus) -> None:
    # GIVEN a failure callback, the same callback again, and a transfer that failed for good
    store = services.services().store
    store.record_callback(
        Callback(451, "content refused, see https://api.example.com/x?key=SECRETKEY", "gen", None)
    )
    store.record_callback(Callback(451, "content refused", "gen", None))
    store.record_callback(Callback(200, "success", "xfer", SIGNED_URL))
    store.acquire_lease("xfer", "worker-1", 60)
    store.mark_transfer_failed("xfer", "worker-1", f"the source answered 404 for {SIGNED_URL}")
    # WHEN the events function reads the stream
    bus.run()
    # THEN one event per failure, with the provider's code and the error, and no secret
    events = {e["detail-type"]: e["detail"] for e in bus.received()}
    assert set(events) == {"Video Generation Failed", "Video Transfer Failed"}
    generation, transfer = events["Video Generation Failed"], events["Video Transfer Failed"]
    assert (generation["task_id"], generation["provider_code"]) == ("gen", 451)
    assert generation["provider_msg"] == "content refused, see https://api.example.com/..."
    assert (transfer["task_id"], transfer["attempts"]) == ("xfer", 1)
    assert transfer["error"] == "the source answered 404 for https://cdn.example.com/..."
    assert "SECRET" not in json.dumps(events)


def test_a_signed_url_without_its_scheme_in_the_providers_message_is_not_published(bus: Bus) -> None:
    # GIVEN a failure callback whose message quotes the provider's signed link without a scheme,
    # as a plain and as a URL-encoded query, posted through the ingest function
    bus.aws.use_function("IngestFunction")
    msg = (
        "render failed for cdn.example.com/v/clip.mp4?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIASECRET "
        "(retry cdn.example.com%2Fv.mp4%3FSignature%3DSECRETSIG2)"
    )
    body = {"code": 501, "msg": msg, "data": {"task_id": "gen-schemeless"}}
    event = signed_callback("callback_failure.json", token=bus.aws.callback_token, body=body)
    assert ingest.lambda_handler(event, LambdaContext())["statusCode"] == 200
    # WHEN the events function reads the stream
    bus.aws.use_function("EventsFunction")
    assert bus.run() == {"batchItemFailures": []}
    # THEN the one event names the host and path, never the query that signs the link
    (published,) = bus.received()
    assert published["detail"]["provider_msg"] == (
        "render failed for cdn.example.com/v/clip.mp4?... (retry cdn.example.com%2Fv.mp4?...)"
    )
    assert "SECRET" not in json.dumps(published)


def test_every_delivery_of_one_change_has_the_same_event_id(bus: Bus) -> None:
    # GIVEN a stored video's change on the stream
    _store_video("task-twice")
    records = bus.changes()
    # WHEN Lambda delivers the same batch twice (a retry) and the change is read once more
    bus.run(records)
    bus.run(records)
    # THEN two deliveries, one event_id, which consumers dedupe on
    ids = [e["detail"]["event_id"] for e in bus.received()]
    assert len(ids) == 2 and len(set(ids)) == 1
    # AND another change of the same task would have another id
    other = dict(records[-1], dynamodb=dict(records[-1]["dynamodb"]))
    other["dynamodb"]["NewImage"] = dict(other["dynamodb"]["NewImage"], revision={"N": "99"})
    assert event_of_change(other).event_id != ids[0]


def test_a_poisoned_record_fails_alone(bus: Bus) -> None:
    # GIVEN a batch: a good change, a STORED record without its S3 fields, another good change
    _store_video("good-1")
    bus.aws.client("dynamodb").put_item(
        TableName=bus.aws.output("TasksTable"),
        Item={
            "task_id": {"S": "poison"},
            "status": {"S": "STORED"},
            "updated_at": {"S": "2026-01-01T00:00:00.000Z"},
        },
    )
    _store_video("good-2")
    records = bus.changes()
    poison = next(r for r in records if r["dynamodb"]["Keys"]["task_id"]["S"] == "poison")
    # WHEN the events function handles it
    answer = bus.run(records)
    # THEN only the poisoned record is reported failed (Lambda retries from it), the others published
    assert answer == {"batchItemFailures": [{"itemIdentifier": poison["dynamodb"]["SequenceNumber"]}]}
    assert sorted(e["detail"]["task_id"] for e in bus.received()) == ["good-1", "good-2"]


def _refuse_put_events(client: Any) -> list[int]:
    """Make EventBridge answer PutEvents with a 500 until the returned list is cleared."""
    refusals = [1]

    def refuse(**_: Any) -> Any:
        if not refusals:
            return None
        response = AWSResponse("https://events", 500, {}, None)
        return response, {"Error": {"Code": "InternalException", "Message": "injected"}}

    client.meta.events.register("before-call.events.PutEvents", refuse)
    return refusals


def test_a_change_eventbridge_refused_is_reported_and_published_on_retry(bus: Bus) -> None:
    # GIVEN EventBridge failing, and a stored video on the stream
    refusals = _refuse_put_events(services.aws.client("events"))
    _store_video("task-retried")
    records = bus.changes()
    # WHEN the events function handles the batch
    answer = bus.run(records)
    # THEN the change is reported failed and nothing was published
    assert answer["batchItemFailures"] == [{"itemIdentifier": records[-1]["dynamodb"]["SequenceNumber"]}]
    assert bus.received() == []
    # WHEN EventBridge is back and Lambda retries from the failed record
    refusals.clear()
    assert bus.run(records[-1:]) == {"batchItemFailures": []}
    # THEN the event arrives
    assert [e["detail"]["task_id"] for e in bus.received()] == ["task-retried"]


def test_a_bad_bus_name_fails_with_one_line_naming_the_variable() -> None:
    assert bus_name({}) == "default"
    assert bus_name({"EVENT_BUS_NAME": "orders"}) == "orders"
    with pytest.raises(ConfigError, match="EVENT_BUS_NAME"):
        bus_name({"EVENT_BUS_NAME": "no spaces allowed"})


def test_urls_are_cut_to_their_host() -> None:
    assert without_urls("failed: https://h.example/p?sig=1 and http://x.test:8080/a") == (
        "failed: https://h.example/... and http://x.test/..."
    )


def test_the_schemas_refuse_what_the_contract_does_not_allow() -> None:
    # GIVEN a valid Video Stored detail (the sample event's)
    stored = event_of_change(load_event("stream_stored.json")["Records"][0])
    detail = stored.detail
    validator("Video Stored").validate(detail)
    # THEN a signed URL, a missing field or a wrong type is refused
    for bad in (
        {**detail, "video_url": SIGNED_URL},
        {k: v for k, v in detail.items() if k != "sha256"},
        {**detail, "size": "12"},
        {**detail, "status": "RECEIVED"},
    ):
        with pytest.raises(ValidationError):
            validator("Video Stored").validate(bad)
