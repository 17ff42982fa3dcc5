"""One transfer message, start to finish: lease, confirm, copy, record.

The decisions that make at-least-once delivery safe live here: a task is copied only
under a lease; a message for a task that is stored, failed for good or held by a live
worker is acknowledged and dropped; a failure is either final (the task becomes
TRANSFER_FAILED with the reason in words) or handed back to SQS for another attempt,
and the last attempt is always final so the record never stays in flight.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger

from videohook.copier import VideoCopier
from videohook.errors import (
    AwsFault,
    GenerationFailed,
    InvalidMp4,
    LeaseLost,
    ProviderError,
    TransferError,
    VideohookError,
)
from videohook.lifecycle import TaskStatus
from videohook.models import StoredVideo
from videohook.policy import SourcePolicy
from videohook.provider import ProviderClient
from videohook.source import SourceSession
from videohook.store import TaskStore

logger = Logger(child=True)
# Seconds to wait between tries of the write that records a stored video.
STORED_WRITE_BACKOFF = (0.5, 2.0)


class RetryLater(TransferError):
    """Raised to SQS so that the message comes back for another attempt."""


class Delivery(StrEnum):
    """What one delivery of a transfer message came to (a retry is raised, not returned)."""

    STORED = TaskStatus.STORED.value
    TRANSFER_FAILED = TaskStatus.TRANSFER_FAILED.value
    SKIPPED = "SKIPPED"  # nothing to do: stored, failed for good, or held by a live worker
    LEASE_LOST = "LEASE_LOST"  # another worker took the task over mid-copy


@dataclass(frozen=True)
class TransferOutcome:
    """What one message did; `video` is set when it was stored, `reason` when it failed."""

    status: Delivery
    reason: str | None = None
    video: StoredVideo | None = None
    seconds: float = 0.0
    # For a skipped delivery: the status the task was found in (None: no such task).
    task_status: TaskStatus | None = None


class TransferService:
    def __init__(
        self,
        store: TaskStore,
        copier: VideoCopier,
        policy: SourcePolicy,
        *,
        lease_seconds: int,
        max_attempts: int,
        provider: ProviderClient | None = None,
        source_factory: Callable[[SourcePolicy], SourceSession] = SourceSession,
    ) -> None:
        self.store = store
        self.copier = copier
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.provider = provider
        self.source_factory = source_factory

    def handle(self, task_id: str, receive_count: int, deadline: float | None = None) -> TransferOutcome:
        """Process one delivery; raises RetryLater when SQS should deliver it again.

        `deadline` (time.monotonic) is when this attempt must give the task back: a Lambda
        killed by its timeout would leave the task TRANSFERRING with nobody to finish it.
        """
        owner = uuid.uuid4().hex
        task = self.store.acquire_lease(task_id, owner, self.lease_seconds)
        if task is None:
            current = self.store.get(task_id)
            found = TaskStatus(current["status"]) if current else None
            logger.info("nothing to do for this delivery", extra={"task_status": found or "UNKNOWN"})
            return TransferOutcome(Delivery.SKIPPED, task_status=found)
        started = time.monotonic()
        try:
            url = self._confirmed_url(task)
            if url != task.get("video_url"):
                # The provider's record-info confirms another video: that is the one copied,
                # and the record says so (docs/task-record.md "The first video_url wins").
                self.store.record_confirmed_url(task_id, owner, url)
            with self.source_factory(self.policy) as source:
                progress = self._progress(task_id, owner, deadline)
                try:
                    video = self.copier.copy(task_id, url, source, progress)
                except InvalidMp4 as error:
                    # A CDN may answer 200 with an error page: fetch once more before failing the task.
                    logger.warning(
                        "not a playable MP4; fetching it once more", extra={"reason": error.message}
                    )
                    video = self.copier.copy(task_id, url, source, progress)
        except LeaseLost:
            logger.warning("lease lost mid-copy; another worker owns the task now")
            return TransferOutcome(Delivery.LEASE_LOST)
        except VideohookError as error:
            return self._failed(task_id, owner, error.message, error.retryable, receive_count, error.code)
        except Exception as error:  # a bug or an unforeseen library error: retry, then fail in words
            logger.exception("unexpected transfer error")
            return self._failed(
                task_id, owner, f"unexpected error: {type(error).__name__}", True, receive_count
            )
        self._record_stored(task_id, owner, video)
        seconds = time.monotonic() - started
        logger.info(
            "video stored", extra={"size": video.size, "sha256": video.sha256, "seconds": round(seconds, 3)}
        )
        return TransferOutcome(Delivery.STORED, video=video, seconds=seconds)

    def _record_stored(self, task_id: str, owner: str, video: StoredVideo) -> None:
        """The video is in S3: try hard to say so, since a retry would copy it all again."""
        for delay in STORED_WRITE_BACKOFF:
            try:
                self.store.mark_stored(task_id, owner, video)
                return
            except AwsFault:
                logger.warning("recording the stored video failed; trying again", extra={"delay": delay})
                time.sleep(delay)
        self.store.mark_stored(task_id, owner, video)

    def _progress(
        self, task_id: str, owner: str, deadline: float | None
    ) -> Callable[[int, int | None], None]:
        def report(done: int, total: int | None) -> None:
            if deadline is not None and time.monotonic() > deadline:
                raise TransferError(
                    f"this attempt ran out of time after {done} bytes; the next one starts again",
                    code="attempt_timeout",
                )
            self.store.report_progress(task_id, owner, done, total, self.lease_seconds)

        return report

    def _confirmed_url(self, task: dict[str, Any]) -> str:
        """With an API key, copy only what the provider itself reports (the body is unsigned)."""
        url = task.get("video_url")
        if self.provider is None:
            if not url:
                raise TransferError("the task has no video_url", code="no_video_url")
            return str(url)
        try:
            info = self.provider.record_info(task["task_id"])
        except ProviderError as error:
            # Whatever the provider answers (even 401 after a key rotation), the video may be
            # fine: try again later rather than fail it; the last attempt fails it in words.
            raise TransferError(
                f"the provider could not confirm the video: {error.message}", code="unconfirmed"
            ) from None
        if info.is_failed:
            raise GenerationFailed(
                f"the provider reports {info.success_flag} for this task: {info.error_message or 'no reason given'}"
            )
        if not info.video_ready or not info.video_url:
            raise TransferError(
                f"the provider does not confirm a video yet ({info.success_flag})", code="unconfirmed"
            )
        if url and info.video_url != url:
            logger.warning(
                "suspicious callback: its video_url differs from the provider's; copying the provider's"
            )
        return info.video_url

    def _failed(
        self, task_id: str, owner: str, reason: str, retryable: bool, receive_count: int, code: str = "error"
    ) -> TransferOutcome:
        if retryable and receive_count < self.max_attempts:
            logger.warning(
                "transfer attempt failed; SQS will retry", extra={"reason": reason, "attempt": receive_count}
            )
            self.store.release_for_retry(task_id, owner, reason)
            raise RetryLater(reason, code=code)
        logger.error(
            "transfer failed", extra={"reason": reason, "error_code": code, "attempt": receive_count}
        )
        self.store.mark_transfer_failed(task_id, owner, reason)
        return TransferOutcome(Delivery.TRANSFER_FAILED, reason=code)
