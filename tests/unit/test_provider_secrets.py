"""No provider text carries a secret onward: the callback token, any `token=` value, the API key.

The provider may quote our request back in its error text - the callBackUrl with its token
included. That text becomes the 502 answer of `POST /tasks`, an ERROR log line, a task's
`provider_msg` and an event, so it is scrubbed where it enters (the provider client and the
callback parser). Driven through the real entry points, on moto and a real-HTTP fake
provider that echoes the callBackUrl it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import import_module
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest

from infra.template import Stack
from testkit import provider as provider_server
from testkit.lambda_context import LambdaContext
from testkit.provider import ECHO_CALLBACK_URL, FakeProvider
from tests.conftest import AwsWorld, answer_json, load_event, signed_callback
from tests.log_capture import captured_log_lines
from videohook import services

KEY = "test-provider-key-0123456789abcdef"
ODD_TOKEN = "tok/en+with=odd&chars~0123456789"


def function_serving(path: str, method: str) -> tuple[str, Any]:
    """The template's function for an Api route, and its entry module (whatever its name)."""
    stack = Stack.from_file()
    for name in stack.functions():
        for event in stack.function_spec(name).get("Events", {}).values():
            props = event.get("Properties", {})
            if (
                event["Type"] == "Api"
                and props.get("Path") == path
                and props.get("Method", "").lower() == method
            ):
                return name, import_module(stack.function_spec(name)["Handler"].rsplit(".", 1)[0])
    raise AssertionError(f"no function serves {method.upper()} {path}")


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provider_server._Server, "request_queue_size", 128)
        with FakeProvider(api_key=KEY) as fake:
            yield fake


@pytest.fixture
def fp(provider: FakeProvider) -> FakeProvider:
    provider.reset()
    return provider


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    yield from captured_log_lines()


def forms(secret: str) -> set[str]:
    """The spellings a secret can take in echoed text."""
    return {secret, quote(secret, safe=""), quote_plus(secret), unquote(secret)}


@pytest.mark.parametrize(
    "echo",
    [
        f"callBackUrl {ECHO_CALLBACK_URL} is not reachable",
        f'{{"callBackUrl": "{ECHO_CALLBACK_URL}"}} rejected: invalid callback',
        f"invalid url: {ECHO_CALLBACK_URL}&extra=1 (token={ECHO_CALLBACK_URL})",
    ],
    ids=["plain", "json", "twice"],
)
@pytest.mark.parametrize("own_token", [False, True], ids=["deployed-token", "odd-characters-token"])
def test_a_provider_error_that_echoes_the_callback_url_never_shows_the_token(
    aws: AwsWorld, fp: FakeProvider, log_lines: list[str], echo: str, own_token: bool
) -> None:
    # GIVEN the function serving POST /tasks, with a provider key and a callback token
    function, entry = function_serving("/tasks", "post")
    overrides = {"CALLBACK_TOKEN_SECRET_ARN": "", "CALLBACK_TOKEN": ODD_TOKEN} if own_token else {}
    aws.use_function(
        function,
        PROVIDER_API_BASE=fp.base_url,
        PROVIDER_API_KEY=KEY,
        PROVIDER_API_KEY_SECRET_ARN="",
        **overrides,
    )
    token = ODD_TOKEN if own_token else aws.callback_token
    # AND a provider that refuses the submit, quoting the callBackUrl (token included) and the key
    fp.script_generate(fp.error(422, 422, f"{echo} for key {KEY}"))
    # WHEN a task is submitted through the real entry point
    answer = entry.lambda_handler(load_event("submit_task.json"), LambdaContext())
    body = answer_json(answer)
    # THEN the provider really did echo the token
    sent_url = fp.callback_urls.get("taskId_774b9aa0422f") or fp.requests[-1].body["callBackUrl"]
    assert "token=" in sent_url
    # AND the answer is the provider's 502 with its code and words, but no token and no key
    assert answer["statusCode"] == 502
    assert body["error"] == "provider_error" and body["provider_code"] == 422
    assert "/callbacks" in body["message"] and "token=***" in body["message"]
    shown = json.dumps(body) + body["message"]
    for secret in forms(token) | {KEY}:
        assert secret not in shown, f"{secret!r} in the answer: {body['message']}"
    # AND no log line of the request holds them either (the refusal is logged at ERROR)
    assert any("request refused" in line for line in log_lines)
    for line in log_lines:
        for secret in forms(token) | {KEY}:
            assert secret not in line, f"{secret!r} logged: {line[:500]}"


def test_a_failure_polled_from_the_provider_is_stored_without_the_token(
    aws: AwsWorld, fp: FakeProvider, log_lines: list[str]
) -> None:
    # GIVEN a submitted task whose generation then fails, the provider quoting the callback URL,
    # as is and inside another URL (reconcile's role cannot read the token: only the `token=`
    # form is recognisable there, which is how a URL carries it)
    function, entry = function_serving("/tasks", "post")
    aws.use_function(
        function,
        PROVIDER_API_BASE=fp.base_url,
        PROVIDER_API_KEY=KEY,
        PROVIDER_API_KEY_SECRET_ARN="",
        RECONCILE_AFTER_SECONDS="0",
    )
    token = aws.callback_token
    assert entry.lambda_handler(load_event("submit_task.json"), LambdaContext())["statusCode"] == 202
    task = "taskId_774b9aa0422f"
    url = fp.callback_urls[task]
    nested = f"https://relay.example.com/?next={quote(url, safe='')}"
    fp.script(task, [fp.failed(msg=f"callback to {url} failed (relayed as {nested})")])
    # WHEN reconcile polls it
    reconcile_function, _ = function_serving_schedule()
    aws.use_function(
        reconcile_function,
        PROVIDER_API_BASE=fp.base_url,
        PROVIDER_API_KEY=KEY,
        PROVIDER_API_KEY_SECRET_ARN="",
        RECONCILE_AFTER_SECONDS="0",
    )
    reconcile = import_module(
        Stack.from_file().function_spec(reconcile_function)["Handler"].rsplit(".", 1)[0]
    )
    reconcile.lambda_handler(load_event("reconcile_schedule.json"), LambdaContext())
    # THEN the task failed with the provider's words, minus the token
    record = services.services().store.get(task)
    assert record["status"] == "GENERATION_FAILED"
    assert "callback to" in record["provider_msg"]
    assert not any(secret in json.dumps(record, default=str) for secret in forms(token))
    assert not any(secret in line for line in log_lines for secret in forms(token))


def function_serving_schedule() -> tuple[str, dict]:
    stack = Stack.from_file()
    for name in stack.functions():
        for event in stack.function_spec(name).get("Events", {}).values():
            if event["Type"] == "Schedule":
                return name, event
    raise AssertionError("no scheduled function")


def test_a_callback_message_that_quotes_a_token_is_stored_without_it(
    aws: AwsWorld, log_lines: list[str]
) -> None:
    # GIVEN the callback function, and a failure callback whose msg quotes our callback URL
    function, entry = function_serving("/callbacks", "post")
    aws.use_function(function)
    token = aws.callback_token
    msg = f"could not reach https://example.com/callbacks?token={token}; retrying with {token}"
    body = {"code": 501, "msg": msg, "data": {"task_id": "echo-1", "video_url": None}}
    # WHEN it arrives
    answer = entry.lambda_handler(
        signed_callback("callback_success.json", token=token, body=body), LambdaContext()
    )
    # THEN it is accepted, and the stored message keeps its words but not the token
    assert answer["statusCode"] == 200
    record = services.services().store.get("echo-1")
    assert record["provider_msg"].startswith("could not reach https://example.com/callbacks?token=***")
    assert not any(secret in json.dumps(record, default=str) for secret in forms(token))
    assert not any(secret in line for line in log_lines for secret in forms(token))
