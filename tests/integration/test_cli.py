"""The `videohook` command as a user runs it: the installed console script, as a subprocess.

One local stack (`python -m infra.local.serve`) with a callback token, an HMAC key and the
fake provider switched on (LOCAL_FAKE_PROVIDER=true), plus loopback video origins. Every
command is driven against it with `--local`; then the same commands with `--stack` against a
"deployed" stack: a CloudFormation stack on the embedded moto endpoint whose outputs name the
local stack's resources and secrets, and whose ApiBaseUrl is a proxy that refuses any
/tasks call without a valid SigV4 signature for execute-api (as API Gateway's IAM auth does)
before passing it on. No real AWS anywhere. Last, with no target every command refuses in
one line and sends nothing to AWS.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.credentials import Credentials

from infra.local.harness import StackProcess, booted_stack, free_port
from infra.template import ROOT, load_template
from testkit.cli import EVERY_COMMAND
from testkit.video_source import Video, VideoServer
from tests.unit.test_cli_aws import sigv4_verifies

pytestmark = pytest.mark.integration

TOKEN, HMAC_KEY = "cli-callback-token", "cli-hmac-key"
FIXTURES = ROOT / "tests" / "fixtures"
VIDEOHOOK = Path(sys.executable).parent / "videohook"  # the console script `make` installs
DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def declares_archive_list() -> bool:
    """Whether template.yaml has the archive list route, GET /tasks (docs/api.md)."""
    for resource in load_template()["Resources"].values():
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            props = event.get("Properties", {})
            if (
                event.get("Type") == "Api"
                and props.get("Path") == "/tasks"
                and str(props.get("Method")).lower() == "get"
            ):
                return True
    return False


# Until the archive list is merged, what lists tasks cannot run; it runs as soon as the route exists.
NEEDS_LIST = pytest.mark.skipif(not declares_archive_list(), reason="GET /tasks is not in template.yaml yet")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Cli:
    """Runs `videohook ARGS` with a clean environment (no VIDEOHOOK_*, no real AWS settings)."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VIDEOHOOK_"))}
        self.env = {**base, "AWS_CONFIG_FILE": str(cwd / "no-config"), **(env or {})}
        self.cwd = cwd

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VIDEOHOOK), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("videohook: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


# --- the local stack -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


@pytest.fixture(scope="module")
def origin(videos: VideoServer) -> Video:
    return videos.serve_file(FIXTURES / "moov_at_end.mp4")


def boot(workdir: Path, name: str, **env: str) -> Iterator[StackProcess]:
    base = {"CALLBACK_TOKEN": TOKEN, "WEBHOOK_HMAC_KEYS": HMAC_KEY, "VIDEO_SOURCE_ALLOW_PRIVATE": "true"}
    with booted_stack({**base, **env}, workdir / f"{name}.log") as running:
        yield running


@pytest.fixture(scope="module")
def stack(workdir: Path) -> Iterator[StackProcess]:
    """Token and HMAC key, no provider API key; a failed transfer gives up after 2 attempts."""
    yield from boot(workdir, "stack", TRANSFER_MAX_ATTEMPTS="2", LOCAL_RETRY_SECONDS="1")


@pytest.fixture(scope="module")
def provider_stack(workdir: Path) -> Iterator[StackProcess]:
    """The same with LOCAL_FAKE_PROVIDER=true: submits go to the fake provider, which calls back."""
    yield from boot(
        workdir, "provider-stack", LOCAL_FAKE_PROVIDER="true", LOCAL_FAKE_PROVIDER_DELAY_SECONDS="0.5"
    )


@pytest.fixture(scope="module")
def local(stack: StackProcess, workdir: Path) -> Cli:
    return Cli(workdir, {"VIDEOHOOK_LOCAL": stack.api})


@pytest.fixture(scope="module")
def stored(local: Cli, origin: Video) -> str:
    """A task sent by `videohook send-callback` and watched by `videohook watch` until STORED."""
    task_id = new_id("cli-stored")
    sent = ok(local("send-callback", task_id, origin.url))
    assert sent.startswith(f"callback for {task_id}: HTTP 200") and "token + HMAC signature" in sent
    watched = local("watch", task_id, "--timeout", "60", "--interval", "0.2")
    assert ok(watched).startswith(f"{task_id} STORED: 271.7 KiB, 3.0 s, 640x360, sha256 {origin.sha256}")
    return task_id


def test_send_callback_then_watch_until_stored(stored: str) -> None:
    # (the fixture sends the callback and watches it to STORED: exit 0)
    assert stored.startswith("cli-stored-")


def test_show_prints_the_record(local: Cli, stack: StackProcess, stored: str, origin: Video) -> None:
    record = json.loads(ok(local("show", stored, "--json")))
    assert record["status"] == "STORED" and record["sha256"] == origin.sha256
    assert record["download_url"].startswith(f"{stack.aws_endpoint}/")  # presigned on the embedded S3
    table = ok(local("show", stored))
    assert f"task_id            {stored}" in table and origin.sha256 in table


def test_download_saves_the_video_with_the_source_sha256(local: Cli, stored: str, origin: Video) -> None:
    target = local.cwd / f"{stored}.mp4"
    saved = ok(local("download", stored))
    assert saved.strip() == f"saved {target.name} (271.7 KiB, sha256 {origin.sha256} matches the record)"
    assert sha256_of(target) == origin.sha256
    # AND an existing file is not replaced without --force
    assert "exists: pass --force" in one_line_error(local("download", stored))
    # AND a path that cannot be written is named in one line, with nothing fetched or left
    assert one_line_error(local("download", stored, "-o", "no-such-dir/v.mp4")) == (
        "videohook: cannot write no-such-dir/v.mp4: No such file or directory"
    )


def test_download_with_a_sha256_mismatch_exits_non_zero_and_keeps_nothing(
    local: Cli, stack: StackProcess, origin: Video
) -> None:
    # GIVEN a stored task whose record no longer matches its object
    task_id = new_id("cli-mismatch")
    ok(local("send-callback", task_id, origin.url))
    ok(local("watch", task_id, "--timeout", "60", "--interval", "0.2"))
    document = requests.get(f"{stack.api}/_local/stack", timeout=5).json()
    dynamodb = boto3.client("dynamodb", endpoint_url=stack.aws_endpoint, region_name="us-east-1", **_dummy())
    dynamodb.update_item(
        TableName=document["outputs"]["TasksTableName"],
        Key={"task_id": {"S": task_id}},
        UpdateExpression="SET sha256 = :other",
        ExpressionAttributeValues={":other": {"S": "0" * 64}},
    )
    # WHEN it is downloaded
    result = local("download", task_id, "-o", "mismatch.mp4")
    # THEN one line says so, the exit is non-zero, and no file is left
    assert one_line_error(result).startswith("videohook: MISMATCH: the download is 278240 bytes with sha256")
    assert not (local.cwd / "mismatch.mp4").exists() and not (local.cwd / "mismatch.mp4.part").exists()


def test_submit_goes_end_to_end_with_the_fake_provider(provider_stack: StackProcess, workdir: Path) -> None:
    # GIVEN the local stack with LOCAL_FAKE_PROVIDER=true
    local = Cli(workdir, {"VIDEOHOOK_LOCAL": provider_stack.api})
    task_id = new_id("cli-submit")
    # WHEN a task is submitted
    record = json.loads(ok(local("submit", task_id, "audio-0001", "--json")))
    # THEN it is SUBMITTED, the fake provider calls back, and the video is archived
    assert (record["task_id"], record["status"], record["audio_id"]) == (task_id, "SUBMITTED", "audio-0001")
    watched = ok(local("watch", task_id, "--timeout", "60", "--interval", "0.2"))
    assert watched.startswith(
        f"{task_id} STORED: 56.6 KiB, 4.0 s, 320x240, sha256 {sha256_of(FIXTURES / 'faststart.mp4')}"
    )


def test_callback_url_is_the_local_callbacks_route_with_the_token(local: Cli, stack: StackProcess) -> None:
    url = ok(local("callback-url")).strip()
    assert url == f"{stack.api}/Prod/callbacks?token={TOKEN}"
    # AND it is a URL the stack accepts a callback on (the token is right)
    answer = requests.post(
        url, json={"code": 400, "msg": "bad audio", "data": {"task_id": new_id("cli-url")}}, timeout=10
    )
    assert answer.status_code == 401  # the HMAC signature is still required: the token alone is not enough


def test_send_callback_for_a_failure_records_the_providers_code(local: Cli) -> None:
    task_id = new_id("cli-failed")
    ok(local("send-callback", task_id, "", "--code", "451", "--msg", "source audio could not be downloaded"))
    watched = local("watch", task_id, "--timeout", "30")
    assert watched.returncode == 1
    assert watched.stdout.strip() == f"{task_id} GENERATION_FAILED: source audio could not be downloaded"


def test_redrive_brings_back_dead_letters_and_transfer_failed_tasks(
    local: Cli, stack: StackProcess, videos: VideoServer
) -> None:
    # GIVEN a task whose source answers 503 on every attempt: it ends TRANSFER_FAILED
    task_id = new_id("cli-redrive")
    url = videos.add(f"/{task_id}.mp4", status=503)
    ok(local("send-callback", task_id, url))
    failed = local("watch", task_id, "--timeout", "60", "--interval", "0.2")
    assert failed.returncode == 1 and f"{task_id} TRANSFER_FAILED" in failed.stdout
    # AND a message in the dead-letter queue (for the same task: harmless twice, the lease decides)
    document = requests.get(f"{stack.api}/_local/stack", timeout=5).json()
    sqs = boto3.client("sqs", endpoint_url=stack.aws_endpoint, region_name="us-east-1", **_dummy())
    sqs.send_message(
        QueueUrl=document["outputs"]["TransferDeadLetterQueueUrl"],
        MessageBody=json.dumps({"task_id": task_id}),
    )
    # WHEN the source is back and the owner redrives
    videos.add(f"/{task_id}.mp4", (FIXTURES / "faststart.mp4").read_bytes())
    redriven = ok(local("redrive"))
    # THEN the dead letter went back, the failed task was re-queued, and it is stored
    assert redriven.strip() == "moved 1 dead-lettered message(s) back; re-queued 1 TRANSFER_FAILED task(s)"
    ok(local("watch", task_id, "--timeout", "60", "--interval", "0.2"))
    assert "re-queued 0" in ok(local("redrive"))


@NEEDS_LIST
def test_tasks_lists_the_archive_newest_first(local: Cli, stored: str) -> None:
    newer = new_id("cli-newest")
    ok(local("send-callback", newer, "", "--code", "500", "--msg", "server error"))
    listed = json.loads(ok(local("tasks", "--json", "--limit", "200")))["tasks"]
    ids = [task["task_id"] for task in listed]
    assert ids[0] == newer and stored in ids
    stamps = [task["updated_at"] for task in listed]
    assert stamps == sorted(stamps, reverse=True)
    only_stored = json.loads(ok(local("tasks", "--status", "stored", "--json")))["tasks"]
    assert only_stored and {task["status"] for task in only_stored} == {"STORED"}
    table = ok(local("tasks", "--limit", "200"))
    assert table.splitlines()[0].split() == [
        "TASK",
        "STATUS",
        "SIZE",
        "/",
        "PROGRESS",
        "DURATION",
        "DIMENSIONS",
        "UPDATED",
    ]
    assert any(line.split()[:3] == [stored, "STORED", "271.7"] for line in table.splitlines())


def test_errors_from_the_stack_are_one_line(local: Cli) -> None:
    assert (
        one_line_error(local("show", "no-such-task"))
        == "videohook: no task with this id (task_not_found, HTTP 404)"
    )
    failed = new_id("cli-nothing")
    ok(local("send-callback", failed, "", "--code", "400", "--msg", "bad audio"))
    assert one_line_error(local("download", failed)) == (
        f"videohook: {failed} is GENERATION_FAILED, not STORED: there is no video to download yet"
    )


def test_an_unreachable_local_stack_is_one_line(workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = one_line_error(Cli(workdir)("tasks", "--local", url))
    assert (
        message
        == f"videohook: cannot reach the local stack at {url}: is the local stack running? start it with `make serve`"
    )


# --- a deployed stack, on moto -----------------------------------------------------------------


class SigV4Gate:
    """API Gateway's IAM check in front of the local API: /tasks calls need a valid SigV4 signature."""

    def __init__(self, upstream: str, credentials: Credentials, region: str) -> None:
        self.upstream, self.credentials, self.region = upstream, credentials, region
        self.verified: list[str] = []
        self.refused: list[str] = []
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                url = f"http://{self.headers['Host']}{self.path}"
                if self.path.split("?")[0].startswith("/Prod/tasks"):
                    signed = "Authorization" in headers and sigv4_verifies(
                        self.command, url, headers, body, gate.credentials, gate.region
                    )
                    (gate.verified if signed else gate.refused).append(f"{self.command} {self.path}")
                    if not signed:
                        self._answer(403, b'{"message": "Missing Authentication Token"}', "application/json")
                        return
                forwarded = requests.request(
                    self.command,
                    gate.upstream + self.path,
                    data=body,
                    headers={k: v for k, v in headers.items() if k.lower() not in ("host", "authorization")},
                    timeout=30,
                )
                self._answer(
                    forwarded.status_code, forwarded.content, forwarded.headers.get("Content-Type", "")
                )

            def _answer(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _dummy() -> dict[str, str]:
    return {
        "aws_access_key_id": DUMMY["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture(scope="module")
def deployed(stack: StackProcess, workdir: Path) -> Iterator[tuple[Cli, SigV4Gate]]:
    """`--stack vh-deployed`: a CloudFormation stack on moto naming the local stack's resources."""
    document = requests.get(f"{stack.api}/_local/stack", timeout=5).json()
    gate = SigV4Gate(
        stack.api, Credentials(DUMMY["AWS_ACCESS_KEY_ID"], DUMMY["AWS_SECRET_ACCESS_KEY"]), "us-east-1"
    )
    outputs = {**document["outputs"], "ApiBaseUrl": f"{gate.url}/Prod"}
    template = {
        "Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    cloudformation = boto3.client(
        "cloudformation", endpoint_url=stack.aws_endpoint, region_name="us-east-1", **_dummy()
    )
    cloudformation.create_stack(StackName="vh-deployed", TemplateBody=json.dumps(template))
    cli = Cli(workdir, {"AWS_ENDPOINT_URL": stack.aws_endpoint, **DUMMY})
    yield cli, gate
    gate.server.shutdown()
    gate.server.server_close()


@NEEDS_LIST
def test_deployed_stack_commands_read_outputs_and_secrets_and_sign_with_sigv4(
    deployed: tuple[Cli, SigV4Gate], origin: Video, workdir: Path
) -> None:
    cli, gate = deployed
    target = ("--stack", "vh-deployed", "--region", "us-east-1")
    # callback-url: the ApiBaseUrl output and the token from the stack's secret
    assert ok(cli("callback-url", *target)).strip() == f"{gate.url}/Prod/callbacks?token={TOKEN}"
    # send-callback: token + HMAC key read from the stack's secrets (the callback route needs no SigV4)
    task_id = new_id("cli-deployed")
    assert "token + HMAC signature" in ok(cli("send-callback", task_id, origin.url, *target))
    # watch, show, tasks, download: /tasks calls, every one SigV4-signed and verified by the gate
    ok(cli("watch", task_id, "--timeout", "60", "--interval", "0.2", *target))
    assert json.loads(ok(cli("show", task_id, "--json", *target)))["status"] == "STORED"
    assert task_id in [t["task_id"] for t in json.loads(ok(cli("tasks", "--json", *target)))["tasks"]]
    ok(cli("download", task_id, "-o", "deployed.mp4", *target))
    assert sha256_of(workdir / "deployed.mp4") == origin.sha256
    # submit: a signed POST /tasks; this stack has no provider key, and the answer says how to set one
    refused = one_line_error(cli("submit", new_id("cli-deployed-submit"), "audio-9", *target))
    assert refused.startswith("videohook: no provider API key is configured") and "ProviderApiKey" in refused
    assert refused.endswith("(provider_not_configured, HTTP 501)")
    # redrive: SQS and DynamoDB through the caller's credentials, resources from the outputs
    assert ok(cli("redrive", *target)).startswith("moved 0 dead-lettered message(s) back")
    assert gate.refused == []
    assert {call.split("?")[0] for call in gate.verified} >= {
        f"GET /Prod/tasks/{task_id}",
        "GET /Prod/tasks",
        "POST /Prod/tasks",
    }
    # AND an unsigned call is refused by the gate (it does check)
    assert requests.get(f"{gate.url}/Prod/tasks/{task_id}", timeout=5).status_code == 403


def test_deployed_stack_that_does_not_exist_is_one_line(deployed: tuple[Cli, SigV4Gate]) -> None:
    cli, _ = deployed
    message = one_line_error(cli("show", "x", "--stack", "no-such-stack", "--region", "us-east-1"))
    assert message.startswith("videohook: reading stack no-such-stack in us-east-1: ValidationError:")


def test_deployed_without_credentials_is_one_line(stack: StackProcess, workdir: Path) -> None:
    cli = Cli(
        workdir,
        {"AWS_ENDPOINT_URL": stack.aws_endpoint, "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "none")},
    )
    message = one_line_error(cli("tasks", "--stack", "vh-deployed", "--region", "us-east-1", timeout=90))
    assert "no AWS credentials found" in message


# --- no target -------------------------------------------------------------------------------


class Recorder:
    """An HTTP server that counts every request: stands in for AWS to prove none is sent."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                recorder.requests.append(f"{self.command} {self.path}")
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


COMMANDS = EVERY_COMMAND


def test_with_no_target_every_command_refuses_in_one_line_and_calls_no_aws(workdir: Path) -> None:
    # GIVEN AWS credentials, a region and an endpoint that records every request, but no target
    recorder = Recorder()
    cli = Cli(workdir, {"AWS_ENDPOINT_URL": recorder.url, "AWS_REGION": "us-east-1", **DUMMY})
    try:
        for command in COMMANDS:
            # WHEN each command runs
            started = time.monotonic()
            result = cli(*command)
            # THEN it exits non-zero at once with one line, and nothing reached the endpoint
            message = one_line_error(result)
            assert message.startswith("videohook: no target: pass --local [API_URL]"), command
            assert result.stdout == "" and time.monotonic() - started < 10
    finally:
        recorder.server.shutdown()
    assert recorder.requests == []
