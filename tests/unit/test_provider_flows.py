"""The provider flows through the Lambda entry points, on moto and a real-HTTP fake provider.

`POST /tasks` (tasks), the confirmation of a callback's `video_url` before a copy (transfer),
reconcile (the scheduled function), and `ACCEPT_UNKNOWN_TASKS=false`: each is driven with the
sample events of `events/`, against a template-built stack on moto, a `FakeProvider` on
127.0.0.1 and, where a video is copied, a loopback video source.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

import ingest
import reconcile
import tasks
import transfer
from testkit.clock import Clock
from testkit.lambda_context import LambdaContext
from testkit.provider import GENERATE_PATH, RECORD_INFO_PATH, FakeProvider
from testkit.sqs import sqs_event
from testkit.video_source import VideoServer
from tests.conftest import FIXTURES, AwsWorld, answer_json, load_event, signed_callback
from videohook import services
from videohook.models import Callback
from videohook.reconciler import BACKOFF_SECONDS, POLL_INTERVAL_SECONDS, REFUSED_RETRY_SECONDS

KEY = "test-provider-key-0123456789abcdef"
TASK = "taskId_774b9aa0422f"  # the task of events/submit_task.json
AUDIO = "e231a9c4-8cadc7dc"
EXECUTE_API_HOST = "abc123.execute-api.us-east-1.amazonaws.com"
VIDEO = (FIXTURES / "faststart.mp4").read_bytes()
INTERNAL = {"revision", "lease_owner", "lease_expires", "transfer_queued", "poll_partition", "poll_due"}


# --- set-up ------------------------------------------------------------------------------------


@pytest.fixture
def fp(provider_server: FakeProvider) -> FakeProvider:
    return provider_server.reset(api_key=KEY)


@pytest.fixture
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


def use(aws: AwsWorld, fp: FakeProvider, function: str, **overrides: str) -> services.Services:
    """Run `function` as deployed, talking to the fake provider with a plain key, tasks due at once."""
    env = {
        "PROVIDER_API_BASE": fp.base_url,
        "PROVIDER_API_KEY": KEY,
        "PROVIDER_API_KEY_SECRET_ARN": "",
        "VIDEO_SOURCE_ALLOW_PRIVATE": "true",
        "RECONCILE_AFTER_SECONDS": "0",
    }
    env.update(overrides)
    aws.use_function(function, **env)
    return services.services()


def post_task(body: Any = None, event: dict | None = None) -> tuple[int, dict]:
    event = event or load_event("submit_task.json")
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    answer = tasks.lambda_handler(event, LambdaContext())
    return answer["statusCode"], answer_json(answer)


def post_callback(aws: AwsWorld, task_id: str, video_url: str) -> tuple[int, dict]:
    body = {
        "code": 200,
        "msg": "MP4 generated successfully.",
        "data": {"task_id": task_id, "video_url": video_url},
    }
    answer = ingest.lambda_handler(
        signed_callback("callback_success.json", token=aws.callback_token, body=body), LambdaContext()
    )
    return answer["statusCode"], answer_json(answer)


def run_reconcile(context: LambdaContext | None = None) -> dict:
    return reconcile.lambda_handler(load_event("reconcile_schedule.json"), context or LambdaContext())


def run_transfer(messages: list[dict]) -> dict:
    return transfer.lambda_handler(sqs_event(messages), LambdaContext())


def queued_tasks(aws: AwsWorld) -> list[str]:
    return [json.loads(m["Body"])["task_id"] for m in aws.queued_messages()]


def record_info_calls(fp: FakeProvider, task_id: str | None = None) -> int:
    return len(fp.requests_to(RECORD_INFO_PATH, task_id))


def submit_through_tasks(aws: AwsWorld, fp: FakeProvider, task_id: str = TASK) -> None:
    use(aws, fp, "TasksFunction")
    status, body = post_task({"task_id": task_id, "audio_id": AUDIO})
    assert (status, body["status"]) == (202, "SUBMITTED")


def stored_object(aws: AwsWorld, task_id: str) -> bytes:
    s3 = aws.client("s3")
    return s3.get_object(Bucket=aws.output("VideosBucket"), Key=f"videos/{task_id}.mp4")["Body"].read()


# --- POST /tasks -------------------------------------------------------------------------------


def test_submit_sends_the_documented_body_with_this_stacks_callback_url(
    aws: AwsWorld, fp: FakeProvider
) -> None:
    # GIVEN the deployed ingest function behind its execute-api host, with a provider key
    svc = use(aws, fp, "TasksFunction")
    # WHEN the sample submit arrives
    status, body = post_task()
    # THEN the provider got exactly docs/provider.md's body, with our callback URL and token, and the key
    (sent,) = fp.requests_to(GENERATE_PATH)
    token = quote(aws.callback_token, safe="")
    assert sent.method == "POST"
    assert sent.body == {
        "taskId": TASK,
        "audioId": AUDIO,
        "callBackUrl": f"https://{EXECUTE_API_HOST}/Prod/callbacks?token={token}",
        "author": "Suno Artist",
        "domainName": "music.example.com",
    }
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Content-Type"].startswith("application/json")
    # AND the answer is 202 with the public SUBMITTED record
    assert status == 202
    assert body["task_id"] == TASK and body["status"] == "SUBMITTED" and body["audio_id"] == AUDIO
    assert body["callbacks"] == 0 and body["created_at"].endswith("Z")
    assert not INTERNAL & body.keys()
    # AND the task is stored SUBMITTED and waits in the poll index
    item = svc.store.get(TASK)
    assert item["status"] == "SUBMITTED" and item["audio_id"] == AUDIO
    assert item["poll_partition"] == "due" and item["poll_due"] <= int(time.time())


@pytest.mark.parametrize(
    ("overrides", "host", "expected"),
    [
        pytest.param(
            {"CALLBACK_BASE_URL": "https://hooks.example.com/videohook/"},
            EXECUTE_API_HOST,
            "https://hooks.example.com/videohook/callbacks",
            id="CALLBACK_BASE_URL-wins",
        ),
        pytest.param(
            {},
            "videohook.example.com",
            "https://videohook.example.com/callbacks",
            id="custom-domain-no-stage",
        ),
    ],
)
def test_submit_callback_url_base(
    aws: AwsWorld, fp: FakeProvider, overrides: dict, host: str, expected: str
) -> None:
    # GIVEN a configured public base URL, or a request that came through a custom domain
    use(aws, fp, "TasksFunction", **overrides)
    event = load_event("submit_task.json")
    event["headers"]["Host"] = host
    event["requestContext"]["domainName"] = host
    # WHEN a task is submitted
    assert post_task(event=event)[0] == 202
    # THEN the provider is told that base + /callbacks, with the token
    (sent,) = fp.requests_to(GENERATE_PATH)
    assert sent.body["callBackUrl"] == f"{expected}?token={quote(aws.callback_token, safe='')}"


def test_submit_without_a_callback_token_sends_a_bare_url_and_no_branding(
    aws: AwsWorld, fp: FakeProvider
) -> None:
    # GIVEN local development without a token, and a submit without author or domain_name
    use(aws, fp, "TasksFunction", CALLBACK_TOKEN_SECRET_ARN="")
    # WHEN it is submitted
    assert post_task({"task_id": "bare-1", "audio_id": "a-1"})[0] == 202
    # THEN only the three required fields are sent, with no token in the URL
    (sent,) = fp.requests_to(GENERATE_PATH)
    assert sent.body == {
        "taskId": "bare-1",
        "audioId": "a-1",
        "callBackUrl": f"https://{EXECUTE_API_HOST}/Prod/callbacks",
    }


def test_a_repeated_submit_is_not_sent_twice(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a submitted task
    use(aws, fp, "TasksFunction")
    first_status, first = post_task()
    # WHEN the same submit arrives again
    second_status, second = post_task()
    # THEN both answer 202 with the same record, and the provider saw one generate
    assert (first_status, second_status) == (202, 202)
    assert second == first
    assert len(fp.requests_to(GENERATE_PATH)) == 1


def test_a_provider_assigned_task_id_is_the_one_recorded(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a provider that answers with its own task id
    svc = use(aws, fp, "TasksFunction")
    fp.script_generate({"taskId": "provider-7"})
    # WHEN a task is submitted
    status, body = post_task()
    # THEN the provider's id is the task waited for, and ours is forgotten
    assert (status, body["task_id"], body["status"]) == (202, "provider-7", "SUBMITTED")
    assert svc.store.get("provider-7")["audio_id"] == AUDIO
    assert svc.store.get(TASK) is None


@pytest.mark.parametrize(
    ("answer", "code", "msg"),
    [
        (
            FakeProvider.error(401, 401, "You do not have access permissions"),
            401,
            "You do not have access permissions",
        ),
        (
            FakeProvider.error(200, 429, "The current credits are insufficient"),
            429,
            "The current credits are insufficient",
        ),
        (
            FakeProvider.error(500, 500, "Server error, please retry later"),
            500,
            "Server error, please retry later",
        ),
        (
            FakeProvider.error(200, 430, "Your call frequency is too high"),
            430,
            "Your call frequency is too high",
        ),
    ],
    ids=["401", "429", "500", "430"],
)
def test_provider_errors_answer_502_with_the_providers_code_and_message(
    aws: AwsWorld, fp: FakeProvider, answer: Any, code: int, msg: str
) -> None:
    # GIVEN a provider that refuses the submit
    svc = use(aws, fp, "TasksFunction")
    fp.script_generate(answer)
    # WHEN a task is submitted
    status, body = post_task()
    # THEN 502 carrying the provider's code and message, never the key
    assert status == 502
    assert body["error"] == "provider_error" and body["provider_code"] == code
    assert msg in body["message"] and str(code) in body["message"]
    assert KEY not in json.dumps(body)
    # AND the task is forgotten, so a later submit is sent and recorded
    assert svc.store.get(TASK) is None
    fp.script_generate(None)
    assert post_task()[0] == 202
    assert len(fp.requests_to(GENERATE_PATH)) == 2
    assert svc.store.get(TASK)["status"] == "SUBMITTED"


def test_a_wrong_key_answers_502_401_without_echoing_the_key(aws: AwsWorld, fp: FakeProvider) -> None:
    wrong = "wrong-provider-key-9876543210"
    svc = use(aws, fp, "TasksFunction", PROVIDER_API_KEY=wrong)
    status, body = post_task()
    assert (status, body["error"], body["provider_code"]) == (502, "provider_error", 401)
    assert wrong not in json.dumps(body)
    assert svc.store.get(TASK) is None


def test_an_unreachable_provider_answers_502_and_forgets_the_task(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a provider base where nothing listens
    svc = use(aws, fp, "TasksFunction", PROVIDER_API_BASE="http://127.0.0.1:1")
    # WHEN a task is submitted THEN 502 without a provider code, and the task is not kept
    status, body = post_task()
    assert (status, body["error"], body["provider_code"]) == (502, "provider_error", None)
    assert body["message"]
    assert svc.store.get(TASK) is None


def test_a_submit_whose_answer_timed_out_is_kept_for_reconcile(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a provider that takes the task but answers after the client's read timeout
    svc = use(aws, fp, "TasksFunction")
    services.provider_client().timeout = (1.0, 0.3)
    fp.script_generate(fp.delay(2.0))
    # WHEN the task is submitted
    status, body = post_task()
    # THEN 502, but the task stays SUBMITTED: its callback will be accepted and reconcile polls it
    assert (status, body["error"]) == (502, "provider_error")
    assert svc.store.get(TASK)["status"] == "SUBMITTED"


def test_submit_without_an_api_key_answers_501_saying_how_to_configure_one(
    aws: AwsWorld, fp: FakeProvider
) -> None:
    # GIVEN a stack with no provider API key
    svc = use(aws, fp, "TasksFunction", PROVIDER_API_KEY="")
    # WHEN a task is submitted
    status, body = post_task()
    # THEN 501 (no retry helps) with a message naming the settings to configure, not "retry later"
    assert (status, body["error"]) == (501, "provider_not_configured")
    assert "PROVIDER_API_KEY" in body["message"] and "ProviderApiKey" in body["message"]
    assert "retry" not in body["message"]
    assert fp.requests == []
    assert svc.store.get(TASK) is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_shape"),
        ({"task_id": TASK}, "invalid_audio_id"),
        ({"task_id": TASK, "audio_id": ""}, "invalid_audio_id"),
        ({"task_id": TASK, "audio_id": 5}, "invalid_audio_id"),
        ({"audio_id": "a"}, "invalid_task_id"),
        ({"task_id": "../etc/passwd", "audio_id": "a"}, "invalid_task_id"),
        ({"task_id": "x" * 129, "audio_id": "a"}, "invalid_task_id"),
        ({"task_id": TASK, "audio_id": "a", "author": 7}, "invalid_author"),
        ({"task_id": TASK, "audio_id": "a", "domain_name": "d" * 257}, "invalid_domain_name"),
    ],
)
def test_bad_submit_bodies_answer_400(aws: AwsWorld, fp: FakeProvider, raw: Any, code: str) -> None:
    svc = use(aws, fp, "TasksFunction")
    status, body = post_task(raw)
    assert (status, body["error"]) == (400, code) and body["message"]
    assert fp.requests == []
    assert svc.store.get(TASK) is None


# --- confirmation before a copy ----------------------------------------------------------------


def callback_then_transfer(aws: AwsWorld, fp: FakeProvider, callback_url: str) -> tuple[dict, list[dict]]:
    """Post a success callback naming `callback_url`, then feed its queued message to the transfer function."""
    use(aws, fp, "IngestFunction")
    assert post_callback(aws, TASK, callback_url)[0] == 200
    messages = aws.queued_messages()
    assert [json.loads(m["Body"])["task_id"] for m in messages] == [TASK]
    use(aws, fp, "TransferFunction")
    return run_transfer(messages), messages


def test_confirmation_copies_the_providers_url_not_the_callbacks(
    aws: AwsWorld, fp: FakeProvider, videos: VideoServer
) -> None:
    # GIVEN a provider whose record-info names one video, and a callback that names another
    provider_url = videos.add("/provider/video.mp4", VIDEO)
    forged_url = videos.add("/forged/video.mp4", VIDEO)
    fp.script(TASK, [fp.success(provider_url)])
    # WHEN the callback is received and its transfer runs
    result, _ = callback_then_transfer(aws, fp, forged_url)
    # THEN the provider was asked, and only the provider's URL was fetched and stored
    assert result == {"batchItemFailures": []}
    assert record_info_calls(fp, TASK) == 1
    assert videos.requests_for("/forged/video.mp4") == []
    assert videos.requests_for("/provider/video.mp4")
    assert {r.path for r in videos.requests} == {"/provider/video.mp4"}
    item = services.services().store.get(TASK)
    assert item["status"] == "STORED" and item["sha256"] == hashlib.sha256(VIDEO).hexdigest()
    assert stored_object(aws, TASK) == VIDEO


@pytest.mark.parametrize(
    ("http_status", "code", "reason"), [(503, 503, "Service Unavailable"), (401, 401, "Invalid API key")]
)
def test_a_provider_that_is_down_delays_the_transfer(
    aws: AwsWorld, fp: FakeProvider, videos: VideoServer, http_status: int, code: int, reason: str
) -> None:
    # GIVEN a callback for a ready video, while the provider's API answers an error
    # (a 401 after a key rotation must not fail videos either)
    url = videos.add("/v.mp4", VIDEO)
    fp.script(TASK, [fp.error(http_status, code, reason)])
    # WHEN the transfer runs
    result, messages = callback_then_transfer(aws, fp, url)
    # THEN the message is handed back to SQS, the task waits RECEIVED, and the source was not touched
    assert result == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    item = services.services().store.get(TASK)
    assert item["status"] == "RECEIVED" and str(code) in item["error"]
    assert "lease_owner" not in item
    assert videos.requests == []


def test_a_provider_that_reports_generation_failed_fails_the_transfer(
    aws: AwsWorld, fp: FakeProvider, videos: VideoServer
) -> None:
    # GIVEN a callback that claims success, while record-info says the video was never made
    url = videos.add("/v.mp4", VIDEO)
    fp.script(TASK, [fp.failed("GENERATE_MP4_FAILED", 500, "render crashed")])
    # WHEN the transfer runs
    result, _ = callback_then_transfer(aws, fp, url)
    # THEN the task fails for good with the reason in words, nothing fetched, nothing stored
    assert result == {"batchItemFailures": []}
    item = services.services().store.get(TASK)
    assert item["status"] == "TRANSFER_FAILED"
    assert "GENERATE_MP4_FAILED" in item["error"] and "render crashed" in item["error"]
    assert videos.requests == []
    listed = aws.client("s3").list_objects_v2(Bucket=aws.output("VideosBucket"))
    assert listed.get("KeyCount", 0) == 0


# --- reconcile ---------------------------------------------------------------------------------


def test_reconcile_polls_at_most_every_45_seconds_then_queues(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a submitted task that is PENDING at the provider, then SUCCESS
    url = "https://cdn.example.com/videos/late.mp4"
    fp.script(TASK, [fp.pending(), fp.success(url)])
    submit_through_tasks(aws, fp)
    svc = use(aws, fp, "ReconcileFunction")
    clock = Clock(time.time())
    svc.store.clock = clock
    # WHEN reconcile runs THEN it polls once and schedules the next poll 45 s later
    first = run_reconcile()
    assert (first["polled"], first["waiting"], first["queued"]) == (1, 1, 0)
    item = svc.store.get(TASK)
    assert item["status"] == "SUBMITTED"
    assert item["poll_due"] == int(clock.now) + POLL_INTERVAL_SECONDS == int(clock.now) + 45
    # WHEN it runs again at once, and 44 s later THEN the provider is not asked again
    assert run_reconcile()["polled"] == 0
    clock.now += 44
    assert run_reconcile()["polled"] == 0
    assert record_info_calls(fp, TASK) == 1
    # WHEN 45 s have passed THEN the next run finds the video and queues its transfer
    clock.now += 1
    third = run_reconcile()
    assert (third["polled"], third["queued"]) == (1, 1)
    assert record_info_calls(fp, TASK) == 2
    assert queued_tasks(aws) == [TASK]
    item = svc.store.get(TASK)
    assert item["status"] == "RECEIVED" and item["video_url"] == url and item["transfer_queued"] is True
    assert item["callbacks"] == 0 and item["audio_id"] == AUDIO
    # (due again only in case its message is never picked up: RECONCILE_AFTER_SECONDS, at least 60 s)
    assert item["poll_due"] == int(clock.now) + 60
    # AND the provider is never polled again
    clock.now += 3600
    assert run_reconcile()["polled"] == 0
    assert record_info_calls(fp, TASK) == 2


def test_a_task_whose_callback_never_arrives_is_stored_by_reconcile_alone(
    aws: AwsWorld, fp: FakeProvider, videos: VideoServer
) -> None:
    # GIVEN a task submitted through videohook whose callback never comes, ready at the provider
    url = videos.add("/late/video.mp4", VIDEO)
    fp.script(TASK, [fp.success(url)])
    submit_through_tasks(aws, fp)
    # WHEN reconcile runs, and the transfer function gets the message it queued
    use(aws, fp, "ReconcileFunction")
    assert run_reconcile()["queued"] == 1
    messages = aws.queued_messages()
    use(aws, fp, "TransferFunction")
    result = run_transfer(messages)
    # THEN the video is stored, with no callback ever counted
    assert result == {"batchItemFailures": []}
    item = services.services().store.get(TASK)
    assert item["status"] == "STORED" and item["callbacks"] == 0
    assert item["size"] == len(VIDEO) and item["s3_key"] == f"videos/{TASK}.mp4"
    assert stored_object(aws, TASK) == VIDEO
    assert {r.path for r in videos.requests} == {"/late/video.mp4"}


@pytest.mark.parametrize(
    ("flag", "error_code", "error_message", "expected_code"),
    [
        ("CREATE_TASK_FAILED", 400, "The source audio could not be found", 400),
        ("GENERATE_MP4_FAILED", 500, "Rendering failed", 500),
        ("GENERATE_MP4_FAILED", None, "no code given", 500),
    ],
    ids=["create-failed", "generate-failed", "generate-failed-without-code"],
)
def test_reconcile_records_failure_flags_as_generation_failed(
    aws: AwsWorld, fp: FakeProvider, flag: str, error_code: int | None, error_message: str, expected_code: int
) -> None:
    # GIVEN a submitted task the provider gave up on
    fp.script(TASK, [fp.failed(flag, error_code, error_message)])
    submit_through_tasks(aws, fp)
    svc = use(aws, fp, "ReconcileFunction")
    # WHEN reconcile runs
    report = run_reconcile()
    # THEN GENERATION_FAILED with the provider's errorCode and errorMessage, nothing queued, no more polls
    assert (report["polled"], report["failed"]) == (1, 1)
    item = svc.store.get(TASK)
    assert item["status"] == "GENERATION_FAILED"
    assert (item["provider_code"], item["provider_msg"]) == (expected_code, error_message)
    assert "poll_due" not in item and "poll_partition" not in item
    assert queued_tasks(aws) == []
    assert run_reconcile()["polled"] == 0
    assert record_info_calls(fp, TASK) == 1


def test_callback_exception_with_a_video_url_is_queued(aws: AwsWorld, fp: FakeProvider) -> None:
    url = "https://cdn.example.com/videos/undelivered.mp4"
    fp.script(TASK, [fp.callback_exception(url)])
    submit_through_tasks(aws, fp)
    svc = use(aws, fp, "ReconcileFunction")
    assert run_reconcile()["queued"] == 1
    assert queued_tasks(aws) == [TASK]
    item = svc.store.get(TASK)
    assert item["status"] == "RECEIVED" and item["video_url"] == url


def test_callback_exception_without_a_video_url_waits(aws: AwsWorld, fp: FakeProvider) -> None:
    fp.script(TASK, [fp.callback_exception(None)])
    submit_through_tasks(aws, fp)
    svc = use(aws, fp, "ReconcileFunction")
    report = run_reconcile()
    assert (report["waiting"], report["queued"], report["failed"]) == (1, 0, 0)
    assert svc.store.get(TASK)["status"] == "SUBMITTED"
    assert queued_tasks(aws) == []


def test_a_received_task_whose_transfer_was_never_queued_is_queued(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a callback recorded RECEIVED whose SQS send failed (so no transfer is queued)
    url = "https://cdn.example.com/videos/v.mp4"
    svc = use(aws, fp, "ReconcileFunction")
    svc.store.record_callback(Callback(200, "ok", TASK, url))
    fp.script(TASK, [fp.success(url)])
    # WHEN reconcile runs THEN the provider confirms and the transfer is queued, once
    assert run_reconcile()["queued"] == 1
    assert queued_tasks(aws) == [TASK]
    item = svc.store.get(TASK)
    assert item["status"] == "RECEIVED" and item["transfer_queued"] is True and item["callbacks"] == 1
    assert run_reconcile()["polled"] == 0


def test_a_task_no_longer_waiting_is_dropped_from_the_index_unasked(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a task still in the poll index (as an index read lagging a write would show it),
    # though it is already stored
    svc = use(aws, fp, "ReconcileFunction")
    svc.store.record_callback(Callback(200, "ok", TASK, "https://cdn.example.com/videos/v.mp4"))
    store = svc.store
    store.client.update_item(
        TableName=store.table_name,
        Key={"task_id": {"S": TASK}},
        UpdateExpression="SET #st = :stored",
        ExpressionAttributeNames={"#st": "status"},
        ExpressionAttributeValues={":stored": {"S": "STORED"}},
    )
    # WHEN reconcile runs
    report = run_reconcile()
    # THEN it is dropped from the index without asking the provider, and stays dropped
    assert (report["dropped"], report["polled"], report["errors"]) == (1, 0, [])
    assert fp.requests == []
    item = svc.store.get(TASK)
    assert item["status"] == "STORED" and "poll_partition" not in item and "poll_due" not in item
    assert run_reconcile()["dropped"] == 0


def test_a_task_being_copied_is_not_polled(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a task whose worker holds a live lease, due (its lease could have ended by now)
    svc = use(aws, fp, "ReconcileFunction")
    clock = Clock(time.time())
    svc.store.clock = clock
    svc.store.record_callback(Callback(200, "ok", TASK, "https://cdn.example.com/videos/v.mp4"))
    assert svc.store.acquire_lease(TASK, "worker", 60) is not None
    clock.now += 90
    svc.store.report_progress(TASK, "worker", 10, 100, 60)
    clock.now += 30
    # WHEN reconcile runs
    report = run_reconcile()
    # THEN the provider is not asked, nothing is queued, and it looks again after the lease
    assert (report["deferred"], report["polled"], report["recovered"]) == (1, 0, 0)
    assert fp.requests == [] and queued_tasks(aws) == []
    item = svc.store.get(TASK)
    assert item["status"] == "TRANSFERRING" and item["poll_due"] == item["lease_expires"] + 60


def due_tasks(
    svc: services.Services, fp: FakeProvider, count: int, prefix: str, answer: Any = None
) -> list[str]:
    """`count` SUBMITTED tasks, due now (RECONCILE_AFTER_SECONDS=0), each scripted with `answer`."""
    ids = [f"{prefix}-{n:04d}" for n in range(count)]
    for task_id in ids:
        svc.store.record_submitted(task_id, f"audio-{task_id}")
        if answer is not None:
            fp.script(task_id, [answer])
    return ids


def bulk_due_tasks(svc: services.Services, count: int, prefix: str) -> list[str]:
    """Like `due_tasks`, fast: one task written by record_submitted, its exact item copied in batches.

    moto spends ~25 ms on each UpdateItem (its expression validator); 1,000 of them would be
    half a minute of set-up measuring moto, not videohook.
    """
    ids = [f"{prefix}-{n:04d}" for n in range(count)]
    store = svc.store
    store.record_submitted(ids[0], "audio-bulk")
    key = {"task_id": {"S": ids[0]}}
    item = store.client.get_item(TableName=store.table_name, Key=key, ConsistentRead=True)["Item"]
    assert item["status"] == {"S": "SUBMITTED"} and "poll_due" in item and "poll_partition" in item
    for start in range(1, count, 25):
        batch = [{"PutRequest": {"Item": {**item, "task_id": {"S": t}}}} for t in ids[start : start + 25]]
        store.client.batch_write_item(RequestItems={store.table_name: batch})
    return ids


@pytest.mark.parametrize(
    "answer",
    [
        FakeProvider.error(200, 430, "Your call frequency is too high"),
        FakeProvider.error(430, 430, "Your call frequency is too high"),
        FakeProvider.error(455, 455, "The system is under maintenance"),
        FakeProvider.error(200, 405, "Call limit exceeded"),
        FakeProvider.error(200, 429, "The current credits are insufficient"),
    ],
    ids=["430-in-body", "430-http", "455", "405", "429"],
)
def test_account_wide_limits_back_off_and_stop_the_run(aws: AwsWorld, fp: FakeProvider, answer: Any) -> None:
    # GIVEN more due tasks than reconcile has workers (16), and every poll answered with a limit
    svc = use(aws, fp, "ReconcileFunction")
    clock = Clock(time.time())
    svc.store.clock = clock
    ids = due_tasks(svc, fp, 24, "storm", answer)
    # WHEN reconcile runs
    report = run_reconcile()
    # THEN it stops early: fewer calls than due tasks, each asked task backs off, none fails
    asked = {r.query["taskId"] for r in fp.requests_to(RECORD_INFO_PATH)}
    assert 1 <= len(asked) == record_info_calls(fp) < len(ids)
    assert report["stopped_early"] is True
    assert report["backed_off"] == len(asked) and report["failed"] == report["queued"] == 0
    for task_id in ids:
        item = svc.store.get(task_id)
        assert item["status"] == "SUBMITTED" and item["poll_partition"] == "due"
        if task_id in asked:
            assert item["poll_due"] == int(clock.now) + BACKOFF_SECONDS
        else:
            assert item["poll_due"] <= int(clock.now)
    assert queued_tasks(aws) == []


@pytest.mark.parametrize(
    ("answer", "delay"),
    [
        (FakeProvider.error(500, 500, "Server error"), BACKOFF_SECONDS),
        (FakeProvider.raw(502, "<html>Bad Gateway</html>"), BACKOFF_SECONDS),
        (FakeProvider.error(200, 400, "bad parameter"), REFUSED_RETRY_SECONDS),
    ],
    ids=["500", "502-html", "400"],
)
def test_per_task_errors_back_off_without_stopping_the_run(
    aws: AwsWorld, fp: FakeProvider, answer: Any, delay: int
) -> None:
    svc = use(aws, fp, "ReconcileFunction")
    clock = Clock(time.time())
    svc.store.clock = clock
    ids = due_tasks(svc, fp, 5, "err", answer)
    report = run_reconcile()
    assert (report["backed_off"], report["stopped_early"], report["failed"]) == (5, False, 0)
    assert record_info_calls(fp) == 5
    for task_id in ids:
        item = svc.store.get(task_id)
        assert item["status"] == "SUBMITTED" and item["poll_due"] == int(clock.now) + delay


def test_provider_timeouts_back_off_and_do_not_fail(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN due tasks, and a provider slower than the client's timeout (shortened for the test)
    svc = use(aws, fp, "ReconcileFunction")
    clock = Clock(time.time())
    svc.store.clock = clock
    ids = due_tasks(svc, fp, 3, "slow", fp.delay(2.0))
    services.provider_client().timeout = (1.0, 0.3)
    # WHEN reconcile runs
    started = time.monotonic()
    report = run_reconcile()
    # THEN every task backs off, none fails, and the run does not wait for the provider
    assert time.monotonic() - started < 1.5
    assert (report["backed_off"], report["failed"], report["stopped_early"]) == (3, 0, False)
    for task_id in ids:
        item = svc.store.get(task_id)
        assert item["status"] == "SUBMITTED" and item["poll_due"] == int(clock.now) + BACKOFF_SECONDS


def test_reconcile_without_an_api_key_asks_nothing_and_waits_for_the_callback(
    aws: AwsWorld, fp: FakeProvider
) -> None:
    # GIVEN a due submitted task but no provider key
    svc = use(aws, fp, "ReconcileFunction", PROVIDER_API_KEY="")
    (task_id,) = due_tasks(svc, fp, 1, "idle")
    # WHEN reconcile runs THEN it calls nothing, and looks again only when the 14 days are over
    report = run_reconcile()
    assert (report["polled"], report["deferred"]) == (0, 1)
    assert fp.requests == []
    item = svc.store.get(task_id)
    assert item["status"] == "SUBMITTED" and item["poll_due"] >= time.time() + 14 * 86400 - 60


# Many more due tasks than reconcile's 16 polling threads, small enough for the unit tier.
DUE_TASKS = 400


def test_hundreds_of_due_tasks_are_polled_once_each_without_a_scan(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN 400 due SUBMITTED tasks, and a table client that fails the test on any Scan
    svc = use(aws, fp, "ReconcileFunction")
    scans: list[Any] = []
    queries: list[dict] = []

    def refuse_scan(**kwargs: Any) -> None:
        scans.append(kwargs.get("params"))
        raise AssertionError("reconcile must read the poll-due index, never scan the table")

    def note_query(params: dict, **_: Any) -> None:
        queries.append(dict(params))

    events = svc.store.client.meta.events
    events.register("before-call.dynamodb.Scan", refuse_scan)
    events.register("provide-client-params.dynamodb.Query", note_query)
    try:
        ids = bulk_due_tasks(svc, DUE_TASKS, "bulk")
        # WHEN one reconcile run with the deployed budget (55 s timeout) goes through them
        started = time.monotonic()
        report = run_reconcile(aws.context("ReconcileFunction"))
        elapsed = time.monotonic() - started
    finally:
        events.unregister("before-call.dynamodb.Scan", refuse_scan)
        events.unregister("provide-client-params.dynamodb.Query", note_query)
    print(f"\nreconcile of {DUE_TASKS} due tasks: {elapsed:.2f} s")
    # THEN each task was asked exactly once, through the index, well inside the 45 s deadline
    asked = Counter(r.query["taskId"] for r in fp.requests_to(RECORD_INFO_PATH))
    assert asked == Counter(ids)
    assert report["polled"] == report["waiting"] == DUE_TASKS
    assert report["errors"] == [] and report["stopped_early"] is False
    assert scans == []
    assert queries and {q.get("IndexName") for q in queries} == {"poll-due"}
    assert elapsed < 45, f"{DUE_TASKS} polls took {elapsed:.1f} s"
    # AND all of them now wait their 45 s: an immediate second run asks nothing
    assert run_reconcile()["polled"] == 0
    assert record_info_calls(fp) == DUE_TASKS


# --- ACCEPT_UNKNOWN_TASKS=false ------------------------------------------------------------------


def test_refusing_unknown_tasks_accepts_only_submitted_ones(aws: AwsWorld, fp: FakeProvider) -> None:
    # GIVEN a stack that takes callbacks only for tasks submitted through it
    svc = use(aws, fp, "IngestFunction", ACCEPT_UNKNOWN_TASKS="false")
    url = "https://cdn.example.com/videos/v.mp4"
    # WHEN a callback arrives for a task never submitted THEN 401 unknown_task, nothing recorded
    status, body = post_callback(aws, "never-submitted", url)
    assert (status, body["error"]) == (401, "unknown_task")
    assert svc.store.get("never-submitted") is None
    # WHEN a task is submitted and its callback arrives THEN 200, RECEIVED and queued
    assert post_task({"task_id": "submitted-1", "audio_id": "a-1"})[0] == 202
    status, body = post_callback(aws, "submitted-1", url)
    assert (status, body) == (200, {"status": "received", "task_id": "submitted-1"})
    item = svc.store.get("submitted-1")
    assert item["status"] == "RECEIVED" and item["callbacks"] == 1 and item["audio_id"] == "a-1"
    assert queued_tasks(aws) == ["submitted-1"]
