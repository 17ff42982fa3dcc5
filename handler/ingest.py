"""Lambda entry point of the HTTP API: the provider's callback and the task routes.

A thin adapter: it turns API Gateway events into calls on the core and maps the core's
exceptions to answers in one place (`answer_error`).
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from videohook.callbacks import CallbackReceiver, CallbackRequest
from videohook.errors import ProviderError, VideohookError
from videohook.lookup import task_view
from videohook.services import provider_client, services
from videohook.submit import ProviderNotConfigured, callback_url, parse_submit, submit

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


def _body_bytes() -> bytes:
    event = app.current_event
    raw = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError:
            return raw.encode()
    return raw.encode()


@cache
def _warn_if_unauthenticated(authenticated: bool) -> None:
    """Once per container: say loudly that anyone may post callbacks (local development only)."""
    if not authenticated:
        logger.warning(
            "NO CALLBACK AUTHENTICATION: neither a callback token nor an HMAC key is configured; "
            "anyone who can reach /callbacks is believed (local development only)"
        )


def _count_callback(outcome: str) -> None:
    metrics.add_metric(name=f"Callbacks{outcome}", unit=MetricUnit.Count, value=1)


@app.exception_handler(VideohookError)
def answer_error(error: VideohookError) -> Response:
    """The one place where core errors become HTTP answers (no trace, no secret)."""
    level = logger.error if error.status >= 500 else logger.info
    level(
        "request refused", extra={"error_code": error.code, "status": error.status, "reason": error.message}
    )
    if app.current_event.path.endswith("/callbacks"):
        _count_callback("Refused" if error.status < 500 else "Faulted")
    # A 5xx says "retry later", except where retrying cannot help: submits on a stack with no provider key.
    shown = error.status < 500 or isinstance(error, ProviderNotConfigured)
    message = error.message if shown else "the request could not be completed, retry later"
    body: dict[str, Any] = {"error": error.code, "message": message}
    if isinstance(error, ProviderError):
        # SPEC: provider errors answer 502 with the provider's code and message. The client's
        # messages are built to be shown (clipped, one line, the API key scrubbed).
        body.update(message=error.message, provider_code=error.provider_code)
    return _json(error.status, body)


@app.exception_handler(Exception)
def answer_crash(error: Exception) -> Response:
    logger.exception("unexpected error")
    return _json(
        500, {"error": "internal_error", "message": "the request could not be completed, retry later"}
    )


@app.post("/callbacks")
@tracer.capture_method
def receive_callback() -> Response:
    event = app.current_event
    query = event.query_string_parameters or {}
    request = CallbackRequest(
        body=_body_bytes(),
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
    return _json(200, {"status": "received", "task_id": callback.task_id})


@app.post("/tasks")
@tracer.capture_method
def submit_task() -> Response:
    request = parse_submit(_body_bytes())
    logger.append_keys(task_id=request.task_id)
    svc = services()
    record, sent = submit(
        request, svc.store, provider_client(), callback_url(_public_base_url(), svc.settings.callback_token)
    )
    logger.info(
        "task submitted" if sent else "task already known", extra={"task_status": record.get("status")}
    )
    return _json(202, record)


def _public_base_url() -> str:
    """Where the provider can reach this API: CALLBACK_BASE_URL, else this request's own host."""
    configured = services().settings.callback_base_url
    if configured:
        return configured
    event = app.current_event
    host = event.headers.get("host") or event.request_context.domain_name or "localhost"
    scheme = event.headers.get("x-forwarded-proto") or "https"
    stage = event.request_context.stage
    # The execute-api host serves the API under its stage; a custom domain or the local stack does not.
    prefix = f"/{stage}" if ".execute-api." in host and stage else ""
    return f"{scheme}://{host}{prefix}"


@app.get("/tasks/<task_id>")
@tracer.capture_method(capture_response=False)  # the answer holds a presigned URL
def get_task(task_id: str) -> Response:
    logger.append_keys(task_id=task_id)
    svc = services()
    return _json(200, task_view(svc.store, svc.s3, task_id))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id="-")
    return app.resolve(event, context)
