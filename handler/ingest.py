"""Lambda entry point of the provider's callback: `POST /callbacks`, the one open route.

A thin adapter: it turns API Gateway events into calls on the core; the answers to errors
and route misses are shared with tasks.py (http_adapter.py). Its role can record the task,
queue the transfer and read the callback token and HMAC key, nothing more.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from http_adapter import HttpApi, json_response
from videohook.callbacks import CallbackReceiver, CallbackRequest
from videohook.services import services

logger = Logger()
tracer = Tracer(patch_modules=["botocore"])  # AWS SDK calls only: video URLs are signed
metrics = Metrics()


def _count_callback(outcome: str) -> None:
    metrics.add_metric(name=f"Callbacks{outcome}", unit=MetricUnit.Count, value=1)


def _count_refusal(status: int) -> None:
    """Every error answer is counted, an unexpected crash's 500 too (the 5xx alarm watches Faulted)."""
    _count_callback("Refused" if status < 500 else "Faulted")


api = HttpApi(logger, on_error=_count_refusal)
app = api.app


@cache
def _warn_if_unauthenticated(authenticated: bool) -> None:
    """Once per container: say loudly that anyone may post callbacks (local development only)."""
    if not authenticated:
        logger.warning(
            "NO CALLBACK AUTHENTICATION: neither a callback token nor an HMAC key is configured; "
            "anyone who can reach /callbacks is believed (local development only)"
        )


@api.post("/callbacks")
@tracer.capture_method
def receive_callback() -> Response[Any]:
    event = app.current_event
    query = event.query_string_parameters or {}
    request = CallbackRequest(
        body=api.body_bytes(),
        content_type=event.headers.get("content-type"),
        headers=event.headers or {},
        token=query.get("token"),
    )
    svc = services()
    _warn_if_unauthenticated(svc.settings.authenticates_callbacks)
    callback, outcome = CallbackReceiver(svc.settings, svc.store, svc.queue).receive(request)
    _count_callback("Queued" if outcome.queue_transfer else "Accepted")
    logger.info(
        "callback recorded",
        extra={
            "code": callback.code,
            "status": outcome.record.get("status"),
            "queued": outcome.queue_transfer,
        },
    )
    return json_response(200, {"status": "received", "task_id": callback.task_id})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id="-")
    return api.resolve(event, context)
