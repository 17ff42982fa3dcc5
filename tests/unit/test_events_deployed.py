"""The events function as SAM deploys it: its stream event source and its role."""

from __future__ import annotations

import json

from tests.unit.test_deployed_template import (
    actions,
    managed_policies,
    of_type,
    role_of,
    statements,
    transformed,
)


def _stream_mapping() -> dict:
    (mapping,) = [
        m
        for m in of_type(transformed(), "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["TasksTable", "StreamArn"]}
    ]
    return mapping["Properties"]


def test_the_stream_event_source_never_loses_a_change_silently() -> None:
    # GIVEN the event source mapping SAM makes of the EventsFunction's DynamoDB event
    mapping = _stream_mapping()
    # THEN failed records are reported one by one, failing batches split, retries bounded,
    # and what still fails goes to the on-failure queue (which has an alarm)
    assert mapping["FunctionName"] == {"Ref": "EventsFunction"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert 0 < mapping["MaximumRetryAttempts"] <= 10
    assert mapping["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}}
    }
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    (pattern,) = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    statuses = pattern["dynamodb"]["NewImage"]["status"]["S"]
    assert sorted(statuses) == ["GENERATION_FAILED", "STORED", "TRANSFER_FAILED"]


def test_the_events_role_reads_only_the_task_stream_and_puts_only_on_its_bus() -> None:
    resources = transformed()
    role = role_of(resources, "EventsFunction")
    assert managed_policies(role) == {
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    }
    granted = {a: s["Resource"] for s in statements(role) for a in actions(s)}
    assert set(granted) == {
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:ListStreams",
        "events:PutEvents",
        "sqs:SendMessage",
    }
    assert granted["dynamodb:GetRecords"] == {"Fn::GetAtt": ["TasksTable", "StreamArn"]}
    assert granted["sqs:SendMessage"] == {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}
    assert "event-bus/${EventBusName}" in granted["events:PutEvents"]["Fn::Sub"]
