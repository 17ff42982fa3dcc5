"""The local stack as a user runs it: `python -m infra.local.serve` in its own process.

Everything here goes through the stack's HTTP API and its embedded AWS endpoint only
(plus a fake provider API and a loopback video origin, both real HTTP servers): a signed
callback ends STORED and byte-identical in S3; a task submitted through POST /tasks comes
back through the local callback URL handed to the provider; a task whose callback never
comes is found by the scheduled reconcile; a poisoned transfer message reaches the
dead-letter queue after exactly 5 receives; every log line is tagged with its function;
SIGTERM leaves no process behind; and `make demo`'s script succeeds (stopping with SIGINT). A few fast checks of the API Gateway emulation
run in-process against the repository's sample events.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from infra.local.api import LocalApi, Route
from infra.local.harness import StackProcess, s3_object_digest, wait_for_task
from infra.local.triggers import failed_ids
from infra.template import ROOT, load_template
from testkit.aws import endpoint_client
from testkit.provider import RECORD_INFO_PATH, FakeProvider
from testkit.video_source import Video, VideoServer

pytestmark = pytest.mark.integration

OLD_KEY, HMAC_KEY = "integration-key-old", "integration-key-current"
TOKEN = "integration-callback-token"
PROVIDER_KEY = "integration-provider-key"
FIXTURE = ROOT / "tests" / "fixtures" / "faststart.mp4"
TAG = re.compile(r"^\[(stack|ingest|tasks|transfer|reconcile|publish)\] ")


class Running(StackProcess):
    """A started stack, its log file and its /health document at start."""

    log_path: Path
    health: dict

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n--- stack log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        try:
            return super().stop(signum, timeout)
        finally:
            if self.output is not None:
                self.output.close()

    def aws(self, service: str):
        return endpoint_client(service, self.aws_endpoint)


def start_stack(log_path: Path, **env: str) -> Running:
    out = open(log_path, "wb")  # noqa: SIM115 - closed by Running.stop; read through log_path
    stack = Running(env, output=out)
    stack.log_path = log_path
    try:
        stack.health = stack.boot(timeout=30)
    except RuntimeError as error:
        raise AssertionError(f"{error}{stack.tail()}") from None
    return stack


@pytest.fixture(scope="module")
def origin() -> Iterator[Video]:
    with VideoServer() as videos:
        served = videos.serve_file(FIXTURE)
        yield served


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    """The provider API: with a key configured, transfers confirm and reconcile polls."""
    with FakeProvider(api_key=PROVIDER_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[str]]:
    """`make demo`'s script, started before the stack below so the two run side by side."""
    folder = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "handler"), str(ROOT)]),
        "DEMO_OUTPUT": str(folder / "archived.mp4"),
        "DEMO_LOG": str(folder / "stack.log"),
    }
    with open(folder / "demo.log", "w+") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.demo"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        process.log = out  # type: ignore[attr-defined]
        yield process
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, demo: subprocess.Popen[str], provider: FakeProvider
) -> Iterator[Running]:
    running = start_stack(
        tmp_path_factory.mktemp("stack") / "serve.log",
        WEBHOOK_HMAC_KEYS=f"{OLD_KEY},{HMAC_KEY}",  # rotation: either key may sign
        CALLBACK_TOKEN=TOKEN,
        VIDEO_SOURCE_ALLOW_PRIVATE="true",
        PROVIDER_API_BASE=provider.base_url,
        PROVIDER_API_KEY=PROVIDER_KEY,
        RECONCILE_AFTER_SECONDS="2",
        LOCAL_RETRY_SECONDS="1",
        LOCAL_RECONCILE_SECONDS="1",
    )
    yield running
    running.stop(signal.SIGKILL)  # only if a test failed before the SIGTERM test stopped it


def post_callback(
    stack: Running,
    task_id: str,
    url: str,
    *,
    key: str = HMAC_KEY,
    token: str | None = TOKEN,
    callback_url: str | None = None,
) -> requests.Response:
    """The provider's success callback, with this suite's key and token by default."""
    return stack.post_callback(task_id, url, token=token, key=key, callback_url=callback_url)


# --- the main job -------------------------------------------------------------------------


def test_health_is_ok_and_names_the_template_outputs(stack: Running) -> None:
    answer = requests.get(f"{stack.api}/health", timeout=5)
    assert answer.status_code == 200
    document = answer.json()
    assert document["status"] == "ok" and all(document["checks"].values())
    assert set(document["outputs"]) == set(load_template()["Outputs"])
    assert document["outputs"]["ApiBaseUrl"] == f"{stack.api}/Prod"


def test_signed_callback_ends_stored_and_byte_identical_in_s3(
    stack: Running, origin: Video, provider: FakeProvider
) -> None:
    # GIVEN a video on a loopback origin, which the provider confirms, and a signed callback
    task_id = f"it-{uuid.uuid4().hex[:10]}"
    provider.script(task_id, [provider.success(origin.url)])
    # WHEN the provider posts it
    answer = post_callback(stack, task_id, origin.url)
    assert answer.status_code == 200, answer.text + stack.tail()
    assert answer.json() == {"status": "received", "task_id": task_id}
    # THEN the task reaches STORED (read under the stage prefix, as the deployed URL has it)
    record = wait_for_task(f"{stack.api}/Prod", task_id, {"STORED", "TRANSFER_FAILED"}, timeout=30)
    assert record["status"] == "STORED", f"{record}{stack.tail()}"
    assert (record["size"], record["sha256"]) == (len(origin.data), origin.sha256)
    assert (record["width"], record["height"]) == (320, 240)
    # AND the object read back through boto3 on the embedded endpoint is the source
    assert record["s3_bucket"] == stack.health["outputs"]["VideosBucketName"]
    assert s3_object_digest(stack.aws_endpoint, record["s3_bucket"], record["s3_key"]) == (
        len(origin.data),
        origin.sha256,
    )
    head = stack.aws("s3").head_object(Bucket=record["s3_bucket"], Key=record["s3_key"])
    assert head["ContentType"] == "video/mp4" and head["Metadata"]["task-id"] == task_id
    # AND the presigned download link works against the embedded endpoint
    download = requests.get(record["download_url"], timeout=10)
    assert download.status_code == 200 and download.content == origin.data


def test_old_key_still_signs_and_bad_credentials_are_refused(
    stack: Running, origin: Video, provider: FakeProvider
) -> None:
    task_id = f"it-{uuid.uuid4().hex[:10]}"
    provider.script(task_id, [provider.success(origin.url)])
    assert post_callback(stack, task_id, origin.url, key=OLD_KEY).status_code == 200
    assert post_callback(stack, "it-badkey", origin.url, key="not-a-key").status_code == 401
    assert post_callback(stack, "it-notoken", origin.url, token=None).status_code == 401
    assert post_callback(stack, "it-badtoken", origin.url, token="wrong").status_code == 401


def test_submitted_task_comes_back_through_its_own_local_callback_url(
    stack: Running, origin: Video, provider: FakeProvider
) -> None:
    # GIVEN a task the provider will report as done
    task_id = f"it-sub-{uuid.uuid4().hex[:8]}"
    provider.script(task_id, [provider.success(origin.url, audio_id="audio-it")])
    # WHEN it is submitted through the local API
    answer = requests.post(
        f"{stack.api}/tasks", json={"task_id": task_id, "audio_id": "audio-it"}, timeout=15
    )
    assert answer.status_code == 202, answer.text + stack.tail()
    assert answer.json()["status"] == "SUBMITTED"
    # THEN the provider was handed this stack's own callback URL, token included
    callback_url = provider.callback_urls[task_id]
    assert callback_url == f"{stack.api}/callbacks?token={TOKEN}"
    # AND the provider's callback to exactly that URL ends with the video stored
    assert post_callback(stack, task_id, origin.url, callback_url=callback_url).status_code == 200
    record = wait_for_task(stack.api, task_id, {"STORED", "TRANSFER_FAILED"}, timeout=30)
    assert record["status"] == "STORED" and record["audio_id"] == "audio-it", f"{record}{stack.tail()}"
    assert provider.requests_to(RECORD_INFO_PATH, task_id)  # the transfer confirmed the URL first


def test_reconcile_finds_a_task_whose_callback_never_came(
    stack: Running, origin: Video, provider: FakeProvider
) -> None:
    # GIVEN a submitted task whose callback the provider never sends
    task_id = f"it-rec-{uuid.uuid4().hex[:8]}"
    provider.script(task_id, [provider.success(origin.url)])
    answer = requests.post(f"{stack.api}/tasks", json={"task_id": task_id, "audio_id": "a"}, timeout=15)
    assert answer.status_code == 202, answer.text
    # WHEN the schedule runs reconcile after RECONCILE_AFTER_SECONDS
    record = wait_for_task(stack.api, task_id, {"STORED", "TRANSFER_FAILED"}, timeout=20)
    # THEN the poll queued the transfer and the video is stored, with no callback at all
    assert record["status"] == "STORED", f"{record}{stack.tail()}"
    assert not record.get("callbacks")
    assert record["sha256"] == origin.sha256


def test_routes_the_template_does_not_declare_answer_404_or_405(stack: Running) -> None:
    # GIVEN paths no route declares, and declared paths with a method they do not take
    for method, path in [("GET", "/nowhere"), ("POST", "/Prod/nowhere/deeper"), ("GET", "/tasks/a/b")]:
        # WHEN they are called THEN the answer is 404 not_found, never a 403 or a 500
        answer = requests.request(method, f"{stack.api}{path}", timeout=5)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found"), (method, path)
    for method, path, allow in [("GET", "/callbacks", "POST"), ("DELETE", "/tasks/x", "GET")]:
        answer = requests.request(method, f"{stack.api}{path}", timeout=5)
        assert (answer.status_code, answer.json()["error"]) == (405, "method_not_allowed"), (method, path)
        assert answer.headers["Allow"] == allow
    assert requests.get(f"{stack.api}/tasks/unknown-task", timeout=5).status_code == 404


# --- the transfer queue -------------------------------------------------------------------


def test_poisoned_message_reaches_the_dead_letter_queue_after_five_receives(stack: Running) -> None:
    # GIVEN a transfer message the handler can never process
    sqs = stack.aws("sqs")
    outputs = stack.health["outputs"]
    body = f"not json {uuid.uuid4().hex}"
    message_id = sqs.send_message(QueueUrl=outputs["TransferQueueUrl"], MessageBody=body)["MessageId"]
    # WHEN the worker has failed it as often as the redrive policy allows
    deadline, found = time.monotonic() + 30, None
    while found is None and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=outputs["TransferDeadLetterQueueUrl"], WaitTimeSeconds=1, MaxNumberOfMessages=10
        ).get("Messages", []):
            if message["Body"] == body:
                found = message
    # THEN it is on the dead-letter queue, no longer on the transfer queue
    assert found is not None, "the poisoned message never reached the dead-letter queue" + stack.tail()
    assert found["MessageId"] == message_id
    attributes = sqs.get_queue_attributes(
        QueueUrl=outputs["TransferQueueUrl"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    # AND the worker handed it to the transfer function exactly 5 times, then let SQS move it
    receives = re.findall(rf"message {message_id} failed \(receive (\d+) of 5\)", stack.log())
    assert receives == ["1", "2", "3", "4", "5"], stack.tail()


# --- schedule and logs --------------------------------------------------------------------


def test_reconcile_runs_on_its_schedule(stack: Running) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reconcile = requests.get(f"{stack.api}/health", timeout=5).json()["functions"]["reconcile"]
        if reconcile["invocations"] >= 2:
            break
        time.sleep(0.5)
    assert reconcile["invocations"] >= 2 and reconcile["errors"] == 0, f"{reconcile}{stack.tail()}"


def test_every_log_line_is_tagged_with_its_function(
    stack: Running, origin: Video, provider: FakeProvider
) -> None:
    task_id = f"it-{uuid.uuid4().hex[:10]}"
    provider.script(task_id, [provider.success(origin.url)])
    assert post_callback(stack, task_id, origin.url).status_code == 200
    wait_for_task(stack.api, task_id, {"STORED", "TRANSFER_FAILED"}, timeout=30)
    lines = stack.log().splitlines()
    assert lines and all(TAG.match(line) for line in lines), [line for line in lines if not TAG.match(line)][
        :5
    ]
    # Each function's JSON lines carry its own Lambda context, even when they interleave.
    functions = [
        ("ingest", "IngestFunction"),
        ("transfer", "TransferFunction"),
        ("reconcile", "ReconcileFunction"),
    ]
    for tag, function in functions:
        records = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith(f"[{tag}] {{")]
        names = {r["function_name"] for r in records if "function_name" in r}
        assert names == {f"videohook-{function}"}, (tag, names)


# --- the API Gateway emulation, in-process ------------------------------------------------


def _sample(name: str) -> dict:
    return json.loads((ROOT / "events" / name).read_text())


def test_proxy_event_has_the_shape_of_the_sample_events() -> None:
    # GIVEN the local API with the template's GET /tasks/{task_id} route
    function = SimpleNamespace(logical_id="IngestFunction")
    route = Route.of("/tasks/{task_id}", "GET", function=function)  # type: ignore[arg-type]
    api = LocalApi([route], "Prod", "us-east-1", "123456789012", health=lambda: (200, {}))
    matched = api.match("GET", "/tasks/abc")
    assert matched is not None and matched[1] == {"task_id": "abc"}
    # WHEN a request becomes an event
    event = api.event(
        route,
        {"task_id": "abc"},
        "GET",
        "/tasks/abc",
        "a=1&a=2",
        [("Host", "h"), ("X-A", "1")],
        b"",
        "1.2.3.4",
    )
    # THEN it has the fields and request context of the repository's sample API events
    sample = _sample("get_task.json")
    assert set(event) == set(sample)
    assert set(event["requestContext"]) == set(sample["requestContext"])
    assert set(event["requestContext"]["identity"]) == set(sample["requestContext"]["identity"])
    assert event["resource"] == "/tasks/{task_id}" and event["pathParameters"] == {"task_id": "abc"}
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    assert event["requestContext"]["stage"] == "Prod" and event["requestContext"]["path"] == "/Prod/tasks/abc"
    assert event["requestContext"]["identity"]["sourceIp"] == "1.2.3.4"
    assert event["body"] is None and event["isBase64Encoded"] is False


def test_batch_item_failures_are_read_as_lambda_reads_them() -> None:
    ids = ["m1", "m2"]
    assert failed_ids({"batchItemFailures": []}, ids, True) == set()
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "m2"}]}, ids, True) == {"m2"}
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "other"}]}, ids, True) == {"m1", "m2"}
    assert failed_ids("not a dict", ids, True) == {"m1", "m2"}
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "m2"}]}, ids, False) == set()


# --- stopping -----------------------------------------------------------------------------


def process_group(pgid: int) -> list[int]:
    """Live processes in a process group, from /proc (no psutil)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def port_is_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_demo_script_exits_zero(demo: subprocess.Popen[str]) -> None:
    # The demo stops its own stack with SIGINT (Ctrl-C), so this also covers that path.
    code = demo.wait(timeout=60)
    demo.log.seek(0)  # type: ignore[attr-defined]
    output = demo.log.read()  # type: ignore[attr-defined]
    assert code == 0, output[-4000:]
    assert "settings used:" in output and "CALLBACK_TOKEN" in output and "WEBHOOK_HMAC_KEYS" in output
    assert "the archived video is the source video, byte for byte" in output
    assert "stack stopped (exit 0)" in output
    # AND the archived video is left in the file it names, identical to the bundled sample
    saved = next(
        line.split("saved ", 1)[1].split(" (", 1)[0]
        for line in output.splitlines()
        if line.startswith("saved ")
    )
    assert f"watch the archived video: {saved}" in output
    assert Path(saved).read_bytes() == (ROOT / "tests" / "fixtures" / "faststart.mp4").read_bytes()


def test_sigterm_stops_everything_and_leaves_no_process(stack: Running) -> None:
    # Last in this module on purpose: it stops the shared stack.
    pid = stack.process.pid
    assert process_group(pid)  # its own group (start_new_session): the scan sees all it started
    started = time.monotonic()
    assert stack.stop(signal.SIGTERM, timeout=15) == 0, stack.tail()
    assert time.monotonic() - started < 10
    assert process_group(pid) == []
    assert port_is_closed(stack.api_port) and port_is_closed(stack.aws_port)
    log = stack.log()
    assert "SIGTERM: stopping" in log and log.rstrip().endswith("stopped"), stack.tail()
    # Nothing above should have made a function fail unexpectedly (e.g. a torn DynamoDB read).
    assert '"level":"ERROR"' not in log and "-> 5" not in log, stack.tail(200)
