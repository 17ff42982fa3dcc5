"""Lambda entry point of the scheduled reconcile function (EventBridge, every minute)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from videohook.reconciler import Reconciler
from videohook.services import provider_client, services

logger = Logger()
tracer = Tracer(patch_modules=["botocore"])  # AWS SDK calls only: video URLs are signed
metrics = Metrics()
# Leave the function's last seconds for writing what was learnt (timeout 55 s in the template).
SAFETY_MARGIN_MS = 10_000


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id="-")
    # Without a provider API key nothing is polled, but tasks left without a way forward are
    # still queued again and 14-day-old submits ended (docs/reconcile.md).
    provider = provider_client()
    svc = services()
    deadline = max(1.0, (context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS) / 1000)
    report = Reconciler(svc.store, svc.queue, provider, deadline_seconds=deadline).run()
    metrics.add_metric(name="ReconcilePolled", unit=MetricUnit.Count, value=report.polled)
    metrics.add_metric(name="ReconcileQueued", unit=MetricUnit.Count, value=report.queued)
    # Tasks found stuck and queued again: alarmed on (docs/operations.md).
    metrics.add_metric(name="TasksRecovered", unit=MetricUnit.Count, value=report.recovered)
    if report.polled or report.recovered or report.ended or report.dropped or report.errors:
        logger.info("reconcile run", extra=asdict(report))
    return asdict(report)
