"""The objects one container builds once and every invocation reuses."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from videohook import aws, config
from videohook.config import Settings, get_settings
from videohook.errors import ConfigError
from videohook.store import TaskStore
from videohook.transfer_queue import TransferQueue

if TYPE_CHECKING:  # the transfer and provider modules pull in an HTTP client the callback path never uses
    from mypy_boto3_s3 import S3Client

    from videohook.provider import ProviderClient
    from videohook.transfer_service import TransferService

logger = Logger(child=True)


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: TaskStore
    queue: TransferQueue
    s3: S3Client


@lru_cache(maxsize=1)
def services() -> Services:
    """Build once per container; a bad configuration fails here with one line naming it."""
    try:
        settings = get_settings()
        # Every function reads and writes tasks and may queue a transfer (docs/configuration.md).
        _required("TASKS_TABLE", settings.tasks_table)
        _required("TRANSFER_QUEUE_URL", settings.transfer_queue_url)
    except ConfigError as error:
        logger.error(f"bad configuration: {error.message}")
        raise
    return Services(
        settings=settings,
        store=TaskStore(
            settings.tasks_table,
            aws.client("dynamodb"),
            poll_after_seconds=settings.reconcile_after_seconds,
            signature_window_seconds=settings.signature_tolerance_seconds,
        ),
        queue=TransferQueue(settings.transfer_queue_url, aws.client("sqs")),
        s3=aws.client("s3"),
    )


def _required(name: str, value: str) -> None:
    """A resource name the template always sets: empty means the function is misdeployed."""
    if not value.strip():
        raise ConfigError(f"{name} is not set: it names a resource of the stack")


def provider_client() -> ProviderClient | None:
    """The provider API client, or None when no API key is configured (confirm/reconcile idle)."""
    settings = services().settings
    if not settings.provider_api_key:
        return None
    return _provider(settings.provider_api_base, settings.provider_api_key, settings.callback_token)


@lru_cache(maxsize=1)
def _provider(base_url: str, api_key: str, callback_token: str | None) -> ProviderClient:
    from videohook.provider import ProviderClient

    # The provider may quote our callback URL back in its messages: its token is masked there.
    return ProviderClient(base_url, api_key, redact=(callback_token,))


def transfer_service() -> TransferService:
    from videohook.copier import VideoCopier
    from videohook.transfer_service import TransferService

    svc = services()
    settings = svc.settings
    try:
        _required("VIDEOS_BUCKET", settings.videos_bucket)
    except ConfigError as error:
        logger.error(f"bad configuration: {error.message}")
        raise
    copier = VideoCopier(
        svc.s3,
        settings.videos_bucket,
        part_bytes=settings.transfer_part_bytes,
        concurrency=settings.transfer_concurrency,
        max_bytes=settings.max_video_bytes,
    )
    return TransferService(
        svc.store,
        copier,
        settings.source_policy,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.transfer_max_attempts,
        provider=provider_client(),
    )


def reset() -> None:
    """Forget settings, clients and services (tests change the environment between cases)."""
    services.cache_clear()
    _provider.cache_clear()
    config.reset()
    aws.reset()
