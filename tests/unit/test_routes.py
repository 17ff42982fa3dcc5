"""Route misses on both HTTP functions: 404 `not_found`, 405 where the path exists, never 500.

Each function is invoked through its template handler with its own environment, over the
sample API events with only the method and path changed.
"""

from __future__ import annotations

from typing import Any

import pytest

import ingest
import tasks
from testkit.lambda_context import LambdaContext
from tests.conftest import AwsWorld, answer_json, load_event

HANDLERS = {"IngestFunction": ingest.lambda_handler, "TasksFunction": tasks.lambda_handler}


def request(function: str, method: str, path: str) -> dict[str, Any]:
    """A sample API event of `function` with another method and path."""
    event = load_event("get_task.json" if function == "TasksFunction" else "callback_failure.json")
    event.update(httpMethod=method, path=path, pathParameters=None, body=None)
    event["requestContext"].update(httpMethod=method, path=f"/Prod{path}")
    return event


@pytest.mark.parametrize(
    ("function", "method", "path"),
    [
        # A path segment outside the resolver's URL-safe set (an emoji, raw or still encoded)
        ("TasksFunction", "GET", "/tasks/\N{GRINNING FACE}"),
        ("TasksFunction", "GET", "/tasks/%F0%9F%98%80/more"),
        ("TasksFunction", "GET", "/no/such/path"),
        ("TasksFunction", "POST", "/callbacks"),  # the other function's route
        ("IngestFunction", "GET", "/tasks/abc"),
        ("IngestFunction", "POST", "/"),
    ],
)
def test_a_route_miss_answers_404_not_found(aws: AwsWorld, function: str, method: str, path: str) -> None:
    # GIVEN the function as the template configures it
    aws.use_function(function)
    # WHEN a request matches none of its routes
    answer = HANDLERS[function](request(function, method, path), LambdaContext())
    # THEN it answers 404 not_found, as JSON, not a crash
    assert answer["statusCode"] == 404, answer
    assert answer_json(answer)["error"] == "not_found"
    assert answer["multiValueHeaders"]["Content-Type"] == ["application/json"]


@pytest.mark.parametrize(
    ("function", "method", "path", "allowed"),
    [
        ("TasksFunction", "DELETE", "/tasks/abc", "GET"),
        ("TasksFunction", "PUT", "/tasks", "POST"),
        ("IngestFunction", "GET", "/callbacks", "POST"),
    ],
)
def test_a_known_path_with_another_method_answers_405(
    aws: AwsWorld, function: str, method: str, path: str, allowed: str
) -> None:
    # GIVEN the function as the template configures it
    aws.use_function(function)
    # WHEN a path it serves is asked with a method it does not serve
    answer = HANDLERS[function](request(function, method, path), LambdaContext())
    # THEN it answers 405 and names the methods it takes
    assert answer["statusCode"] == 405, answer
    assert answer_json(answer)["error"] == "method_not_allowed"
    assert answer["multiValueHeaders"]["Allow"] == [allowed]
