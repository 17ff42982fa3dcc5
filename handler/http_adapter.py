"""What the two HTTP entry modules share: the resolver and the one place errors become answers.

`ingest.py` (the provider's callback) and `tasks.py` (the task routes) are separate functions
with separate permissions, but they answer the same way (docs/api.md): JSON bodies, errors as
`{"error": <machine code>, "message": <human text>}` with no stack trace and no secret, and a
route miss as 404 `not_found` (405 `method_not_allowed` where the path exists), never 500.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

from videohook.errors import ProviderError, VideohookError
from videohook.submit import ProviderNotConfigured

RETRY_LATER = "the request could not be completed, retry later"
Handler = Callable[..., Response[Any]]


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers
    )


def error_body(error: VideohookError) -> dict[str, Any]:
    """The answer to a core error: its machine code, and its words unless it is our fault."""
    # A 5xx says "retry later" unless retrying cannot help: submits on a stack without a provider key.
    shown = error.status < 500 or isinstance(error, ProviderNotConfigured)
    message = error.message if shown else RETRY_LATER
    body: dict[str, Any] = {"error": error.code, "message": message}
    if isinstance(error, ProviderError):
        # Provider errors answer 502 with the provider's code and message. The client's
        # messages are built to be shown (clipped, one line, the API key scrubbed).
        body.update(message=error.message, provider_code=error.provider_code)
    return body


def _path_pattern(rule: str) -> re.Pattern[str]:
    """A route rule (`/tasks/<task_id>`) as a pattern that any one path segment fills."""
    return re.compile("^" + re.sub(r"<\w+>", "[^/]+", re.escape(rule)) + "$")


class HttpApi:
    """One API Gateway REST resolver with the shared answers; routes are added with get/post."""

    def __init__(self, logger: Logger, *, on_error: Callable[[int], None] | None = None) -> None:
        """`on_error` is told the status of every error answer, an unexpected crash's 500 included."""
        self.app = APIGatewayRestResolver()
        self.logger = logger
        self.on_error = on_error
        self._methods: dict[str, set[str]] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}
        self.app.exception_handler(VideohookError)(self.answer_error)
        self.app.not_found(self.answer_route_miss)
        self.app.exception_handler(Exception)(self.answer_crash)

    # --- routes -------------------------------------------------------------------------

    def _known(self, rule: str, method: str) -> None:
        self._methods.setdefault(rule, set()).add(method)
        self._patterns.setdefault(rule, _path_pattern(rule))

    def get(self, rule: str) -> Callable[[Handler], Handler]:
        self._known(rule, "GET")
        return self.app.get(rule)

    def post(self, rule: str) -> Callable[[Handler], Handler]:
        self._known(rule, "POST")
        return self.app.post(rule)

    def allowed_methods(self, path: str) -> set[str]:
        """The methods served on `path` (empty when no route has this path)."""
        return {m for rule, p in self._patterns.items() if p.match(path) for m in self._methods[rule]}

    # --- the request --------------------------------------------------------------------

    def body_bytes(self) -> bytes:
        """The raw body. A text body may hold lone surrogates (a JSON-escaped or hostile event):
        they are kept as the bytes they stand for, so parsing refuses them with a 400 rather
        than the encoder raising here."""
        event = self.app.current_event
        raw = event.body or ""
        if event.is_base64_encoded:
            try:
                return base64.b64decode(raw, validate=True)
            except ValueError:
                pass
        return raw.encode("utf-8", "surrogatepass")

    def resolve(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return self.app.resolve(event, context)

    # --- answers ------------------------------------------------------------------------

    def answer_error(self, error: VideohookError) -> Response[Any]:
        """The one place where core errors become HTTP answers (no trace, no secret)."""
        level = self.logger.error if error.status >= 500 else self.logger.info
        level(
            "request refused",
            extra={"error_code": error.code, "status": error.status, "reason": error.message},
        )
        self._answered_error(error.status)
        return json_response(error.status, error_body(error))

    def answer_route_miss(self, _: NotFoundError) -> Response[Any]:
        """No route matched: 405 where the path exists with other methods, else 404."""
        event = self.app.current_event
        allowed = self.allowed_methods(event.path)
        if allowed and event.http_method.upper() not in allowed:
            return json_response(
                405,
                {"error": "method_not_allowed", "message": "this path does not take this method"},
                {"Allow": ", ".join(sorted(allowed))},
            )
        return json_response(404, {"error": "not_found", "message": "no such resource"})

    def answer_crash(self, error: Exception) -> Response[Any]:
        self.logger.exception("unexpected error")
        self._answered_error(500)
        return json_response(500, {"error": "internal_error", "message": RETRY_LATER})

    def _answered_error(self, status: int) -> None:
        if self.on_error is not None:
            self.on_error(status)
