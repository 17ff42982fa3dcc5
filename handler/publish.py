"""Lambda entry point of the events function: the task table's stream -> EventBridge.

A thin adapter over videohook.events. Powertools batch processing reports each failed
stream record by its sequence number, so Lambda retries from the first one that failed
(the records before it are not sent again); the template's event source bisects a failing
batch, retries it, and sends what still fails to the on-failure queue, which has an alarm.
Publishing twice is harmless: every delivery of one change has the same `event_id`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from videohook import aws
from videohook.errors import ConfigError
from videohook.events import EventPublisher, bus_name, event_of_change

logger = Logger()
tracer = Tracer(patch_modules=["botocore"])  # AWS SDK calls only, as every function
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


@lru_cache(maxsize=1)
def publisher() -> EventPublisher:
    """Built once per container; a bad EVENT_BUS_NAME fails here with one line naming it."""
    try:
        bus = bus_name(os.environ)
    except ConfigError as error:
        logger.error(f"bad configuration: {error.message}")
        raise
    return EventPublisher(aws.client("events"), bus)


@tracer.capture_method
def publish_record(record: DynamoDBRecord) -> None:
    keys = (record.raw_event.get("dynamodb") or {}).get("Keys") or {}
    logger.append_keys(task_id=(keys.get("task_id") or {}).get("S", "-"))
    event = event_of_change(record.raw_event)
    if event is None:
        return
    publisher().publish([event])
    metrics.add_metric(name="EventsPublished", unit=MetricUnit.Count, value=1)
    logger.info(
        "event published",
        extra={
            "detail_type": event.detail_type,
            "event_id": event.event_id,
            "task_status": event.detail["status"],
        },
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    logger.append_keys(task_id="-")
    publisher()  # configuration first: a bad bus name fails the batch before any record
    return process_partial_response(
        event=event, record_handler=publish_record, processor=processor, context=context
    )
