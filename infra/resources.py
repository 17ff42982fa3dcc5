"""Find a videohook stack's resources, deployed (CloudFormation outputs) or local (moto)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.template import Stack

LOCAL_PREFIX = "videohook"


@dataclass(frozen=True)
class Resources:
    table: str
    transfer_queue_url: str
    dead_letter_queue_url: str
    bucket: str
    api_base_url: str | None = None
    callback_token_secret: str | None = None


def deployed(session: Any, stack_name: str) -> Resources:
    """Read the stack's outputs; the output names are the template's."""
    stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return Resources(
        table=outputs["TasksTableName"],
        transfer_queue_url=outputs["TransferQueueUrl"],
        dead_letter_queue_url=outputs["TransferDeadLetterQueueUrl"],
        bucket=outputs["VideosBucketName"],
        api_base_url=outputs["ApiBaseUrl"],
        callback_token_secret=outputs["CallbackTokenSecretArn"],
    )


def local(session: Any, prefix: str = LOCAL_PREFIX) -> Resources:
    """The local stack names its resources `{prefix}-{LogicalId}` (see Stack.create)."""
    stack = Stack.from_file()
    sqs = session.client("sqs")

    def queue(logical: str) -> str:
        return sqs.get_queue_url(QueueName=f"{prefix}-{logical}")["QueueUrl"]

    (table,) = stack.of_type("AWS::DynamoDB::Table")
    (bucket,) = stack.of_type("AWS::S3::Bucket")
    # The transfer queue is the one with a redrive policy; its dead-letter queue is the one it names.
    (transfer,) = [
        q for q in stack.of_type("AWS::SQS::Queue") if "RedrivePolicy" in stack.resources[q]["Properties"]
    ]
    dead_letter = stack.resources[transfer]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"][
        "Fn::GetAtt"
    ][0]
    return Resources(
        table=f"{prefix}-{table}",
        transfer_queue_url=queue(transfer),
        dead_letter_queue_url=queue(dead_letter),
        bucket=f"{prefix}-{bucket}".lower(),
    )
