"""The callback path through the ingest function's Lambda entry point, on moto.

Every row of docs/api.md's answers table, the authentication rules, and the task-store
guarantees (duplicates, failure callbacks, STORED is final, AWS faults answer 500).
"""

from __future__ import annotations

import base64
import json
import time

import pytest

import ingest
import tasks
from testkit.aws import client_error
from testkit.lambda_context import LambdaContext
from tests.conftest import HMAC_KEY, AwsWorld, answer_json, load_event, signed_callback
from videohook import services
from videohook.models import Callback

SUCCESS = "callback_success.json"
FAILURE = "callback_failure.json"


def invoke(event: dict) -> tuple[int, dict]:
    answer = ingest.lambda_handler(event, LambdaContext())
    return answer["statusCode"], answer_json(answer)


def invoke_tasks(event: dict) -> tuple[int, dict]:
    """The task routes are the tasks function's (same process environment: moto's stack)."""
    answer = tasks.lambda_handler(event, LambdaContext())
    return answer["statusCode"], answer_json(answer)


def success_body(task_id: str = "task-1", url: str = "https://cdn.example.com/v/1.mp4", **extra) -> dict:
    return {"code": 200, "msg": "ok", "data": {"task_id": task_id, "video_url": url}, **extra}


@pytest.fixture
def world(aws: AwsWorld) -> AwsWorld:
    aws.use_function("IngestFunction")
    return aws


def record(world: AwsWorld, task_id: str) -> dict:
    return services.services().store.get(task_id)


# --- accepted ------------------------------------------------------------------------


def test_success_callback_is_recorded_and_queued(world: AwsWorld) -> None:
    # GIVEN the sample success callback, signed and carrying the deployed token
    event = signed_callback(SUCCESS, token=world.callback_token)
    # WHEN the provider posts it
    status, body = invoke(event)
    # THEN it is accepted, recorded RECEIVED with its URL, and one transfer is queued
    assert status == 200
    assert body == {"status": "received", "task_id": "taskId_774b9aa0422f"}
    item = record(world, "taskId_774b9aa0422f")
    assert item["status"] == "RECEIVED"
    assert item["video_url"] == "https://cdn.example.com/videos/video_847715e66259.mp4"
    assert item["callbacks"] == 1 and item["provider_code"] == 200
    assert item["created_at"].endswith("Z")
    messages = world.queued_messages()
    assert [json.loads(m["Body"]) for m in messages] == [{"task_id": "taskId_774b9aa0422f"}]


def test_unknown_fields_are_ignored_and_msg_may_be_null(world: AwsWorld) -> None:
    # GIVEN a callback with extra fields everywhere and a null msg
    body = success_body(extra_top=1)
    body["msg"] = None
    body["data"]["duration"] = 12.5
    # WHEN it is posted
    status, _ = invoke(signed_callback(SUCCESS, token=world.callback_token, body=body))
    # THEN it is accepted, msg read as empty
    assert status == 200
    assert record(world, "task-1")["provider_msg"] == ""


def test_hundred_duplicates_queue_one_transfer(world: AwsWorld) -> None:
    # GIVEN one callback delivered 100 times
    token = world.callback_token
    # WHEN each delivery is posted
    statuses = {invoke(signed_callback(SUCCESS, token=token))[0] for _ in range(100)}
    # THEN every delivery is answered 200, counted, and exactly one message is queued
    assert statuses == {200}
    assert record(world, "taskId_774b9aa0422f")["callbacks"] == 100
    assert len(world.queued_messages()) == 1


def test_first_video_url_wins_while_received(world: AwsWorld) -> None:
    # GIVEN a recorded task
    token = world.callback_token
    invoke(signed_callback(SUCCESS, token=token, body=success_body(url="https://cdn.example.com/a.mp4")))
    # WHEN a second callback names another URL
    status, _ = invoke(
        signed_callback(SUCCESS, token=token, body=success_body(url="https://cdn.example.com/b.mp4"))
    )
    # THEN it is accepted but the first URL stays and nothing more is queued
    assert status == 200
    assert record(world, "task-1")["video_url"] == "https://cdn.example.com/a.mp4"
    assert len(world.queued_messages()) == 1


@pytest.mark.parametrize("code", [400, 401, 429, 451, 500])
def test_failure_callback_records_generation_failed(world: AwsWorld, code: int) -> None:
    # GIVEN a failure callback with the provider's code, and no video_url
    body = {"code": code, "msg": f"provider said {code}", "data": {"task_id": "task-f", "video_url": None}}
    # WHEN it is posted
    status, answer = invoke(signed_callback(FAILURE, token=world.callback_token, body=body))
    # THEN it is accepted, GENERATION_FAILED with code and message, and nothing is queued
    assert status == 200 and answer["status"] == "received"
    item = record(world, "task-f")
    assert (item["status"], item["provider_code"], item["provider_msg"]) == (
        "GENERATION_FAILED",
        code,
        f"provider said {code}",
    )
    assert world.queued_messages() == []


def test_sample_failure_event_is_accepted(world: AwsWorld) -> None:
    status, _ = invoke(signed_callback(FAILURE, token=world.callback_token))
    assert status == 200
    assert record(world, "taskId_5f2c0d1e9a77")["status"] == "GENERATION_FAILED"


def test_failure_after_stored_changes_nothing_but_the_count(world: AwsWorld) -> None:
    # GIVEN a task already STORED
    token = world.callback_token
    invoke(signed_callback(SUCCESS, token=token, body=success_body()))
    store = services.services().store
    lease = store.acquire_lease("task-1", "worker", 60)
    assert lease is not None
    from videohook.models import StoredVideo

    store.mark_stored(
        "task-1", "worker", StoredVideo("b", "videos/task-1.mp4", "v1", "ab" * 32, 10, 1.0, 2, 2)
    )
    # WHEN a failure callback and then a success callback with another URL arrive
    failure = {"code": 500, "msg": "boom", "data": {"task_id": "task-1"}}
    assert invoke(signed_callback(FAILURE, token=token, body=failure))[0] == 200
    assert (
        invoke(signed_callback(SUCCESS, token=token, body=success_body(url="https://cdn.example.com/x.mp4")))[
            0
        ]
        == 200
    )
    # THEN the task is still STORED with its first URL; the failure's code and message are
    # recorded (docs/task-record.md), and callbacks grew
    item = record(world, "task-1")
    assert item["status"] == "STORED"
    assert (item["provider_code"], item["provider_msg"]) == (500, "boom")
    assert item["video_url"] == "https://cdn.example.com/v/1.mp4"
    assert item["callbacks"] == 3
    assert len(world.queued_messages()) == 1


def test_a_replay_of_a_callback_whose_send_failed_still_queues_it(world: AwsWorld) -> None:
    # GIVEN a signed callback recorded RECEIVED whose transfer message could not be sent (500)
    queue = services.services().queue
    good_url = queue.queue_url
    queue.queue_url = good_url + "-missing"
    event = signed_callback(SUCCESS, token=world.callback_token)
    assert invoke(event)[0] == 500
    # WHEN the very same signed request arrives again once SQS is back
    queue.queue_url = good_url
    assert invoke(event)[0] == 200
    # THEN it is not counted again, but the transfer the first one could not queue is queued
    item = record(world, "taskId_774b9aa0422f")
    assert item["callbacks"] == 1 and item["transfer_queued"] is True
    assert len(world.queued_messages()) == 1


def test_callback_for_transfer_failed_task_queues_it_again(world: AwsWorld) -> None:
    # GIVEN a task whose transfer failed for good
    token = world.callback_token
    invoke(signed_callback(SUCCESS, token=token, body=success_body()))
    store = services.services().store
    store.acquire_lease("task-1", "w", 60)
    store.mark_transfer_failed("task-1", "w", "link expired")
    world.queued_messages()
    # WHEN the provider calls back again, naming another link
    invoke(signed_callback(SUCCESS, token=token, body=success_body(url="https://cdn.example.com/new.mp4")))
    # THEN the task is RECEIVED again and a new transfer is queued, with the first URL: no
    # callback changes a task's video_url (only the provider's record-info may)
    item = record(world, "task-1")
    assert item["status"] == "RECEIVED" and item["video_url"] == "https://cdn.example.com/v/1.mp4"
    assert len(world.queued_messages()) == 1


# --- 400 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_shape"),
        ('{"code": "200", "data": {"task_id": "t"}}', "invalid_code"),
        ('{"code": true, "data": {"task_id": "t"}}', "invalid_code"),
        (
            '{"code": 200, "msg": 5, "data": {"task_id": "t", "video_url": "https://a.example.com/v"}}',
            "invalid_msg",
        ),
        ('{"code": 200}', "invalid_shape"),
        (
            '{"code": 200, "data": {"task_id": "../etc", "video_url": "https://a.example.com/v"}}',
            "invalid_task_id",
        ),
        (
            '{"code": 200, "data": {"task_id": "' + "a" * 129 + '", "video_url": "https://a.example.com/v"}}',
            "invalid_task_id",
        ),
        ('{"code": 200, "data": {"task_id": "t"}}', "missing_video_url"),
        ('{"code": 200, "data": {"task_id": "t", "video_url": ""}}', "missing_video_url"),
        (
            '{"code": 200, "data": {"task_id": "t", "video_url": "http://a.example.com/v.mp4"}}',
            "video_url_refused",
        ),
        (
            '{"code": 200, "data": {"task_id": "t", "video_url": "https://127.0.0.1/v.mp4"}}',
            "video_url_refused",
        ),
        (
            '{"code": 200, "data": {"task_id": "t", "video_url": "https://169.254.169.254/"}}',
            "video_url_refused",
        ),
        (
            '{"code": 200, "data": {"task_id": "t", "video_url": "https://a.example.com/'
            + "x" * 2048
            + '"}}',
            "video_url_refused",
        ),
    ],
)
def test_bad_bodies_answer_400_with_a_machine_code(world: AwsWorld, raw: str, code: str) -> None:
    # GIVEN a malformed body (the signature is over task "t", the token is right)
    event = signed_callback(SUCCESS, token=world.callback_token, body=success_body("t"))
    event["body"] = raw
    # WHEN it is posted
    status, body = invoke(event)
    # THEN 400 with the machine code and a human message, and nothing is recorded or queued
    assert status == 400
    assert body["error"] == code and body["message"]
    assert world.queued_messages() == []


# --- 401 -------------------------------------------------------------------------------


def test_bad_signature_event_is_refused(world: AwsWorld) -> None:
    event = load_event("callback_bad_signature.json")
    event["headers"]["X-Webhook-Timestamp"] = str(int(time.time()))
    event["queryStringParameters"] = {"token": world.callback_token}
    status, body = invoke(event)
    assert (status, body["error"]) == (401, "bad_signature")
    assert record(world, "taskId_774b9aa0422f") is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda e: e["headers"].pop("X-Webhook-Signature"), "missing_signature"),
        (lambda e: e["headers"].pop("X-Webhook-Timestamp"), "missing_signature"),
        (lambda e: e["headers"].update({"X-Webhook-Timestamp": "yesterday"}), "bad_timestamp"),
        (lambda e: e.update(queryStringParameters=None), "missing_token"),
        (lambda e: e.update(queryStringParameters={"token": "wrong"}), "bad_token"),
    ],
)
def test_missing_or_wrong_credentials_answer_401(world: AwsWorld, change, code: str) -> None:
    # GIVEN a good callback with one credential removed or spoiled
    event = signed_callback(SUCCESS, token=world.callback_token)
    change(event)
    # WHEN it is posted
    status, body = invoke(event)
    # THEN 401 with the reason's code, and the body never echoes a secret
    assert (status, body["error"]) == (401, code)
    assert world.callback_token not in json.dumps(body) and HMAC_KEY not in json.dumps(body)
    assert record(world, "taskId_774b9aa0422f") is None


# Margins of 10 s: the clock moves between signing and checking on a loaded machine.
@pytest.mark.parametrize("skew", [-310, 310, -3600, 86400])
def test_stale_and_future_timestamps_answer_401(world: AwsWorld, skew: int) -> None:
    event = signed_callback(SUCCESS, token=world.callback_token, timestamp=int(time.time()) + skew)
    status, body = invoke(event)
    assert (status, body["error"]) == (401, "stale_timestamp")


@pytest.mark.parametrize("skew", [-290, 0, 290])
def test_timestamps_inside_the_window_are_accepted(world: AwsWorld, skew: int) -> None:
    event = signed_callback(SUCCESS, token=world.callback_token, timestamp=int(time.time()) + skew)
    assert invoke(event)[0] == 200


def test_header_names_are_case_insensitive(world: AwsWorld) -> None:
    # GIVEN signature headers in lower and odd case, as proxies may rewrite them
    event = signed_callback(SUCCESS, token=world.callback_token)
    headers = event["headers"]
    headers["x-webhook-timestamp"] = headers.pop("X-Webhook-Timestamp")
    headers["X-WEBHOOK-SIGNATURE"] = headers.pop("X-Webhook-Signature")
    headers["content-TYPE"] = headers.pop("Content-Type")
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    # WHEN it is posted THEN it is accepted
    assert invoke(event)[0] == 200


def test_key_rotation_accepts_every_configured_key(aws: AwsWorld) -> None:
    # GIVEN two HMAC keys configured during a rotation
    aws.use_function("IngestFunction", WEBHOOK_HMAC_SECRET_ARN="", WEBHOOK_HMAC_KEYS="old-key, new-key")
    token = aws.callback_token
    # WHEN callbacks signed with either key, or a third key, arrive
    old = invoke(signed_callback(SUCCESS, token=token, key="old-key"))[0]
    new = invoke(signed_callback(SUCCESS, token=token, key="new-key"))[0]
    other = invoke(signed_callback(SUCCESS, token=token, key="retired-key"))[0]
    # THEN both current keys pass and the retired one is refused
    assert (old, new, other) == (200, 200, 401)


def test_without_any_authentication_configured_callbacks_are_accepted(aws: AwsWorld) -> None:
    # GIVEN local development: no token and no HMAC key
    aws.use_function("IngestFunction", CALLBACK_TOKEN_SECRET_ARN="", WEBHOOK_HMAC_SECRET_ARN="")
    event = signed_callback(SUCCESS, token=None)
    event["headers"].pop("X-Webhook-Signature")
    # WHEN an unsigned callback arrives THEN it is accepted
    assert invoke(event)[0] == 200


def test_unknown_tasks_refused_when_configured(aws: AwsWorld) -> None:
    aws.use_function("IngestFunction", ACCEPT_UNKNOWN_TASKS="false")
    status, body = invoke(signed_callback(SUCCESS, token=aws.callback_token))
    assert (status, body["error"]) == (401, "unknown_task")


# --- 413 / 415 --------------------------------------------------------------------------


def test_body_over_64_kib_answers_413(world: AwsWorld) -> None:
    body = success_body()
    body["padding"] = "x" * (64 * 1024)
    status, answer = invoke(signed_callback(SUCCESS, token=world.callback_token, body=body))
    assert (status, answer["error"]) == (413, "body_too_large")


def test_body_of_exactly_64_kib_is_accepted(world: AwsWorld) -> None:
    body = success_body()
    body["padding"] = ""
    size = len(json.dumps(body))
    body["padding"] = "x" * (64 * 1024 - size)
    assert invoke(signed_callback(SUCCESS, token=world.callback_token, body=body))[0] == 200


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_content_type_answers_415(world: AwsWorld, content_type: str | None) -> None:
    event = signed_callback(SUCCESS, token=world.callback_token)
    event["headers"].pop("Content-Type")
    if content_type:
        event["headers"]["Content-Type"] = content_type
    status, body = invoke(event)
    assert (status, body["error"]) == (415, "unsupported_media_type")


def test_json_with_charset_and_base64_body_is_accepted(world: AwsWorld) -> None:
    event = signed_callback(SUCCESS, token=world.callback_token)
    event["headers"]["Content-Type"] = "application/json; charset=utf-8"
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert invoke(event)[0] == 200


# --- 500: AWS faults, then the provider's retry succeeds -------------------------------------


def test_unreachable_table_answers_500_and_the_retry_succeeds(world: AwsWorld, monkeypatch) -> None:
    # GIVEN DynamoDB failing
    store = services.services().store
    real = store.client

    class Down:
        def __getattr__(self, name):
            def fail(**_):
                raise client_error(name, "InternalServerError")

            return fail

    store.client = Down()
    event = signed_callback(SUCCESS, token=world.callback_token)
    # WHEN the callback arrives THEN 500 without details
    status, body = invoke(event)
    assert status == 500 and body["error"] == "service_unavailable"
    assert "InternalServerError" not in json.dumps(body)
    # WHEN DynamoDB is back and the provider retries THEN the task is recorded and queued once
    store.client = real
    assert invoke(event)[0] == 200
    assert record(world, "taskId_774b9aa0422f")["status"] == "RECEIVED"
    assert len(world.queued_messages()) == 1


def test_unreachable_queue_answers_500_and_the_retry_queues(world: AwsWorld) -> None:
    # GIVEN SQS failing after the task was recorded
    queue = services.services().queue
    good_url = queue.queue_url
    queue.queue_url = good_url + "-missing"
    event = signed_callback(SUCCESS, token=world.callback_token)
    # WHEN the callback arrives THEN 500, and the task waits RECEIVED with nothing queued
    assert invoke(event)[0] == 500
    assert record(world, "taskId_774b9aa0422f")["status"] == "RECEIVED"
    assert world.queued_messages() == []
    # WHEN SQS is back and the provider retries (each retry signed afresh) THEN the transfer is queued, once
    queue.queue_url = good_url
    assert invoke(signed_callback(SUCCESS, token=world.callback_token))[0] == 200
    assert invoke(signed_callback(SUCCESS, token=world.callback_token))[0] == 200
    assert len(world.queued_messages()) == 1
    assert record(world, "taskId_774b9aa0422f")["callbacks"] == 3


# --- GET /tasks/{task_id} --------------------------------------------------------------------


def test_get_task_answers_404_then_the_record(world: AwsWorld) -> None:
    event = load_event("get_task.json")
    assert invoke_tasks(event)[0] == 404
    invoke(signed_callback(SUCCESS, token=world.callback_token))
    status, body = invoke_tasks(event)
    assert status == 200 and body["status"] == "RECEIVED" and "download_url" not in body
    assert "revision" not in body and "lease_owner" not in body


def test_get_stored_task_has_a_presigned_download_url(world: AwsWorld) -> None:
    from videohook.models import StoredVideo

    invoke(signed_callback(SUCCESS, token=world.callback_token))
    store = services.services().store
    store.acquire_lease("taskId_774b9aa0422f", "w", 60)
    bucket = world.output("VideosBucket")
    store.mark_stored(
        "taskId_774b9aa0422f",
        "w",
        StoredVideo(bucket, "videos/taskId_774b9aa0422f.mp4", None, "0" * 64, 5, 4.0, 320, 240),
    )
    status, body = invoke_tasks(load_event("get_task.json"))
    assert status == 200 and body["status"] == "STORED"
    assert body["download_url"].startswith("https://") and "X-Amz-Expires=900" in body["download_url"]
    assert body["width"] == 320 and body["duration_seconds"] == 4.0


@pytest.mark.parametrize("task_id", ["bad id!", "-leading-dash", "a" * 129])
def test_get_task_with_an_id_no_task_can_have_answers_404(world: AwsWorld, task_id: str) -> None:
    # GIVEN an id outside the task id pattern (so no task can have it)
    event = load_event("get_task.json")
    event["path"] = f"/tasks/{task_id}"
    event["pathParameters"] = {"task_id": task_id}
    # WHEN it is looked up
    status, body = invoke_tasks(event)
    # THEN it is an unknown task: 404, as for any other unknown id
    assert (status, body["error"]) == (404, "task_not_found")


def test_a_text_body_holding_a_lone_surrogate_answers_400(world: AwsWorld) -> None:
    # GIVEN a callback event whose text body holds a lone surrogate (no UTF-8 encoding exists)
    event = signed_callback(SUCCESS, token=world.callback_token)
    event["body"] = event["body"][:-1] + ', "x": "\ud800"}'
    # WHEN it is posted THEN it is refused as bad JSON, not answered 500
    status, body = invoke(event)
    assert (status, body["error"]) == (400, "invalid_json")


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_bodies_answer_400(world: AwsWorld, depth: int) -> None:
    # GIVEN a callback whose extra field nests lists very deeply
    event = signed_callback(SUCCESS, token=world.callback_token)
    event["body"] = event["body"][:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    # WHEN it is posted THEN it is refused as bad JSON, not crashed on
    status, body = invoke(event)
    assert (status, body["error"]) == (400, "invalid_json")


def test_success_after_generation_failed_is_only_counted(world: AwsWorld) -> None:
    # GIVEN a task the provider reported as failed
    token = world.callback_token
    failure = {"code": 451, "msg": "no audio", "data": {"task_id": "task-1"}}
    assert invoke(signed_callback(FAILURE, token=token, body=failure))[0] == 200
    # WHEN a success callback for it arrives (one callback stage exists: this one is suspect)
    assert invoke(signed_callback(SUCCESS, token=token, body=success_body()))[0] == 200
    # THEN it stays GENERATION_FAILED, counted, with nothing queued
    item = record(world, "task-1")
    assert (item["status"], item["callbacks"], item["provider_code"]) == ("GENERATION_FAILED", 2, 451)
    assert world.queued_messages() == []


def test_a_callback_that_loses_a_race_is_applied_again(world: AwsWorld) -> None:
    # GIVEN a recorded task, and another delivery that changes it between our read and our write
    token = world.callback_token
    invoke(signed_callback(SUCCESS, token=token, body=success_body()))
    store = services.services().store
    real = store.client
    raced = []

    class RacedOnce:
        def __getattr__(self, name):
            if name == "update_item" and not raced:
                raced.append(True)
                store.client = real
                real_update = real.update_item

                def update_after_a_rival(**kwargs):
                    rival = Callback(200, "ok", "task-1", "https://cdn.example.com/v/1.mp4")
                    store.record_callback(rival)  # bumps the revision our write was based on
                    return real_update(**kwargs)

                return update_after_a_rival
            return getattr(real, name)

    store.client = RacedOnce()
    # WHEN our duplicate is posted
    assert invoke(signed_callback(SUCCESS, token=token, body=success_body()))[0] == 200
    # THEN its first write lost the race and was re-planned: both deliveries are counted once
    assert raced and record(world, "task-1")["callbacks"] == 3
    assert len(world.queued_messages()) == 1
