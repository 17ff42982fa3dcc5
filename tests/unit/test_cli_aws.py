"""The `videohook` command in-process against a template-built stack on moto (docs/cli.md).

Deployed-target paths that need only AWS (CloudFormation outputs, Secrets Manager, SQS,
DynamoDB): redrive and callback-url, through a stand-in CloudFormation stack whose outputs
are the template's output names. The HTTP commands, the local target and every command as
a subprocess are in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.credentials import Credentials

from testkit.cli import EVERY_COMMAND
from tests.conftest import HMAC_KEY, AwsWorld
from videohook import services
from videohook.models import Callback
from videohook_cli.main import cli, main, normalise
from videohook_cli.target import DeployedTarget, choose

COMMANDS = EVERY_COMMAND
API_BASE = "https://abc123.execute-api.us-east-1.amazonaws.com/Prod"


def deployed_stack(aws: AwsWorld, name: str = "vh") -> dict[str, str]:
    """A stand-in CloudFormation stack carrying the template's outputs for the moto resources."""
    outputs = {
        "ApiBaseUrl": API_BASE,
        "CallbackTokenSecretArn": aws.output("CallbackTokenSecret"),
        "WebhookHmacSecretArn": aws.output("WebhookHmacSecret"),
        "TasksTableName": aws.output("TasksTable"),
        "TransferQueueUrl": aws.output("TransferQueue"),
        "TransferDeadLetterQueueUrl": aws.output("TransferDeadLetterQueue"),
        "VideosBucketName": aws.output("VideosBucket"),
        "AlarmTopicArn": aws.output("AlarmTopic"),
        "EventsDeadLetterQueueUrl": aws.output("EventsDeadLetterQueue"),
    }
    assert set(outputs) == set(aws.stack.template["Outputs"])
    template = {
        "Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return outputs


def sigv4_verifies(
    method: str, url: str, headers: dict[str, str], body: bytes, credentials: Credentials, region: str
) -> bool:
    """Recompute the execute-api SigV4 signature of a request as API Gateway would, and compare."""
    auth = SigV4Auth(credentials, "execute-api", region)
    signed = {k.lower() for k in headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")}
    request = AWSRequest(
        method=method, url=url, data=body, headers={k: v for k, v in headers.items() if k.lower() in signed}
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
    return headers["Authorization"].endswith("Signature=" + auth.signature(string_to_sign, request))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_with_no_target_every_command_refuses_in_one_line(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN no --local/--stack and no VIDEOHOOK_* variable, and boto3 unable to create any client
    monkeypatch.delenv("VIDEOHOOK_LOCAL", raising=False)
    monkeypatch.delenv("VIDEOHOOK_STACK", raising=False)

    def no_aws(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an AWS client was made with no target")

    monkeypatch.setattr("boto3.session.Session.client", no_aws)
    # WHEN the command runs
    code, out, err = run(capsys, *command)
    # THEN it exits non-zero with one line saying how to choose a target
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("videohook: no target: pass --local")


def test_both_targets_at_once_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tasks", "--local", "--stack", "vh")
    assert code == 1 and err == "videohook: choose one target: --local or --stack, not both\n"


def test_a_bare_local_takes_the_default_url_even_before_an_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_PORT", raising=False)
    assert normalise(["show", "--local", "t1"]) == ["show", "--local=http://127.0.0.1:3000", "t1"]
    assert normalise(["--local", "http://127.0.0.1:4000", "tasks"]) == [
        "--local",
        "http://127.0.0.1:4000",
        "tasks",
    ]


def test_a_local_url_without_a_scheme_is_named_as_a_bad_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a --local URL with a port but no scheme, or with another scheme
    monkeypatch.delenv("VIDEOHOOK_LOCAL", raising=False)
    for url in ("localhost:3000", "ftp://127.0.0.1:3000"):
        # WHEN a command runs against it
        code, out, err = run(capsys, "tasks", "--local", url)
        # THEN one line says what --local takes (not "unexpected extra argument"), before any request
        assert code == 1 and out == ""
        assert (
            err == f"videohook: --local takes the local API's URL, like http://127.0.0.1:3000; got '{url}'\n"
        )


def test_a_local_url_that_is_not_a_videohook_stack_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN some other web server on loopback (it answers 404 with an HTML page)
    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>File not found</body></html>")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        # WHEN a command is pointed at it
        code, out, err = run(capsys, "tasks", "--local", url)
    finally:
        server.shutdown()
    # THEN one line says it is not a videohook local stack (no HTML page in the message)
    assert code == 1 and out == ""
    assert err == f"videohook: {url} is not a videohook local stack (no /_local/stack)\n"


def test_a_bad_videohook_local_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDEOHOOK_LOCAL", "localhost:3000")
    code, _, err = run(capsys, "tasks")
    assert code == 1
    assert (
        err
        == "videohook: VIDEOHOOK_LOCAL takes the local API's URL, like http://127.0.0.1:3000; got 'localhost:3000'\n"
    )


def test_a_bad_status_names_the_statuses_as_the_api_spells_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tasks", "--status", "done", "--local")
    assert code == 2 and out == ""
    assert err == (
        "videohook: Invalid value for '--status': 'done' is not a status; one of SUBMITTED, RECEIVED, "
        "TRANSFERRING, STORED, GENERATION_FAILED, TRANSFER_FAILED (see videohook tasks --help)\n"
    )


def test_hints_to_copy_carry_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN each kind of target
    monkeypatch.delenv("API_PORT", raising=False)
    # THEN the options a printed command line needs name it, so the line works when pasted
    assert choose("http://127.0.0.1:3000", None, None, {}).flags == "--local"
    assert choose("http://127.0.0.1:4000/", None, None, {}).flags == "--local http://127.0.0.1:4000"
    assert choose(None, "vh", "eu-west-1", {}).flags == "--stack vh --region eu-west-1"
    assert choose(None, None, None, {"VIDEOHOOK_STACK": "vh"}).flags == "--stack vh"


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", "--local")
    assert code == 2 and out == ""
    assert err == "videohook: Missing argument 'TASK_ID'. (see videohook show --help)\n"


def test_callback_url_of_a_deployed_stack_has_its_token(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a deployed stack's outputs and secrets
    deployed_stack(aws)
    # WHEN the owner asks for the callback URL
    code, out, _ = run(capsys, "callback-url", "--stack", "vh", "--region", "us-east-1")
    # THEN it is the API's /callbacks with the generated token
    assert code == 0
    assert out.strip() == f"{API_BASE}/callbacks?token={aws.callback_token}"


def test_deployed_target_reads_the_hmac_key_from_the_stack_secret(aws: AwsWorld) -> None:
    deployed_stack(aws)
    where = DeployedTarget("vh", "us-east-1")
    assert where.hmac_key() == HMAC_KEY
    assert where.callback_token() == aws.callback_token


def test_unknown_stack_is_one_line(aws: AwsWorld, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "callback-url", "--stack", "nope", "--region", "us-east-1")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("videohook: reading stack nope in us-east-1: ValidationError:")


def test_deployed_without_a_region_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code, _, err = run(capsys, "callback-url", "--stack", "vh")
    assert code == 1 and err == "videohook: no AWS region: pass --region R or set AWS_REGION\n"


def test_tasks_calls_are_signed_with_sigv4_for_execute_api(aws: AwsWorld) -> None:
    # GIVEN a deployed stack and the caller's credentials (moto's)
    deployed_stack(aws)
    where = DeployedTarget("vh", "us-east-1")
    url = f"{API_BASE}/tasks?limit=5"
    # WHEN a /tasks call is signed
    headers = where.sign("GET", url, None, {"Accept": "application/json"})
    # THEN it carries a SigV4 signature for execute-api in the stack's region, and it verifies
    assert "/us-east-1/execute-api/aws4_request" in headers["Authorization"]
    caller = aws.session.get_credentials().get_frozen_credentials()  # what the environment provides
    credentials = Credentials(caller.access_key, caller.secret_key, caller.token)
    assert f"Credential={caller.access_key}/" in headers["Authorization"]
    assert sigv4_verifies("GET", url, headers, b"", credentials, "us-east-1")
    assert not sigv4_verifies("GET", url + "0", headers, b"", credentials, "us-east-1")


def _refusing_scans(call: Any) -> Any:
    """The SDK's own call, refusing a DynamoDB Scan: failed tasks are found through an index."""

    def make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        assert operation != "Scan", f"a table scan: {params}"
        return call(client, operation, params)

    return make_api_call


def test_redrive_moves_dead_letters_and_requeues_failed_tasks(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a deployed stack with one dead-lettered message and one TRANSFER_FAILED task
    deployed_stack(aws)
    aws.use_function("TransferFunction")
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=aws.output("TransferDeadLetterQueue"), MessageBody='{"task_id": "dead-1"}')
    store = services.services().store
    store.record_callback(Callback(200, "ok", "failed-1", "https://cdn.example.com/v.mp4"))
    assert store.acquire_lease("failed-1", "w", 60) is not None
    store.mark_transfer_failed("failed-1", "w", "the source answered 503")
    # WHEN the owner redrives (every AWS call it makes is watched: a Scan fails the test)
    monkeypatch.setattr(BaseClient, "_make_api_call", _refusing_scans(BaseClient._make_api_call))
    code, out, _ = run(capsys, "redrive", "--stack", "vh", "--region", "us-east-1")
    # THEN both are on the transfer queue, the dead-letter queue is empty, the task is RECEIVED
    assert code == 0
    assert out.strip() == "moved 1 dead-lettered message(s) back; re-queued 1 TRANSFER_FAILED task(s)"
    bodies = sorted(json.loads(m["Body"])["task_id"] for m in aws.queued_messages())
    assert bodies == ["dead-1", "failed-1"]
    assert aws.queued_messages("TransferDeadLetterQueue") == []
    assert store.get("failed-1")["status"] == "RECEIVED"
    # WHEN run again THEN nothing more is queued
    code, out, _ = run(capsys, "redrive", "--stack", "vh", "--region", "us-east-1")
    assert code == 0 and "moved 0" in out and "re-queued 0" in out
    assert aws.queued_messages() == []


def test_no_command_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 0 and out.startswith("Usage: videohook [OPTIONS] COMMAND") and err == ""
    for command in (
        "tasks",
        "show",
        "watch",
        "download",
        "send-callback",
        "submit",
        "callback-url",
        "redrive",
    ):
        assert f"\n  {command} " in out


def test_the_shared_sample_calls_cover_every_command() -> None:
    # GIVEN the command group WHEN its commands are listed THEN testkit samples each one once
    assert sorted(c[0] for c in EVERY_COMMAND) == sorted(cli.commands)
