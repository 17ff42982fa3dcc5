"""Bad configuration fails at start-up with one line naming the variable (docs/configuration.md).

A value that parses but can never be right (a URL where host names belong) is bad
configuration too: left alone it would refuse every callback, and the provider's links expire.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

import ingest
from infra.local.environment import create_local_bus
from testkit.lambda_context import LambdaContext
from tests.conftest import AwsWorld, answer_json, signed_callback
from tests.log_capture import captured_log_lines
from videohook.config import load_settings
from videohook.errors import ConfigError


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    yield from captured_log_lines()


@pytest.mark.parametrize(
    "value",
    ["https://cdn.example.com", "cdn.example.com/videos", "cdn.example.com:443", "*cdn.example.com", "*"],
)
def test_a_hosts_allowed_entry_that_no_host_can_match_fails_naming_the_variable(value: str) -> None:
    # GIVEN VIDEO_HOSTS_ALLOWED holding something that is not a host name or *.domain pattern
    env = {"VIDEO_HOSTS_ALLOWED": f"media.example.org,{value}"}
    # WHEN the settings are read / THEN they fail in one line naming the variable and the entry
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.message.startswith("VIDEO_HOSTS_ALLOWED ")
    assert repr(value) in info.value.message and "\n" not in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        "cdn.example.com",
        " CDN.Example.com. ",
        "*.example.com",
        "a.b,*.c.d",
        "203.0.113.7",
        "[2001:db8::1]",
        "",
    ],
)
def test_host_names_patterns_and_addresses_are_accepted(value: str) -> None:
    # GIVEN a well-formed VIDEO_HOSTS_ALLOWED / WHEN read / THEN it loads
    assert load_settings({"VIDEO_HOSTS_ALLOWED": value}).source_policy is not None


def test_a_callback_under_a_url_in_hosts_allowed_answers_500_not_a_400_that_loses_the_video(
    aws: AwsWorld, log_lines: list[str]
) -> None:
    # GIVEN the ingest function deployed with a URL where VIDEO_HOSTS_ALLOWED wants host names
    aws.use_function("IngestFunction", VIDEO_HOSTS_ALLOWED="https://cdn.example.com")
    # WHEN the provider posts a callback whose video is on that very host
    event = signed_callback("callback_success.json", token=aws.callback_token)
    answer = ingest.lambda_handler(event, LambdaContext())
    # THEN it is not refused as a bad video_url (the provider would give up): the function
    # fails as misconfigured (500: the provider retries) and logs one line naming the variable
    assert answer["statusCode"] == 500
    assert answer_json(answer)["error"] == "bad_configuration"
    messages = [json.loads(line)["message"] for line in log_lines]
    assert [m for m in messages if m.startswith("bad configuration: VIDEO_HOSTS_ALLOWED ")]


@pytest.mark.parametrize("variable", ["TASKS_TABLE", "TRANSFER_QUEUE_URL"])
def test_a_missing_resource_name_fails_in_one_line_naming_it(
    aws: AwsWorld, log_lines: list[str], variable: str
) -> None:
    # GIVEN the ingest function deployed without one of the resource names the template sets
    aws.use_function("IngestFunction", **{variable: ""})
    # WHEN the provider posts a callback
    answer = ingest.lambda_handler(
        signed_callback("callback_success.json", token=aws.callback_token), LambdaContext()
    )
    # THEN it answers 500 (the provider retries) and logs one line naming the variable
    assert (answer["statusCode"], answer_json(answer)["error"]) == (500, "bad_configuration")
    messages = [json.loads(line)["message"] for line in log_lines]
    assert f"bad configuration: {variable} is not set: it names a resource of the stack" in messages


@pytest.mark.parametrize("bus", ["bad/name", "has space", "x" * 300])
def test_a_bus_name_the_local_stack_cannot_make_fails_in_one_line_naming_it(bus: str) -> None:
    # GIVEN the local stack about to make the EVENT_BUS_NAME bus on its embedded endpoint
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        # WHEN the name is one EventBridge refuses (or no bus name at all)
        with pytest.raises(ConfigError) as info:
            create_local_bus(events, {"EVENT_BUS_NAME": bus})
    # THEN start-up fails with one line naming the variable, not a traceback from the SDK
    message = info.value.message
    assert message.startswith("EVENT_BUS_NAME ") and "\n" not in message


@pytest.mark.parametrize(
    ("bus", "made"), [("", []), ("default", []), ("videohook-events", ["videohook-events"])]
)
def test_a_good_bus_name_is_made_locally_unless_it_is_the_default(bus: str, made: list[str]) -> None:
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        create_local_bus(events, {"EVENT_BUS_NAME": bus})
        names = [b["Name"] for b in events.list_event_buses()["EventBuses"] if b["Name"] != "default"]
    assert names == made
