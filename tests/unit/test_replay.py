"""Replays and the first video_url: a signed callback is accepted once, and its URL stays.

Driven through the Lambda entry points (ingest for callbacks, transfer for the queued
messages) on a template-built moto stack, with a real loopback video source and, where the
provider confirms a URL, the real-HTTP fake provider. docs/task-record.md "Callbacks,
duplicates and replays" is the contract.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import pytest

import ingest
import tasks
import transfer
from testkit.lambda_context import LambdaContext
from testkit.provider import RECORD_INFO_PATH, FakeProvider
from testkit.sqs import sqs_event
from testkit.video_source import VideoServer
from tests.conftest import FIXTURES, AwsWorld, answer_json, load_event, signed_callback
from videohook import services
from videohook.models import Callback

SUCCESS = "callback_success.json"
FAILURE = "callback_failure.json"
TASK = "task-replay"
VIDEO = (FIXTURES / "faststart.mp4").read_bytes()
API_KEY = "test-provider-key-0123456789abcdef"


@pytest.fixture
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


def success(url: str, task_id: str = TASK) -> dict:
    return {"code": 200, "msg": "MP4 generated successfully.", "data": {"task_id": task_id, "video_url": url}}


def failure(msg: str, code: int = 500, task_id: str = TASK) -> dict:
    return {"code": code, "msg": msg, "data": {"task_id": task_id, "video_url": None}}


def post(aws: AwsWorld, body: dict, stamp: int | None = None, name: str = SUCCESS) -> int:
    event = signed_callback(name, token=aws.callback_token, body=body, timestamp=stamp)
    return ingest.lambda_handler(event, LambdaContext())["statusCode"]


def deliver_queued(aws: AwsWorld, **env: str) -> dict:
    """Hand every queued transfer message to the transfer function, as Lambda's SQS source would."""
    messages = aws.queued_messages()
    assert messages, "nothing queued to deliver"
    aws.use_function("TransferFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true", **env)
    return transfer.lambda_handler(sqs_event(messages), LambdaContext())


def task(task_id: str = TASK) -> dict:
    return services.services().store.get(task_id)


def test_a_replayed_signature_cannot_rearm_a_failed_task_with_another_url(
    aws: AwsWorld, videos: VideoServer
) -> None:
    # GIVEN a signed callback naming U1, whose source answers 404 (an expired link), no API key
    u1 = videos.add("/u1.mp4", status=404)
    u2 = videos.add("/u2.mp4", VIDEO)
    aws.use_function("IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
    stamp = int(time.time())
    assert post(aws, success(u1), stamp) == 200
    # AND its transfer fails at once
    assert deliver_queued(aws) == {"batchItemFailures": []}
    failed = task()
    assert (failed["status"], failed["video_url"], failed["callbacks"]) == ("TRANSFER_FAILED", u1, 1)
    # WHEN the same timestamp and signature are presented again, within the window, naming U2
    aws.use_function("IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
    assert post(aws, success(u2), stamp) == 200
    # THEN the answer is 200 and nothing changed: no count, no message, no re-arm, U2 never fetched
    assert task() == failed
    assert aws.queued_messages() == []
    assert videos.requests_for("/u2.mp4") == []


def test_a_new_callback_requeues_a_failed_task_with_its_first_url(aws: AwsWorld, videos: VideoServer) -> None:
    # GIVEN a task whose transfer of U1 failed for good
    u1 = videos.add("/u1.mp4", status=404)
    u2 = videos.add("/u2.mp4", VIDEO)
    aws.use_function("IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
    assert post(aws, success(u1)) == 200
    deliver_queued(aws)
    assert task()["status"] == "TRANSFER_FAILED"
    # WHEN a genuinely new signed callback (a later timestamp) names U2
    aws.use_function("IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
    assert post(aws, success(u2), int(time.time()) + 1) == 200
    # THEN the task is queued again (counted) with the URL it already had: the first URL wins
    item = task()
    assert (item["status"], item["video_url"], item["callbacks"]) == ("RECEIVED", u1, 2)
    assert len(aws.queued_messages()) == 1


def test_a_replayed_failure_callback_does_not_overwrite_the_providers_message(aws: AwsWorld) -> None:
    # GIVEN a failure callback recorded as GENERATION_FAILED
    aws.use_function("IngestFunction")
    stamp = int(time.time())
    assert post(aws, failure("the source audio could not be found", 400), stamp, FAILURE) == 200
    before = task()
    assert (before["status"], before["provider_code"]) == ("GENERATION_FAILED", 400)
    # WHEN it is replayed with another code and message
    assert post(aws, failure("anything the replayer likes", 500), stamp, FAILURE) == 200
    # THEN nothing changed
    assert task() == before


def test_a_replayed_failure_after_a_success_changes_nothing(aws: AwsWorld) -> None:
    # GIVEN a RECEIVED task, then a (suspect) failure callback recorded per the rules
    aws.use_function("IngestFunction")
    assert post(aws, success("https://cdn.example.com/v.mp4")) == 200
    stamp = int(time.time()) + 2
    assert post(aws, failure("first failure"), stamp, FAILURE) == 200
    item = task()
    assert (item["status"], item["provider_code"], item["provider_msg"]) == ("RECEIVED", 500, "first failure")
    assert item["callbacks"] == 2
    # WHEN the failure callback is replayed with another message
    assert post(aws, failure("overwritten?", 503), stamp, FAILURE) == 200
    # THEN the provider's code and message stay, and it is not counted
    assert task() == item


def test_a_replay_changes_nothing_whatever_the_status(aws: AwsWorld) -> None:
    # GIVEN a RECEIVED task recorded from a signed callback
    aws.use_function("IngestFunction")
    stamp = int(time.time())
    assert post(aws, success("https://cdn.example.com/a.mp4"), stamp) == 200
    before = task()
    queued = len(aws.queued_messages())
    # WHEN the same signed callback arrives 5 more times, once with another URL
    for url in ["https://cdn.example.com/a.mp4"] * 4 + ["https://cdn.example.com/b.mp4"]:
        assert post(aws, success(url), stamp) == 200
    # THEN the record is exactly as before and no message was added
    assert task() == before
    assert queued == 1 and aws.queued_messages() == []


def test_a_replay_that_races_the_original_is_applied_once(aws: AwsWorld) -> None:
    # GIVEN a signed callback, and a copy of it applied between our read of the task and our write
    aws.use_function("IngestFunction")
    store = services.services().store
    stamp = str(int(time.time()))
    callback = Callback(200, "ok", TASK, "https://cdn.example.com/v.mp4", signed_at=stamp)
    real = store.client
    rival_outcomes = []

    class RacedOnce:
        def __getattr__(self, name: str):
            if name == "update_item" and not rival_outcomes:
                store.client = real

                def update_after_the_rival(**kwargs):
                    rival_outcomes.append(store.record_callback(callback))
                    return real.update_item(**kwargs)

                return update_after_the_rival
            return getattr(real, name)

    store.client = RacedOnce()
    # WHEN ours is recorded
    ours = store.record_callback(callback)
    # THEN the rival won; ours lost the conditional write, read again, and is a replay that
    # wrote nothing (it would only queue the transfer if the rival had not queued it yet)
    [rival] = rival_outcomes
    assert rival.queue_transfer and not rival.replayed
    assert ours.replayed
    item = task()
    assert (item["callbacks"], item["revision"], item["seen_timestamps"]) == (1, 1, [stamp])


def test_the_remembered_timestamps_stay_inside_the_signature_window(aws: AwsWorld) -> None:
    # GIVEN a store whose clock moves 100 s between callbacks, each signed at its own time
    aws.use_function("IngestFunction")
    store = services.services().store
    now = [time.time()]
    store.clock = lambda: now[0]
    for _ in range(30):
        stamp = str(int(now[0]))
        store.record_callback(Callback(200, "ok", TASK, "https://cdn.example.com/v.mp4", signed_at=stamp))
        now[0] += 100
    # THEN all were counted, but only the timestamps a replay could still present are kept
    item = task()
    assert item["callbacks"] == 30
    window = services.services().settings.signature_tolerance_seconds
    kept = [int(s) for s in item["seen_timestamps"]]
    assert 1 <= len(kept) <= window // 100 + 1
    assert all(s >= now[0] - 100 - window for s in kept)
    # AND they are machinery: GET /tasks/{task_id} does not show them
    shown = get_task(aws, TASK)
    assert shown["task_id"] == TASK and shown["callbacks"] == 30 and "seen_timestamps" not in shown


def get_task(aws: AwsWorld, task_id: str) -> dict:
    event = load_event("get_task.json")
    event["pathParameters"] = {"task_id": task_id}
    event["path"] = f"/tasks/{task_id}"
    aws.use_function("TasksFunction")
    answer = tasks.lambda_handler(event, LambdaContext())
    assert answer["statusCode"] == 200
    return answer_json(answer)


@pytest.fixture
def provider(provider_server: FakeProvider) -> FakeProvider:
    return provider_server.reset(api_key=API_KEY)


def test_the_provider_may_confirm_a_new_url_and_the_record_says_what_was_copied(
    aws: AwsWorld, videos: VideoServer, provider: FakeProvider
) -> None:
    # GIVEN a callback naming U1, while the provider's record-info reports U2 for the task
    u1 = videos.add("/u1.mp4", VIDEO[:100])
    u2 = videos.add("/u2.mp4", VIDEO)
    provider.script(TASK, [provider.success(u2)])
    keyed = {
        "PROVIDER_API_BASE": provider.base_url,
        "PROVIDER_API_KEY": API_KEY,
        "PROVIDER_API_KEY_SECRET_ARN": "",
    }
    aws.use_function("IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true", **keyed)
    assert post(aws, success(u1)) == 200
    assert task()["video_url"] == u1
    # WHEN the transfer confirms the task and copies
    assert deliver_queued(aws, **keyed) == {"batchItemFailures": []}
    # THEN it copied the provider's URL, and the record's video_url says so
    item = task()
    assert item["status"] == "STORED" and item["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert item["video_url"] == u2
    assert videos.requests_for("/u1.mp4") == []
    assert len(provider.requests_to(RECORD_INFO_PATH, TASK)) == 1


def test_unsigned_callbacks_are_still_counted_each_time(aws: AwsWorld) -> None:
    # GIVEN a stack with a URL token but no HMAC key: callbacks carry no signed timestamp
    aws.use_function("IngestFunction", WEBHOOK_HMAC_SECRET_ARN="", WEBHOOK_HMAC_KEYS="")
    body = json.dumps(success("https://cdn.example.com/v.mp4"))
    for _ in range(3):
        event = load_event(SUCCESS)
        event["body"] = body
        event["queryStringParameters"] = {"token": aws.callback_token}
        event["multiValueQueryStringParameters"] = {"token": [aws.callback_token]}
        assert ingest.lambda_handler(event, LambdaContext())["statusCode"] == 200
    # THEN each delivery is counted (a replay can only be told apart by its signed timestamp)
    assert task()["callbacks"] == 3
    assert len(aws.queued_messages()) == 1
