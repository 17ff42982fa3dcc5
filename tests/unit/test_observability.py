"""Alarms reach someone, and the dashboard draws what the code emits (docs/operations.md).

The emitted metric names are read from the handler source itself (every `add_metric` and
`single_metric` call, an f-string name resolved through the literal arguments its function
is called with), so a metric added to the code and forgotten on the dashboard, or a
dashboard line for a metric nobody emits, fails here.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

import ingest
import transfer
from infra.template import ROOT, load_template
from testkit.lambda_context import LambdaContext
from tests.conftest import AwsWorld, signed_callback

NAMESPACE = "videohook"


def _literals(node: ast.AST) -> list[str]:
    """The string values an argument can take: a constant, or either branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    raise AssertionError(f"a metric name built from something other than literals: {ast.unparse(node)}")


def _names_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    names: set[str] = set()
    for function in functions.values():
        for call in ast.walk(function):
            if not (isinstance(call, ast.Call) and _callee(call) in ("add_metric", "single_metric")):
                continue
            name = next(k.value for k in call.keywords if k.arg == "name")
            if isinstance(name, ast.Constant):
                names.add(name.value)
                continue
            # f"Callbacks{outcome}": the parameter's values at every call of the function
            assert isinstance(name, ast.JoinedStr), ast.unparse(name)
            (hole,) = [v for v in name.values if isinstance(v, ast.FormattedValue)]
            parameter = ast.unparse(hole.value)
            position = [a.arg for a in function.args.args].index(parameter)
            fixed = "".join(v.value for v in name.values if isinstance(v, ast.Constant))
            for caller in ast.walk(tree):
                if isinstance(caller, ast.Call) and _callee(caller) == function.name:
                    names |= {fixed + value for value in _literals(caller.args[position])}
    return names


def _callee(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def emitted_metrics() -> set[str]:
    names: set[str] = set()
    for path in sorted((ROOT / "handler").rglob("*.py")):
        names |= _names_in(path)
    return names


def _dashboard() -> dict[str, Any]:
    body = load_template()["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(re.sub(r"\$\{[^}]+\}", "resolved", body))


def drawn_metrics() -> set[str]:
    """Metric names of the `videohook` namespace the dashboard draws, SEARCH expressions included."""
    names: set[str] = set()
    for widget in _dashboard()["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], dict) and "expression" in row[0]:
                expression = row[0]["expression"]
                if "{" + NAMESPACE in expression:
                    names |= set(re.findall(r'MetricName="([^"]+)"', expression))
            elif row[0] == NAMESPACE:
                names.add(row[1])
    return names


def _alarms() -> dict[str, dict[str, Any]]:
    resources = load_template()["Resources"]
    return {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}


def alarmed_metrics() -> set[str]:
    return {a["MetricName"] for a in _alarms().values() if a.get("Namespace") == NAMESPACE}


def test_the_code_emits_the_metrics_the_docs_list() -> None:
    emitted = emitted_metrics()
    documented = (ROOT / "docs" / "operations.md").read_text()
    assert {"CallbacksQueued", "CallbacksAccepted", "CallbacksRefused", "CallbacksFaulted"} <= emitted
    assert all(f"`{name}`" in documented for name in emitted), emitted


def test_every_metric_the_dashboard_draws_is_one_the_code_emits() -> None:
    drawn = drawn_metrics()
    assert drawn, "the dashboard draws no videohook metric"
    assert drawn <= emitted_metrics(), drawn - emitted_metrics()


def test_every_metric_the_code_emits_is_drawn_or_alarmed_on() -> None:
    emitted = emitted_metrics()
    assert emitted <= drawn_metrics() | alarmed_metrics(), emitted - drawn_metrics() - alarmed_metrics()


def test_every_alarm_watches_an_emitted_metric_or_an_aws_one() -> None:
    assert alarmed_metrics() <= emitted_metrics()
    # Tasks found stuck reach someone (docs/task-record.md "Nothing is stuck").
    assert "TasksRecovered" in alarmed_metrics()


def test_every_alarm_sends_to_the_topic_and_an_email_can_subscribe() -> None:
    template = load_template()
    for name, alarm in _alarms().items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    assert template["Resources"]["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


def test_the_alarms_cover_what_the_operator_must_hear_about() -> None:
    watched = {(a["Namespace"], a["MetricName"], json.dumps(a.get("Dimensions"))) for a in _alarms().values()}
    queues = {json.loads(d)[0]["Value"]["Fn::GetAtt"][0] for ns, _, d in watched if ns == "AWS/SQS"}
    assert queues == {"TransferDeadLetterQueue", "EventsDeadLetterQueue"}
    assert {m for ns, m, _ in watched if ns == NAMESPACE} >= {
        "TransferFailures",
        "CallbacksFaulted",
        "TasksRecovered",
    }


def test_the_dashboard_draws_what_the_operations_page_promises() -> None:
    titles = {w["properties"]["title"] for w in _dashboard()["widgets"]}
    assert {
        "Callbacks by outcome",
        "Videos stored",
        "Bytes stored",
        "Transfer time (s)",
        "Transfer failures by reason",
        "Queue depths",
        "Function errors",
    } <= titles
    stats = {
        row[-1].get("stat")
        for w in _dashboard()["widgets"]
        for row in w["properties"]["metrics"]
        if not isinstance(row[0], dict) and row[1] == "TransferSeconds"
    }
    assert stats == {"p50", "p99"}
    functions = load_template()["Resources"]
    errors = [
        row[3]
        for w in _dashboard()["widgets"]
        for row in w["properties"]["metrics"]
        if not isinstance(row[0], dict) and row[:2] == ["AWS/Lambda", "Errors"]
    ]
    assert len(errors) == sum(spec["Type"] == "AWS::Serverless::Function" for spec in functions.values())


# --- what the code really emits, as CloudWatch receives it --------------------------------------


def emitted_documents(out: str) -> list[dict[str, Any]]:
    """The embedded-metric-format documents printed on stdout (one JSON object a line)."""
    documents = []
    for line in out.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and "_aws" in document:
            documents.append(document)
    return documents


def emitted_series(out: str) -> set[tuple[str, str, frozenset[tuple[str, str]]]]:
    """(namespace, metric, dimensions) of every metric in the EMF documents on stdout."""
    series = set()
    for document in emitted_documents(out):
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((name, str(document[name])) for name in dimension_set)
                for metric in directive["Metrics"]:
                    series.add((directive["Namespace"], metric["Name"], dimensions))
    return series


def test_an_unexpected_crash_of_the_callback_counts_as_a_callback_fault(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the callback function, and a task record it cannot read (a status no code knows)
    aws.use_function("IngestFunction")
    event = signed_callback("callback_success.json", token=aws.callback_token)
    task_id = json.loads(event["body"])["data"]["task_id"]
    aws.client("dynamodb").put_item(
        TableName=aws.output("TasksTable"), Item={"task_id": {"S": task_id}, "status": {"S": "UNHEARD_OF"}}
    )
    capsys.readouterr()
    # WHEN the provider's callback arrives
    answer = ingest.lambda_handler(event, LambdaContext())
    # THEN it is answered 500 (so the provider retries) without details
    assert answer["statusCode"] == 500 and json.loads(answer["body"])["error"] == "internal_error"
    # AND the 5xx is counted as CallbacksFaulted, in the series the callback 5xx alarm watches
    alarm = _alarms()["CallbackFaultsAlarm"]
    watched = (
        alarm["Namespace"],
        alarm["MetricName"],
        frozenset((d["Name"], d["Value"]) for d in alarm["Dimensions"]),
    )
    assert watched in emitted_series(capsys.readouterr().out)


def test_the_dashboard_and_alarms_name_the_dimensions_powertools_emits(
    aws: AwsWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the transfer function counting a failure, as deployed (its service and namespace)
    aws.use_function("TransferFunction")

    capsys.readouterr()
    transfer.count_failure("link_expired")
    transfer.metrics.flush_metrics()
    series = emitted_series(capsys.readouterr().out)
    # THEN the plain count carries exactly the `service` dimension, as every videohook row
    # of the dashboard and every videohook alarm names it
    service = frozenset(
        {("service", aws.stack.function_environment("TransferFunction")["POWERTOOLS_SERVICE_NAME"])}
    )
    assert (NAMESPACE, "TransferFailures", service) in series
    rows = [
        row
        for w in _dashboard()["widgets"]
        for row in w["properties"]["metrics"]
        if not isinstance(row[0], dict) and row[0] == NAMESPACE
    ]
    for row in rows:
        names = [part for part in row[2:] if isinstance(part, str)]
        assert frozenset(zip(names[::2], names[1::2], strict=True)) == service, row
    for name, alarm in _alarms().items():
        if alarm["Namespace"] == NAMESPACE:
            assert frozenset((d["Name"], d["Value"]) for d in alarm["Dimensions"]) == service, name
    # AND the by-reason count carries `reason` and `service`, the SEARCH schema's dimensions
    (by_reason,) = [dims for ns, metric, dims in series if metric == "TransferFailuresByReason"]
    assert ("reason", "link_expired") in by_reason
    (expression,) = [
        row[0]["expression"]
        for w in _dashboard()["widgets"]
        for row in w["properties"]["metrics"]
        if isinstance(row[0], dict) and "TransferFailuresByReason" in row[0].get("expression", "")
    ]
    (schema,) = re.findall(r"\{([^}]+)\}", expression)
    namespace, *dimension_names = [part.strip() for part in schema.split(",")]
    assert namespace == NAMESPACE and set(dimension_names) == {name for name, _ in by_reason}
