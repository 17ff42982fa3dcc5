"""Operator tools: redrive (dead letters and TRANSFER_FAILED tasks) and the callback URL."""

from __future__ import annotations

import json

from infra import callback_url, redrive
from tests.conftest import AwsWorld
from videohook import services
from videohook.models import Callback


def test_redrive_moves_dead_letters_and_requeues_failed_tasks(aws: AwsWorld, capsys) -> None:
    # GIVEN one dead-lettered message and one TRANSFER_FAILED task on the local stack
    aws.use_function("TransferFunction")
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=aws.output("TransferDeadLetterQueue"), MessageBody='{"task_id": "dead-1"}')
    store = services.services().store
    store.record_callback(Callback(200, "ok", "failed-1", "https://cdn.example.com/v.mp4"))
    assert store.acquire_lease("failed-1", "w", 60) is not None
    store.mark_transfer_failed("failed-1", "w", "the source answered 503")
    # WHEN the operator redrives
    assert redrive.main([]) == 0
    # THEN both are on the transfer queue, the dead-letter queue is empty, the task is RECEIVED
    bodies = sorted(json.loads(m["Body"])["task_id"] for m in aws.queued_messages())
    assert bodies == ["dead-1", "failed-1"]
    assert aws.queued_messages("TransferDeadLetterQueue") == []
    assert store.get("failed-1")["status"] == "RECEIVED"
    assert "moved 1" in capsys.readouterr().out
    # WHEN run again THEN nothing more is queued
    redrive.main([])
    assert aws.queued_messages() == []


def test_callback_url_prints_the_deployed_url_with_its_token(aws: AwsWorld, capsys) -> None:
    # GIVEN a deployed stack's outputs (a stand-in CloudFormation stack with the template's output names)
    outputs = {
        "ApiBaseUrl": "https://abc123.execute-api.us-east-1.amazonaws.com/Prod",
        "CallbackTokenSecretArn": aws.output("CallbackTokenSecret"),
        "TasksTableName": aws.output("TasksTable"),
        "TransferQueueUrl": aws.output("TransferQueue"),
        "TransferDeadLetterQueueUrl": aws.output("TransferDeadLetterQueue"),
        "EventsDeadLetterQueueUrl": aws.output("EventsDeadLetterQueue"),
        "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:vh-AlarmTopic-1",
        "VideosBucketName": aws.output("VideosBucket"),
    }
    assert set(outputs) == set(aws.stack.template["Outputs"])
    template = {
        "Resources": {"Nothing": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    aws.client("cloudformation").create_stack(StackName="vh", TemplateBody=json.dumps(template))
    # WHEN the operator asks for the callback URL
    assert callback_url.main(["--stack", "vh"]) == 0
    # THEN it is the API's /callbacks with the generated token
    printed = capsys.readouterr().out.strip()
    assert (
        printed
        == f"https://abc123.execute-api.us-east-1.amazonaws.com/Prod/callbacks?token={aws.callback_token}"
    )
