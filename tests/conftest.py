"""Shared test set-up: the AWS resources come from template.yaml, made on moto.

Every test that touches AWS gets a fresh `mock_aws` world built by `infra.template.Stack`
from the template itself, and runs a function with exactly the environment the template
gives it, so a name or key changed in the template is changed in the tests too.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import settings
from moto import mock_aws
from moto.kms import models as moto_kms

from infra.template import Stack, load_template
from testkit.callbacks import load_event, signed_event
from testkit.lambda_context import LambdaContext
from testkit.provider import FakeProvider
from videohook import services

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HMAC_KEY = "test-hmac-key-current"
# The last X-Webhook-Timestamp signed per task id in the current test (see `signed_callback`).
_stamps: dict[str, int] = {}

# Powertools reads its service name and metrics namespace when the handler modules are
# imported, so the template's values are set before any test imports one.
for _name, _value in load_template()["Globals"]["Function"]["Environment"]["Variables"].items():
    if _name.startswith("POWERTOOLS_"):
        os.environ.setdefault(_name, str(_value))
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# moto's KMS makes a fresh RSA-2048 key for the AWS-managed key behind the table's SSE in
# every mock_aws world (~100 ms of CPU per test, a third of the unit tier). No test signs with
# it, so each key spec is generated once and shared: a speed-up of the fake, not of our code.
_moto_private_keys: dict[str, Any] = {}
_generate_private_key = moto_kms.generate_private_key


def _shared_private_key(key_spec: str) -> Any:
    if key_spec not in _moto_private_keys:
        _moto_private_keys[key_spec] = _generate_private_key(key_spec)
    return _moto_private_keys[key_spec]


moto_kms.generate_private_key = _shared_private_key

# Hypothesis: `make unit` tries fewer examples per property so the suite stays fast; every
# property still runs, and failures found are replayed from .hypothesis first.
# HYPOTHESIS_PROFILE=thorough tries many more (before a release, or after touching ingest).
settings.register_profile("unit", max_examples=40)
settings.register_profile("thorough", max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "unit"))


@dataclass
class AwsWorld:
    """A template-built stack on moto, and helpers to run its functions."""

    stack: Stack
    session: Any
    monkeypatch: pytest.MonkeyPatch

    def use_function(self, function: str, **overrides: str) -> dict[str, str]:
        """Give the process the environment the template gives `function` (plus overrides)."""
        env = self.stack.function_environment(function)
        env.update(overrides)
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        services.reset()
        return env

    def output(self, logical: str) -> str:
        return self.stack.physical[logical]

    def context(self, function: str) -> LambdaContext:
        """Lambda's context for `function`, its remaining time counting down from the template's Timeout."""
        timeout = int(self.stack.function_spec(function)["Timeout"])
        return LambdaContext(function_name=function, timeout_seconds=timeout)

    @property
    def callback_token(self) -> str:
        arn = self.output("CallbackTokenSecret")
        return self.session.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]

    def client(self, service: str) -> Any:
        return self.session.client(service)

    def queued_messages(self, queue: str = "TransferQueue") -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        messages = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=self.output(queue), MaxNumberOfMessages=10, VisibilityTimeout=300
            )
            if not batch.get("Messages"):
                return messages
            messages += batch["Messages"]


@lru_cache(maxsize=1)
def _session() -> Any:
    """One boto3 session for all tests: building clients from a warm session is fast."""
    return boto3.session.Session()


def use_moto_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's dummy credentials and region, and no endpoint override: every client reaches mock_aws."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsWorld]:
    use_moto_credentials(monkeypatch)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_DEV", "false")
    from aws_lambda_powertools.utilities import parameters

    with mock_aws():
        parameters.clear_caches()
        session = _session()
        stack = Stack.from_file({"ProviderHmacKey": HMAC_KEY}).create(session)
        _stamps.clear()
        yield AwsWorld(stack=stack, session=session, monkeypatch=monkeypatch)
        services.reset()
        parameters.clear_caches()


@pytest.fixture(scope="session")
def provider_server() -> Iterator[FakeProvider]:
    """One fake provider for the whole run (stopping a server costs its 0.5 s poll interval).

    Take it through a fixture that calls `reset(api_key=...)`, so each test starts clean.
    """
    with FakeProvider() as fake:
        yield fake


def signed_callback(
    name: str,
    *,
    token: str | None,
    key: str = HMAC_KEY,
    body: dict[str, Any] | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A callback event from events/ with a fresh signature (and optionally another body).

    Each call is a new delivery, signed afresh as the provider signs every attempt: its
    timestamp differs from every earlier one for the same task in this test (a second earlier
    when needed), since the same task id and timestamp again is a replay that changes nothing.
    Pass `timestamp` to choose it, e.g. to replay a captured signature.
    """
    event = load_event(name)
    if timestamp is None:
        task_id = json.loads(event["body"] if body is None else json.dumps(body))["data"]["task_id"]
        timestamp = int(time.time())
        if task_id in _stamps:
            timestamp = min(timestamp, _stamps[task_id] - 1)
        _stamps[task_id] = timestamp
    return signed_event(event, key=key, token=token, body=body, timestamp=timestamp)


def answer_json(answer: dict[str, Any]) -> dict[str, Any]:
    body = answer["body"]
    if answer.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return json.loads(body)


INTEGRATION_DIRS = {"integration", "reliability"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/reliability starts processes: `integration`."""
    for item in items:
        parts = set(Path(str(item.path)).resolve().relative_to(ROOT / "tests").parts)
        if INTEGRATION_DIRS & parts:
            item.add_marker(pytest.mark.integration)
