"""GET /tasks: the archive newest first, paged by an opaque cursor, never a table scan."""

from __future__ import annotations

import base64
import importlib
import itertools
from typing import Any

import pytest

from testkit.lambda_context import LambdaContext
from tests.conftest import AwsWorld, answer_json, load_event
from videohook import services
from videohook.lifecycle import public_record
from videohook.models import Callback

TASK_COUNT = 250


def _handler(aws: AwsWorld) -> Any:
    aws.use_function("TasksFunction")
    module_name, name = aws.stack.function_handler("TasksFunction").rsplit(".", 1)
    return getattr(importlib.import_module(module_name), name)


def _list(handler: Any, **query: str) -> dict[str, Any]:
    event = load_event("list_tasks.json")
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} or None
    answer = handler(event, LambdaContext())
    return {"status": answer["statusCode"], **answer_json(answer)}


class Calls:
    """Every DynamoDB operation the list makes, seen through botocore's event hooks."""

    def __init__(self, client: Any) -> None:
        self.operations: list[str] = []
        client.meta.events.register("before-call.dynamodb", self._seen)
        client.meta.events.register("before-call.dynamodb.Scan", self._refuse)

    def _seen(self, model: Any, **_: Any) -> None:
        self.operations.append(model.name)

    @staticmethod
    def _refuse(**_: Any) -> None:
        pytest.fail("GET /tasks made a DynamoDB Scan")


def _archive(aws: AwsWorld, count: int) -> list[str]:
    """`count` tasks written at known times (three per millisecond: ties on updated_at), oldest first."""
    store = services.services().store
    ticks = itertools.count()
    store.clock = lambda: 1_790_000_000 + next(ticks) // 3 / 1000
    task_ids = []
    for n in range(count):
        task_id = f"task-{n:04d}"
        if n % 5 == 0:
            store.record_callback(Callback(451, "generation failed", task_id, None))
        else:
            store.record_submitted(task_id, f"audio-{n}")
        task_ids.append(task_id)
    return task_ids


def test_250_tasks_paged_by_7_come_back_each_once_newest_first_without_a_scan(aws: AwsWorld) -> None:
    # GIVEN 250 tasks, some sharing an updated_at
    handler = _handler(aws)
    _archive(aws, TASK_COUNT)
    calls = Calls(services.services().store.client)
    # WHEN they are listed 7 at a time, following next_cursor to the end
    seen: list[dict[str, Any]] = []
    pages = 0
    query: dict[str, str] = {"limit": "7"}
    while True:
        page = _list(handler, **query)
        assert page["status"] == 200, page
        assert len(page["tasks"]) <= 7
        seen += page["tasks"]
        pages += 1
        if page["next_cursor"] is None:
            break
        assert len(page["tasks"]) == 7
        query = {"limit": "7", "cursor": page["next_cursor"]}
    # THEN every task came exactly once, newest first, in ceil(250 / 7) pages with one Query each
    ids = [task["task_id"] for task in seen]
    assert sorted(ids) == [f"task-{n:04d}" for n in range(TASK_COUNT)]
    assert len(ids) == len(set(ids))
    stamps = [task["updated_at"] for task in seen]
    assert stamps == sorted(stamps, reverse=True)
    assert pages == -(-TASK_COUNT // 7)
    assert calls.operations == ["Query"] * pages
    # AND the records are the public record as GET /tasks/{id} shows it, without download_url
    store = services.services().store
    assert seen[0] == public_record(store.get(seen[0]["task_id"]))
    assert not any({"download_url", "list_partition", "revision"} & set(task) for task in seen)


def test_a_status_filter_pages_through_that_status_only(aws: AwsWorld) -> None:
    # GIVEN 40 tasks, 8 of them GENERATION_FAILED
    handler = _handler(aws)
    _archive(aws, 40)
    Calls(services.services().store.client)
    # WHEN GENERATION_FAILED tasks are listed 3 at a time
    ids: list[str] = []
    query = {"status": "GENERATION_FAILED", "limit": "3"}
    while True:
        page = _list(handler, **query)
        ids += [task["task_id"] for task in page["tasks"]]
        assert {task["status"] for task in page["tasks"]} <= {"GENERATION_FAILED"}
        if not page["next_cursor"]:
            break
        query = {**query, "cursor": page["next_cursor"]}
    # THEN exactly those 8 came, newest first
    assert ids == [f"task-{n:04d}" for n in range(35, -1, -5)]
    # AND the default page is 25 tasks
    assert len(_list(handler)["tasks"]) == 25


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _tampered(cursor: str) -> list[str]:
    """Every one-character change of the cursor, a forged position, and junk."""
    changed = [
        cursor[:i] + ALPHABET[(ALPHABET.index(c) + 1) % 64] + cursor[i + 1 :]
        for i, c in enumerate(cursor)
        if c != "."
    ]
    body, mac = cursor.split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged = base64.urlsafe_b64encode(payload.replace(b"task-", b"task-9")).rstrip(b"=").decode()
    return [*changed, f"{forged}.{mac}", body, cursor + "x", "", "not a cursor", "." * 3]


def test_a_tampered_or_foreign_cursor_answers_400(aws: AwsWorld) -> None:
    # GIVEN a real cursor of the unfiltered listing
    handler = _handler(aws)
    _archive(aws, 10)
    cursor = _list(handler, limit="2")["next_cursor"]
    assert cursor
    # WHEN it is altered in any way, or used with another filter
    answers = [_list(handler, limit="2", cursor=bad) for bad in _tampered(cursor)]
    answers.append(_list(handler, limit="2", status="SUBMITTED", cursor=cursor))
    # THEN every one answers 400 invalid_cursor, and the real one still works
    assert [(a["status"], a["error"]) for a in answers] == [(400, "invalid_cursor")] * len(answers)
    assert _list(handler, limit="2", cursor=cursor)["status"] == 200


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"status": "DONE"}, "invalid_status"),
        ({"status": "stored"}, "invalid_status"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "101"}, "invalid_limit"),
        ({"limit": "-1"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "1e2"}, "invalid_limit"),
    ],
)
def test_a_bad_status_or_limit_answers_400(aws: AwsWorld, query: dict[str, str], error: str) -> None:
    handler = _handler(aws)
    answer = _list(handler, **query)
    assert (answer["status"], answer["error"]) == (400, error)


def test_an_empty_archive_is_one_empty_page(aws: AwsWorld) -> None:
    handler = _handler(aws)
    assert _list(handler, limit="100") == {"status": 200, "tasks": [], "next_cursor": None}


def test_the_list_route_is_iam_protected_and_may_query_only_its_two_indexes() -> None:
    # GIVEN the template
    from infra.template import load_template

    template = load_template()
    tasks = template["Resources"]["TasksFunction"]["Properties"]
    route = tasks["Events"]["ListTasks"]["Properties"]
    # THEN GET /tasks uses the API's default authorizer (IAM), and the role queries exactly the list indexes
    assert (route["Path"], route["Method"], route.get("Auth")) == ("/tasks", "GET", None)
    assert template["Resources"]["VideohookApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    statements = [s for policy in tasks["Policies"] for s in policy["Statement"]]
    queries = [s for s in statements if "dynamodb:Query" in s["Action"]]
    assert [q["Resource"] for q in queries] == [
        [{"Fn::Sub": "${TasksTable.Arn}/index/by-updated"}, {"Fn::Sub": "${TasksTable.Arn}/index/by-status"}]
    ]
    indexes = {
        i["IndexName"] for i in template["Resources"]["TasksTable"]["Properties"]["GlobalSecondaryIndexes"]
    }
    assert {"by-updated", "by-status"} <= indexes
    assert not any("Scan" in str(s["Action"]) for s in statements)
