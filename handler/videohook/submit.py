"""`POST /tasks`: ask the provider for a video, with this stack's own callback URL.

The task is recorded SUBMITTED before the provider is called, so a callback that races the
provider's answer finds it, and a repeated submit finds it too and is not sent twice. A
refused submit is forgotten again so that it can be retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aws_lambda_powertools import Logger

from videohook.errors import BadRequest, ProviderError, VideohookError
from videohook.lifecycle import public_record
from videohook.models import check_task_id, parse_json_object
from videohook.store import TaskStore

if TYPE_CHECKING:
    from videohook.provider import ProviderClient

logger = Logger(child=True)
MAX_FIELD_CHARS = 256


class ProviderNotConfigured(VideohookError):
    """Submitting is off on this stack: 501, since no retry can help until it is configured."""

    status = 501
    code = "provider_not_configured"
    retryable = False


@dataclass(frozen=True)
class SubmitRequest:
    task_id: str
    audio_id: str
    author: str | None = None
    domain_name: str | None = None


def _optional_text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        raise BadRequest(
            f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters",
            code=f"invalid_{name}",
        )
    return value.strip()


def parse_submit(body: bytes | str) -> SubmitRequest:
    document = parse_json_object(body)
    audio_id = _optional_text(document, "audio_id")
    if audio_id is None:
        raise BadRequest("audio_id is required", code="invalid_audio_id")
    return SubmitRequest(
        task_id=check_task_id(document.get("task_id")),
        audio_id=audio_id,
        author=_optional_text(document, "author"),
        domain_name=_optional_text(document, "domain_name"),
    )


def callback_url(base_url: str, token: str | None) -> str:
    url = base_url.rstrip("/") + "/callbacks"
    return f"{url}?token={quote(token, safe='')}" if token else url


def submit(
    request: SubmitRequest, store: TaskStore, provider: ProviderClient | None, callback_to: str
) -> tuple[dict[str, Any], bool]:
    """Record and send the task; (record, sent). A known task is answered as it is, unsent."""
    if provider is None:
        raise ProviderNotConfigured(
            "no provider API key is configured, so this stack cannot submit tasks: deploy with the "
            "ProviderApiKey parameter, or set PROVIDER_API_KEY (or LOCAL_FAKE_PROVIDER=true) for the "
            "local stack (docs/configuration.md)"
        )
    record, created = store.record_submitted(request.task_id, request.audio_id)
    if not created:
        logger.info("task already known; not sent again", extra={"task_status": record.get("status")})
        return public_record(record), False
    try:
        accepted = provider.generate(
            task_id=request.task_id,
            audio_id=request.audio_id,
            callback_url=callback_to,
            author=request.author,
            domain_name=request.domain_name,
        )
    except ProviderError as error:
        # After a read timeout the provider may have the task: it stays SUBMITTED, so that its
        # callback is accepted and reconcile finds it. Anything else is a definite refusal.
        if not error.maybe_delivered:
            store.forget_submitted(request.task_id)
        raise
    if accepted != request.task_id:
        # The callback will carry the provider's id: that is the task to wait for.
        logger.info("provider assigned another task id", extra={"provider_task_id": accepted})
        record, _ = store.record_submitted(check_task_id(accepted), request.audio_id)
        store.forget_submitted(request.task_id)
    return public_record(record), True
