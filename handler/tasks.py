"""Lambda entry point of the task routes: `POST /tasks` and `GET /tasks/{task_id}` (IAM auth).

A thin adapter over the core, answering errors and route misses as ingest.py does
(http_adapter.py). Its role reads and writes task records, reads the stored videos to sign
download links, and reads the callback token (for the callback URL it submits) and the
provider API key.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from http_adapter import HttpApi, json_response
from videohook.lookup import task_view
from videohook.services import provider_client, services
from videohook.submit import callback_url, parse_submit, submit

logger = Logger()
tracer = Tracer(patch_modules=["botocore"])  # AWS SDK calls only: video URLs are signed
metrics = Metrics()
api = HttpApi(logger)
app = api.app


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


@api.post("/tasks")
@tracer.capture_method
def submit_task() -> Response[Any]:
    request = parse_submit(api.body_bytes())
    logger.append_keys(task_id=request.task_id)
    svc = services()
    record, sent = submit(
        request, svc.store, provider_client(), callback_url(_public_base_url(), svc.settings.callback_token)
    )
    logger.info(
        "task submitted" if sent else "task already known", extra={"task_status": record.get("status")}
    )
    return json_response(202, record)


@api.get("/tasks/<task_id>")
@tracer.capture_method(capture_response=False)  # the answer holds a presigned URL
def get_task(task_id: str) -> Response[Any]:
    logger.append_keys(task_id=task_id)
    svc = services()
    return json_response(200, task_view(svc.store, svc.s3, task_id))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    logger.append_keys(task_id="-")
    return api.resolve(event, context)
