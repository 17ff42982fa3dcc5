"""template.yaml is the one truth: every function runs from it, and its promises hold."""

from __future__ import annotations

import importlib
import json

import pytest

from infra.template import Stack, load_template
from testkit.lambda_context import LambdaContext
from tests.conftest import AwsWorld, answer_json, load_event

SAMPLE_EVENTS = {
    "IngestFunction": "callback_failure.json",
    "TasksFunction": "get_task.json",
    "TransferFunction": "transfer_message.json",
    "ReconcileFunction": "reconcile_schedule.json",
}


def test_every_function_has_a_sample_event() -> None:
    assert set(Stack.from_file().functions()) == set(SAMPLE_EVENTS)


@pytest.mark.parametrize("function", sorted(SAMPLE_EVENTS))
def test_every_function_runs_from_its_template_handler(aws: AwsWorld, function: str) -> None:
    # GIVEN the function's environment and handler exactly as the template declares them
    aws.use_function(function)
    module_name, handler_name = aws.stack.function_handler(function).rsplit(".", 1)
    handler = getattr(importlib.import_module(module_name), handler_name)
    # WHEN it is invoked with its sample event (no task exists yet)
    answer = handler(load_event(SAMPLE_EVENTS[function]), LambdaContext())
    # THEN it answers as Lambda expects, without an error
    if function == "IngestFunction":
        # (the sample is not signed with this stack's token)
        assert answer["statusCode"] == 401 and answer_json(answer)["error"] == "bad_token"
    elif function == "TasksFunction":
        assert answer["statusCode"] == 404 and answer_json(answer)["error"] == "task_not_found"
    elif function == "TransferFunction":
        assert answer == {"batchItemFailures": []}
    else:
        # with or without a provider API key it looks at the due tasks: none yet
        assert answer["recovered"] == answer["polled"] == 0 and answer["errors"] == []


def _statements(spec: dict) -> list[dict]:
    return [s for policy in spec.get("Policies", []) for s in policy.get("Statement", [])]


def test_transfer_queue_and_function_settings_hold_together(aws: AwsWorld) -> None:
    stack = aws.stack
    transfer = stack.function_spec("TransferFunction")
    queue = stack.resources["TransferQueue"]["Properties"]
    # Lambda's SQS guidance: visibility timeout at least 6x the function timeout.
    assert queue["VisibilityTimeout"] >= 6 * transfer["Timeout"]
    assert transfer["Timeout"] >= 840
    # The last attempt the code counts is the queue's last receive.
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "TransferMaxAttempts"}
    assert transfer["Environment"]["Variables"]["TRANSFER_MAX_ATTEMPTS"] == {"Ref": "TransferMaxAttempts"}
    event = stack.sqs_event("TransferFunction")
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == "20"


def test_only_the_callback_route_is_open() -> None:
    template = load_template()
    api = template["Resources"]["VideohookApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    open_routes = [
        (name, e["Properties"]["Path"])
        for name, spec in template["Resources"].items()
        if spec["Type"] == "AWS::Serverless::Function"
        for e in spec["Properties"].get("Events", {}).values()
        if e["Type"] == "Api" and e["Properties"].get("Auth") == {"Authorizer": "NONE"}
    ]
    assert open_routes == [("IngestFunction", "/callbacks")]


def test_policies_name_no_wildcard_action_or_resource() -> None:
    stack = Stack.from_file()
    for function in stack.functions():
        for statement in _statements(stack.resources[function]["Properties"]):
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            assert not any("*" in action for action in actions), (function, actions)
            # The one wildcard allowed: the objects under the bucket's videos/ prefix.
            resources = json.dumps(statement.get("Resource")).replace("/videos/*", "")
            assert "*" not in resources, (function, statement)


def test_bucket_is_private_versioned_encrypted_and_cleans_up_uploads() -> None:
    bucket = load_template()["Resources"]["VideosBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    policy = load_template()["Resources"]["VideosBucketPolicy"]["Properties"]["PolicyDocument"]
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
