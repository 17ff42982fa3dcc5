"""The callback path: authenticate, validate, record, queue — never touching the video.

Order matters: the URL token is checked before the body is read (an unauthenticated caller
learns nothing about validation), the signature after parsing (it signs the task id), and
the task is recorded before it is queued, so that a failed send answers 500 and the
provider's retry finds the task still waiting for its message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from aws_lambda_powertools import Logger

from videohook.config import Settings
from videohook.errors import PayloadTooLarge, Unauthorized, UnsupportedMediaType
from videohook.models import MAX_CALLBACK_BYTES, Callback, parse_callback
from videohook.signature import verify_signature, verify_token
from videohook.store import CallbackOutcome, TaskStore
from videohook.transfer_queue import TransferQueue, queue_transfer

logger = Logger(child=True)


@dataclass(frozen=True)
class CallbackRequest:
    """The parts of an HTTP request a callback is judged on."""

    body: bytes
    content_type: str | None
    headers: Mapping[str, str]
    token: str | None


def is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class CallbackReceiver:
    def __init__(self, settings: Settings, store: TaskStore, queue: TransferQueue) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue

    def authenticate_and_parse(self, request: CallbackRequest) -> Callback:
        settings = self.settings
        if settings.callback_token is not None:
            verify_token(request.token, settings.callback_token)
        if not is_json(request.content_type):
            raise UnsupportedMediaType(
                "callbacks must be sent as application/json", code="unsupported_media_type"
            )
        if len(request.body) > MAX_CALLBACK_BYTES:
            raise PayloadTooLarge(f"the body is over {MAX_CALLBACK_BYTES} bytes", code="body_too_large")
        callback = parse_callback(
            request.body, settings.source_policy, secrets=(settings.callback_token, *settings.hmac_keys)
        )
        if settings.hmac_keys:
            signed_at = verify_signature(
                request.headers, callback.task_id, settings.hmac_keys, settings.signature_tolerance_seconds
            )
            callback = replace(callback, signed_at=signed_at)
        return callback

    def receive(self, request: CallbackRequest) -> tuple[Callback, CallbackOutcome]:
        """Record the callback and queue its transfer once; AwsFault answers 500."""
        callback = self.authenticate_and_parse(request)
        logger.append_keys(task_id=callback.task_id)
        if not self.settings.accept_unknown_tasks and self.store.get(callback.task_id) is None:
            raise Unauthorized("this task was not submitted through videohook", code="unknown_task")
        outcome = self.store.record_callback(callback)
        if outcome.replayed:
            logger.warning(
                "replayed callback ignored: this task and signed timestamp were already applied",
                extra={"code": callback.code, "signed_at": callback.signed_at},
            )
        if outcome.suspicious:
            logger.warning("suspicious callback", extra={"reason": outcome.suspicious, "code": callback.code})
        if outcome.queue_transfer:
            queue_transfer(self.queue, self.store, callback.task_id)
        return callback, outcome
