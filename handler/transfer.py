"""Lambda entry point of the transfer function: SQS messages -> verified videos in S3.

Powertools batch processing reports each failed message on its own, so one bad message
never fails or repeats its neighbours; a message raised here comes back after the
visibility timeout, and after the template's maxReceiveCount goes to the dead-letter queue.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from videohook.models import TransferRequest
from videohook.services import transfer_service
from videohook.transfer_service import Delivery

logger = Logger()
tracer = Tracer(patch_modules=["botocore"])  # AWS SDK calls only: video URLs are signed
metrics = Metrics()
# A batch whose every record failed is still answered with batchItemFailures, not an exception.
# Seconds kept back from the Lambda timeout to abort the upload and release the task.
DEADLINE_MARGIN_SECONDS = 60
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@tracer.capture_method
def transfer_record(record: SQSRecord, lambda_context: LambdaContext) -> None:
    request = TransferRequest.from_json(record.body)
    logger.append_keys(task_id=request.task_id)
    receive_count = int(record.attributes.approximate_receive_count or 1)
    # Give the task back while there is time to do it cleanly, rather than be killed mid-copy.
    remaining = lambda_context.get_remaining_time_in_millis() / 1000
    deadline = time.monotonic() + max(remaining - DEADLINE_MARGIN_SECONDS, remaining / 2)
    outcome = transfer_service().handle(request.task_id, receive_count, deadline)
    if outcome.status is Delivery.STORED and outcome.video is not None:
        metrics.add_metric(name="VideosStored", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="BytesStored", unit=MetricUnit.Bytes, value=outcome.video.size)
        metrics.add_metric(name="TransferSeconds", unit=MetricUnit.Seconds, value=outcome.seconds)
    elif outcome.status is Delivery.TRANSFER_FAILED:
        count_failure(outcome.reason or "unknown")


def count_failure(reason: str) -> None:
    """Failures carry their reason as a dimension, so the alarm can be read by cause."""
    metrics.add_metric(name="TransferFailures", unit=MetricUnit.Count, value=1)
    with single_metric(name="TransferFailuresByReason", unit=MetricUnit.Count, value=1) as metric:
        metric.add_dimension(name="reason", value=reason)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    logger.append_keys(task_id="-")
    return process_partial_response(
        event=event, record_handler=transfer_record, processor=processor, context=context
    )
