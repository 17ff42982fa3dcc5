"""One exception hierarchy for the core.

The core raises these and knows nothing about HTTP or Lambda; the HTTP entry modules map
them to answers in one place (`status`, `code`: http_adapter.py), and the transfer handler reads
`retryable` to decide between an SQS retry and failing the task at once.
"""

from __future__ import annotations


class VideohookError(Exception):
    """Base of every error the core raises on purpose."""

    status = 500
    code = "internal_error"
    retryable = True

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(VideohookError):
    """A configuration variable is missing or malformed (fails start-up)."""

    code = "bad_configuration"
    retryable = False


# --- answers to an HTTP client -------------------------------------------------------


class BadRequest(VideohookError):
    status = 400
    code = "bad_request"
    retryable = False


class Unauthorized(VideohookError):
    status = 401
    code = "unauthorized"
    retryable = False


class NotFound(VideohookError):
    status = 404
    code = "not_found"
    retryable = False


class PayloadTooLarge(VideohookError):
    status = 413
    code = "payload_too_large"
    retryable = False


class UnsupportedMediaType(VideohookError):
    status = 415
    code = "unsupported_media_type"
    retryable = False


class AwsFault(VideohookError):
    """DynamoDB, SQS or S3 failed: answer 500 so the provider retries the callback."""

    status = 500
    code = "service_unavailable"
    retryable = True


# --- the source, the video and the provider --------------------------------------------


class SourceRefused(BadRequest):
    """The video URL breaks the source policy (scheme, host, private address)."""

    code = "video_url_refused"


class TransferError(VideohookError):
    """A transfer attempt failed for a reason that another attempt may not share."""

    code = "transfer_error"
    retryable = True


class SourceUnavailable(TransferError):
    """The source answered 5xx, timed out, or dropped and could not be resumed."""

    code = "source_unavailable"


class LinkExpired(TransferError):
    """The source answered 403/404/410: the temporary link is gone; retrying cannot help."""

    code = "link_expired"
    retryable = False


class VideoRejected(TransferError):
    """The bytes are not a complete MP4, or break a size rule: never stored."""

    code = "video_rejected"
    retryable = False


class GenerationFailed(TransferError):
    """The provider itself reports that the video was never made."""

    code = "provider_failed"
    retryable = False


class InvalidMp4(VideoRejected):
    code = "invalid_mp4"


class LeaseLost(TransferError):
    """Another worker took the task over; this one must stop without touching it."""

    code = "lease_lost"


class ProviderError(VideohookError):
    """The provider API answered with an error code (kept as `provider_code`)."""

    status = 502
    code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        provider_code: int | None = None,
        retryable: bool = False,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider_code = provider_code
        self.retryable = retryable
        # True when the request may have reached the provider although no answer came back.
        self.maybe_delivered = maybe_delivered
