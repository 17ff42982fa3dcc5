"""Nothing is ever stuck: every task that is not final has a way forward, found without a scan.

docs/task-record.md "Nothing is stuck" and docs/reconcile.md are the contract. Each scenario
runs the real entry points (ingest for callbacks, reconcile on its schedule event, transfer
on the messages reconcile queues) on a template-built moto stack, with the stores' clocks
injected (never slept) and a hook on every DynamoDB client that fails the test on any Scan.
Most run with and without a provider API key: recovery must not depend on the provider.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

import ingest
import reconcile
import tasks
import transfer
from testkit.clock import Clock
from testkit.lambda_context import LambdaContext
from testkit.provider import RECORD_INFO_PATH, FakeProvider
from testkit.sqs import sqs_event
from testkit.video_source import VideoServer
from tests.conftest import FIXTURES, AwsWorld, load_event, signed_callback
from videohook import services

TASK = "task-stuck"
VIDEO = (FIXTURES / "faststart.mp4").read_bytes()
API_KEY = "test-provider-key-0123456789abcdef"
AFTER = 300  # RECONCILE_AFTER_SECONDS as the template sets it
DAY = 86_400


@dataclass
class Rig:
    aws: AwsWorld
    provider: FakeProvider | None
    videos: VideoServer
    capsys: Any
    caplog: Any
    clock: Clock = field(default_factory=lambda: Clock(time.time()))
    scans: list[Any] = field(default_factory=list)
    index_reads: list[str | None] = field(default_factory=list)

    def use(self, function: str, **overrides: str) -> services.Services:
        """Run `function` with the template's environment, the test's clock and the scan guard."""
        env = {"VIDEO_SOURCE_ALLOW_PRIVATE": "true", "RECONCILE_AFTER_SECONDS": str(AFTER)}
        if self.provider is not None:
            env.update(
                PROVIDER_API_BASE=self.provider.base_url,
                PROVIDER_API_KEY=API_KEY,
                PROVIDER_API_KEY_SECRET_ARN="",
            )
        else:
            env.update(PROVIDER_API_KEY="", PROVIDER_API_KEY_SECRET_ARN="")
        env.update(overrides)
        self.aws.use_function(function, **env)
        svc = services.services()
        svc.store.clock = self.clock
        events = svc.store.client.meta.events
        events.register("before-call.dynamodb.Scan", self._refuse_scan, unique_id="no-scan")
        events.register("provide-client-params.dynamodb.Query", self._note_query, unique_id="note-query")
        return svc

    def _refuse_scan(self, params: dict, **_: Any) -> None:
        self.scans.append(params)
        raise AssertionError("a table scan: due tasks must be found through the poll-due index")

    def _note_query(self, params: dict, **_: Any) -> None:
        self.index_reads.append(params.get("IndexName"))

    def callback(self, url: str, task_id: str = TASK) -> None:
        if self.provider is not None:  # the transfer's confirmation finds the same URL
            self.provider.script(task_id, [self.provider.success(url)])
        self.use("IngestFunction")
        body = {"code": 200, "msg": "ok", "data": {"task_id": task_id, "video_url": url}}
        event = signed_callback("callback_success.json", token=self.aws.callback_token, body=body)
        assert ingest.lambda_handler(event, LambdaContext())["statusCode"] == 200

    def reconcile(self, at: float, context: LambdaContext | None = None) -> dict[str, Any]:
        """One scheduled run of the reconcile function at time `at`; its report and metrics."""
        self.clock.now = at
        self.capsys.readouterr()
        self.caplog.clear()
        self.use("ReconcileFunction")
        report = reconcile.lambda_handler(load_event("reconcile_schedule.json"), context or LambdaContext())
        report["metrics"], report["logs"] = self._emitted()
        assert self.scans == []
        return report

    def _emitted(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The run's metrics (embedded metric format on stdout) and its log records."""
        metrics: dict[str, float] = {}
        for line in self.capsys.readouterr().out.splitlines():
            try:
                document = json.loads(line)
            except ValueError:
                continue
            if "_aws" in document:
                for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                    values = document[definition["Name"]]
                    metrics[definition["Name"]] = metrics.get(definition["Name"], 0) + sum(
                        values if isinstance(values, list) else [values]
                    )
        logs = [{**record.__dict__, "message": record.getMessage()} for record in self.caplog.records]
        return metrics, logs

    def deliver(self, at: float | None = None) -> dict[str, Any]:
        """Give every queued transfer message to the transfer function (at time `at`)."""
        if at is not None:
            self.clock.now = at
        messages = self.aws.queued_messages()
        assert messages, "nothing queued to deliver"
        self.use("TransferFunction")
        return transfer.lambda_handler(sqs_event(messages), LambdaContext())

    def purge(self) -> None:
        """The transfer queue's messages are lost (an operator purged it, a redrive failed half-way)."""
        sqs = self.aws.client("sqs")
        url = self.aws.output("TransferQueue")
        # Received and deleted rather than PurgeQueue, which SQS allows once a minute.
        for message in self.aws.queued_messages():
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def queued(self) -> list[str]:
        """The task ids on the transfer queue (received, so they are invisible afterwards)."""
        return [json.loads(m["Body"])["task_id"] for m in self.aws.queued_messages()]

    def task(self, task_id: str = TASK) -> dict[str, Any]:
        return services.services().store.get(task_id)

    def provider_calls(self) -> int:
        return 0 if self.provider is None else len(self.provider.requests_to(RECORD_INFO_PATH))


@pytest.fixture
def fake_provider(provider_server: FakeProvider) -> FakeProvider:
    return provider_server.reset(api_key=API_KEY)


@pytest.fixture(params=["no-api-key", "api-key"])
def rig(request, aws: AwsWorld, fake_provider: FakeProvider, capsys, caplog) -> Iterator[Rig]:
    provider = fake_provider if request.param == "api-key" else None
    with VideoServer() as videos:
        yield Rig(aws, provider, videos, capsys, caplog)


def ts(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC).timestamp()


# --- a lost message --------------------------------------------------------------------------


def test_a_lost_message_is_queued_again_and_the_video_stored(rig: Rig) -> None:
    # GIVEN a callback recorded RECEIVED and queued, then the queue purged (the message lost)
    start = rig.clock.now
    url = rig.videos.add("/v.mp4", VIDEO)
    rig.callback(url)
    assert rig.task()["status"] == "RECEIVED"
    rig.purge()
    # WHEN reconcile runs before RECONCILE_AFTER_SECONDS have passed THEN it leaves the task alone
    early = rig.reconcile(start + AFTER - 1)
    assert early["recovered"] == 0 and early["metrics"].get("TasksRecovered", 0) == 0
    assert rig.queued() == []
    # WHEN it runs once they have passed
    report = rig.reconcile(start + AFTER + 1)
    # THEN the task is queued again, counted in TasksRecovered, logged with its reason
    assert report["recovered"] == 1 and report["errors"] == []
    assert report["metrics"]["TasksRecovered"] == 1
    [line] = [log for log in report["logs"] if log.get("message") == "stuck task queued again"]
    assert line["task_id"] == TASK and "not picked up" in line["reason"]
    assert rig.provider_calls() == 0
    assert rig.index_reads and set(rig.index_reads) == {"poll-due"}
    assert rig.task()["status"] == "RECEIVED"
    # AND the transfer that takes the new message stores the video
    assert rig.deliver(start + AFTER + 2) == {"batchItemFailures": []}
    item = rig.task()
    assert item["status"] == "STORED" and item["size"] == len(VIDEO)
    # AND a stored task is never looked at again
    assert "poll_due" not in item and "poll_partition" not in item
    assert rig.reconcile(start + 30 * DAY)["recovered"] == 0


def test_a_task_whose_message_was_never_sent_is_queued(rig: Rig) -> None:
    # GIVEN a callback recorded RECEIVED whose SQS send failed (nothing queued, not marked queued)
    start = rig.clock.now
    url = rig.videos.add("/v.mp4", VIDEO)
    svc = rig.use("IngestFunction")
    from videohook.models import Callback

    svc.store.record_callback(Callback(200, "ok", TASK, url))
    if rig.provider is not None:
        rig.provider.script(TASK, [rig.provider.success(url)])
    # WHEN reconcile runs after RECONCILE_AFTER_SECONDS
    report = rig.reconcile(start + AFTER + 1)
    # THEN its transfer is queued: through the provider's answer with a key, straight away without
    assert rig.queued() == [TASK]
    assert rig.task()["transfer_queued"] is True
    if rig.provider is None:
        assert report["recovered"] == 1 and report["polled"] == 0
    else:
        assert report["queued"] == 1 and rig.provider_calls() == 1


def test_repeated_recovery_backs_off(rig: Rig) -> None:
    # GIVEN a queued task whose messages keep getting lost (a queue purged again and again)
    start = rig.clock.now
    rig.callback(rig.videos.add("/v.mp4", VIDEO))
    rig.purge()
    # WHEN reconcile runs a minute before and at each due time, the queue purged after each recovery
    # THEN each recovery waits twice as long as the one before, up to a six-hour ceiling
    expected = [300, 600, 1200, 2400, 4800, 9600, 19200, 21600, 21600]
    last = start
    for gap in expected:
        assert rig.reconcile(last + gap - 60)["recovered"] == 0, gap
        report = rig.reconcile(last + gap)
        assert report["recovered"] == 1 and report["metrics"]["TasksRecovered"] == 1, gap
        assert rig.queued() == [TASK]
        rig.purge()
        last += gap
    assert rig.provider_calls() == 0
    assert rig.task()["status"] == "RECEIVED"


# --- an expired lease ------------------------------------------------------------------------


def test_an_expired_lease_with_no_message_is_queued_again_and_taken_over(rig: Rig) -> None:
    # GIVEN a task taken by a worker that died mid-copy, its message gone
    start = rig.clock.now
    url = rig.videos.add("/v.mp4", VIDEO)
    rig.callback(url)
    rig.purge()
    svc = rig.use("TransferFunction")
    rig.clock.now = start + 10
    lease = svc.store.acquire_lease(TASK, "dead-worker", 120)
    assert lease is not None and lease["status"] == "TRANSFERRING"
    # WHEN reconcile runs while the lease could still be renewed THEN nothing happens
    report = rig.reconcile(start + 10 + 120 + 59)
    assert report["recovered"] == 0 and rig.queued() == []
    # WHEN it runs once the lease has expired (and its grace minute passed)
    report = rig.reconcile(start + 10 + 120 + 60)
    # THEN the task is queued again, counted, with the reason in words
    assert report["recovered"] == 1 and report["metrics"]["TasksRecovered"] == 1
    [line] = [log for log in report["logs"] if log.get("message") == "stuck task queued again"]
    assert "lease" in line["reason"] and "expired" in line["reason"]
    # AND the next worker takes the expired lease over and stores the video
    assert rig.deliver(start + 200) == {"batchItemFailures": []}
    item = rig.task()
    assert item["status"] == "STORED" and item["attempts"] == 2 and "lease_owner" not in item
    assert rig.provider_calls() == (1 if rig.provider else 0)  # the transfer's own confirmation


def test_a_live_lease_is_left_alone(rig: Rig) -> None:
    # GIVEN a worker copying a long video, renewing its lease as it goes
    start = rig.clock.now
    rig.callback(rig.videos.add("/v.mp4", VIDEO))
    messages = rig.aws.queued_messages()  # the worker holds its message (invisible meanwhile)
    assert len(messages) == 1
    svc = rig.use("TransferFunction")
    rig.clock.now = start + 10
    assert svc.store.acquire_lease(TASK, "live-worker", 120) is not None
    rig.clock.now = start + 150
    svc.store.report_progress(TASK, "live-worker", 1000, 2000, 120)  # lease now ends at +270
    # WHEN reconcile visits the task at the due time its first lease gave it
    report = rig.reconcile(start + 10 + 120 + 60)
    # THEN nothing is queued, the worker keeps the task, and the next look is after the new lease
    assert report["recovered"] == 0 and report["errors"] == []
    assert report["metrics"].get("TasksRecovered", 0) == 0
    assert rig.queued() == []
    item = rig.task()
    assert item["status"] == "TRANSFERRING" and item["lease_owner"] == "live-worker"
    assert item["poll_due"] == int(start + 150) + 120 + 60
    assert rig.provider_calls() == 0
    # WHEN the worker dies after that renewal THEN reconcile recovers it once the lease is over
    assert rig.reconcile(start + 150 + 120 + 59)["recovered"] == 0
    assert rig.reconcile(start + 150 + 120 + 60)["recovered"] == 1


def test_a_retry_handed_back_to_sqs_is_left_to_sqs(rig: Rig) -> None:
    # GIVEN an attempt that failed and gave the task back for SQS to deliver again
    start = rig.clock.now
    rig.callback(rig.videos.add("/v.mp4", VIDEO))
    svc = rig.use("TransferFunction")
    rig.clock.now = start + 10
    assert svc.store.acquire_lease(TASK, "worker", 120) is not None
    svc.store.release_for_retry(TASK, "worker", "the source answered 503")
    # WHEN reconcile runs while the message waits out its visibility timeout (90 min)
    report = rig.reconcile(start + 5400)
    # THEN nothing is queued twice
    assert report["recovered"] == 0 and rig.queued() == [TASK]
    # AND if that message never comes back, the task is recovered soon after
    rig.purge()
    assert rig.reconcile(start + 10 + 5400 + AFTER)["recovered"] == 1


# --- SUBMITTED for 14 days -------------------------------------------------------------------


def test_a_submit_never_answered_for_14_days_ends_generation_failed(rig: Rig) -> None:
    # GIVEN a task submitted through videohook whose callback never came
    start = rig.clock.now
    svc = rig.use("IngestFunction")
    svc.store.record_submitted(TASK, "audio-1")
    if rig.provider is not None:
        rig.provider.script(TASK, [rig.provider.pending()])
    # WHEN reconcile runs over the next 14 days (a visit every 45 s with a key is not simulated:
    # one run after RECONCILE_AFTER_SECONDS, one a minute before the 14 days, one at them)
    first = rig.reconcile(start + AFTER + 1)
    assert rig.task()["status"] == "SUBMITTED"
    assert (first["polled"], first["waiting"]) == ((1, 1) if rig.provider else (0, 0))
    if rig.provider is None:
        # without a key there is nothing to ask: the next look is at the 14 days
        assert rig.task()["poll_due"] == int(ts(rig.task()["created_at"])) + 14 * DAY
    before = rig.reconcile(start + 14 * DAY - 60)
    assert rig.task()["status"] == "SUBMITTED" and before["ended"] == 0
    calls = rig.provider_calls()
    report = rig.reconcile(start + 14 * DAY + 1)
    # THEN the task is GENERATION_FAILED with the reason in words, without asking the provider
    item = rig.task()
    assert item["status"] == "GENERATION_FAILED" and report["ended"] == 1
    assert "14 days" in item["provider_msg"]
    assert rig.provider_calls() == calls
    assert "poll_due" not in item and "poll_partition" not in item
    assert rig.queued() == []
    assert rig.reconcile(start + 15 * DAY)["ended"] == 0


# --- the invariant, and the public record ------------------------------------------------------


def test_every_task_that_is_not_final_has_a_due_time(rig: Rig) -> None:
    # GIVEN tasks in every status the moves can reach, through the store's own writes
    svc = rig.use("TransferFunction")
    store = svc.store
    from videohook.models import Callback

    url = "https://cdn.example.com/v.mp4"
    store.record_submitted("t-submitted", "a")
    store.record_callback(Callback(200, "ok", "t-received", url))
    store.record_callback(Callback(200, "ok", "t-queued", url))
    store.mark_queued("t-queued")
    store.record_callback(Callback(200, "ok", "t-leased", url))
    store.acquire_lease("t-leased", "w", 120)
    store.record_callback(Callback(200, "ok", "t-retry", url))
    store.acquire_lease("t-retry", "w", 120)
    store.release_for_retry("t-retry", "w", "503")
    store.record_callback(Callback(200, "ok", "t-redriven", url))
    store.acquire_lease("t-redriven", "w", 120)
    store.mark_transfer_failed("t-redriven", "w", "404")
    store.requeue_failed("t-redriven")
    store.record_callback(Callback(200, "ok", "t-failed", url))
    store.acquire_lease("t-failed", "w", 120)
    store.mark_transfer_failed("t-failed", "w", "404")
    store.record_callback(Callback(500, "no", "t-genfailed", None))
    # THEN each task that is not final carries a due time; the final ones carry none
    for task_id in ["t-submitted", "t-received", "t-queued", "t-leased", "t-retry", "t-redriven"]:
        item = store.get(task_id)
        assert item["status"] in {"SUBMITTED", "RECEIVED", "TRANSFERRING"}
        assert item["poll_partition"] == "due" and item["poll_due"] > rig.clock.now, (task_id, item)
    for task_id in ["t-failed", "t-genfailed"]:
        item = store.get(task_id)
        assert "poll_due" not in item and "poll_partition" not in item, (task_id, item)


def test_a_poll_leaves_nothing_internal_in_the_public_record(
    aws: AwsWorld, fake_provider: FakeProvider, capsys, caplog
) -> None:
    # GIVEN a submitted task that the provider still reports PENDING, polled once
    with VideoServer() as videos:
        rig = Rig(aws, fake_provider, videos, capsys, caplog)
        svc = rig.use("TasksFunction")
        svc.store.record_submitted(TASK, "audio-1")
        rig.reconcile(rig.clock.now + AFTER + 1)
        # WHEN the task is read through GET /tasks/{task_id}
        rig.use("TasksFunction")
        event = load_event("get_task.json")
        event["pathParameters"] = {"task_id": TASK}
        event["path"] = f"/tasks/{TASK}"
        answer = tasks.lambda_handler(event, LambdaContext())
    # THEN it shows the public fields only
    shown = json.loads(answer["body"])
    assert shown["status"] == "SUBMITTED"
    public = {"task_id", "status", "audio_id", "created_at", "updated_at", "callbacks", "attempts"}
    assert set(shown) == public, set(shown) - public


# --- how long a run takes --------------------------------------------------------------------


def test_hundreds_of_lost_messages_are_recovered_in_one_run(aws: AwsWorld, capsys, caplog) -> None:
    # GIVEN 100 RECEIVED tasks whose messages were all lost, and no provider API key
    with VideoServer() as videos:
        rig = Rig(aws, None, videos, capsys, caplog)
        start = rig.clock.now
        rig.callback("https://cdn.example.com/v/0.mp4", task_id="lost-0000")
        rig.purge()
        store = services.services().store
        key = {"task_id": {"S": "lost-0000"}}
        item = store.client.get_item(TableName=store.table_name, Key=key, ConsistentRead=True)["Item"]
        ids = [f"lost-{n:04d}" for n in range(100)]
        for first in range(1, len(ids), 25):
            batch = [{"PutRequest": {"Item": {**item, "task_id": {"S": t}}}} for t in ids[first : first + 25]]
            store.client.batch_write_item(RequestItems={store.table_name: batch})
        # WHEN one reconcile run with the deployed budget goes through them
        started = time.monotonic()
        report = rig.reconcile(start + AFTER + 1, aws.context("ReconcileFunction"))
        elapsed = time.monotonic() - started
    print(f"\nreconcile recovering 100 lost messages: {elapsed:.2f} s")
    # THEN every one is queued again exactly once, through the index, well inside the deadline
    assert report["recovered"] == 100 and report["errors"] == [] and report["stopped_early"] is False
    assert report["metrics"]["TasksRecovered"] == 100
    assert sorted(rig.queued()) == ids
    assert elapsed < 45


def test_the_retry_wait_matches_the_queues_visibility_timeout(aws: AwsWorld) -> None:
    # A failed attempt's message comes back after the queue's visibility timeout; reconcile
    # must not count it lost before then (lifecycle.RETRY_REDELIVERY_SECONDS).
    from videohook.lifecycle import RETRY_REDELIVERY_SECONDS

    queue = aws.stack.resources["TransferQueue"]["Properties"]
    assert int(queue["VisibilityTimeout"]) == RETRY_REDELIVERY_SECONDS
