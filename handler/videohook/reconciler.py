"""The scheduled look at every task that is due: late callbacks, and tasks left without a way forward.

Every task that is not final carries a due time (docs/task-record.md "Nothing is stuck");
only the due ones are read, from a sparse index, never a table scan. What a visit does is
decided by lifecycle.plan_check:
- the provider gives up on a callback after three retries, so a task still SUBMITTED (or
  RECEIVED with no transfer queued) after RECONCILE_AFTER_SECONDS is polled with
  `record-info` (API key configured), each at most once every 45 s as the provider asks;
- a transfer message lost, or a worker's lease expired unrenewed: the transfer is queued
  again (with or without an API key), each repeat waiting twice as long;
- a task still SUBMITTED 14 days after it was created ends GENERATION_FAILED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger

from videohook.errors import ProviderError
from videohook.lifecycle import Check, TaskStatus, Verdict, plan_check
from videohook.models import SUCCESS_CODE, Callback
from videohook.provider import ProviderClient
from videohook.store import TaskStore
from videohook.transfer_queue import TransferQueue, queue_transfer

logger = Logger(child=True)

POLL_INTERVAL_SECONDS = 45
BACKOFF_SECONDS = 180
REFUSED_RETRY_SECONDS = 900
# Codes that mean "the account is rate limited or the API is down": stop this run.
ACCOUNT_WIDE_CODES = frozenset({405, 429, 430, 455})


class Visit(StrEnum):
    """What looking at one due task did."""

    QUEUED = "queued"  # the provider has the video: its transfer is queued
    FAILED = "failed"  # the provider failed it: GENERATION_FAILED
    WAITING = "waiting"  # still pending: polled again later
    BACKED_OFF = "backed_off"  # the provider refused the poll: polled again much later
    RECOVERED = "recovered"  # found without a way forward: its transfer queued again
    ENDED = "ended"  # SUBMITTED for 14 days: GENERATION_FAILED
    DEFERRED = "deferred"  # nothing to do yet (a live lease; no key to poll with): looked at later
    NOT_DUE = "not_due"  # its due time moved on since the index was read: left alone
    DROPPED = "dropped"  # final, or gone: taken off the poll index
    SKIPPED = "skipped"  # not looked at: out of time, or halted by a rate limit
    ERROR = "error"  # an AWS fault or a bug; the task stays due


@dataclass(frozen=True)
class Visited:
    visit: Visit
    error: str | None = None


@dataclass
class ReconcileReport:
    polled: int = 0
    queued: int = 0
    failed: int = 0
    waiting: int = 0
    backed_off: int = 0
    recovered: int = 0
    ended: int = 0
    deferred: int = 0
    dropped: int = 0
    stopped_early: bool = False
    errors: list[str] = field(default_factory=list)

    def count(self, task_id: str, visited: Visited) -> None:
        match visited.visit:
            case Visit.SKIPPED:
                self.stopped_early = True
            case Visit.ERROR:
                self.errors.append(f"{task_id}: {visited.error}")
            case Visit.DROPPED:
                self.dropped += 1
            case Visit.RECOVERED:
                self.recovered += 1
            case Visit.ENDED:
                self.ended += 1
            case Visit.DEFERRED:
                self.deferred += 1
            case Visit.NOT_DUE:
                pass
            case Visit.QUEUED:
                self.queued += 1
                self.polled += 1
            case Visit.FAILED:
                self.failed += 1
                self.polled += 1
            case Visit.WAITING:
                self.waiting += 1
                self.polled += 1
            case Visit.BACKED_OFF:
                self.backed_off += 1
                self.polled += 1


class Reconciler:
    def __init__(
        self,
        store: TaskStore,
        queue: TransferQueue,
        provider: ProviderClient | None,
        *,
        max_tasks: int = 2000,
        workers: int = 16,
        deadline_seconds: float = 45.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.queue = queue
        self.provider = provider
        self.max_tasks = max_tasks
        self.workers = workers
        self.deadline_seconds = deadline_seconds
        self.clock = clock
        self._halt = False

    def run(self) -> ReconcileReport:
        """Visit every due task once, in parallel, until done, halted by rate limits, or out of time."""
        report = ReconcileReport()
        started = self.clock()
        self._halt = False
        task_ids = self.store.due_for_poll(self.max_tasks)
        if not task_ids:
            return report

        def visit(task_id: str) -> Visited:
            if self._halt or self.clock() - started > self.deadline_seconds:
                return Visited(Visit.SKIPPED)
            return self._visit(task_id)

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="reconcile") as pool:
            for task_id, visited in zip(task_ids, pool.map(visit, task_ids), strict=True):
                report.count(task_id, visited)
        return report

    def _visit(self, task_id: str) -> Visited:
        try:
            item = self.store.get(task_id)
            verdict = plan_check(item, self.store.clock(), can_poll=self.provider is not None)
            return Visited(self._act(task_id, item, verdict))
        except Exception as error:  # one task's AWS fault must not stop the others
            logger.exception("reconcile of one task failed", extra={"task_id": task_id})
            return Visited(Visit.ERROR, type(error).__name__)

    def _act(self, task_id: str, item: dict[str, Any] | None, verdict: Verdict) -> Visit:
        seen_due = item.get("poll_due") if item else None
        match verdict.check:
            case Check.DROP:
                if seen_due is not None:  # a task gone leaves the index with its item
                    self.store.stop_polling(task_id, seen_due)
                return Visit.DROPPED
            case Check.NOT_DUE:
                return Visit.NOT_DUE
            case Check.LATER:
                assert verdict.due is not None
                self.store.schedule_at(task_id, verdict.due, seen_due)
                return Visit.DEFERRED
            case Check.END:
                assert item is not None
                if self.store.end_submitted(task_id, item) is None:
                    return Visit.NOT_DUE  # a callback came meanwhile: it decided
                logger.warning("task ended: " + verdict.reason, extra={"task_id": task_id})
                return Visit.ENDED
            case Check.QUEUE:
                assert item is not None
                requeues = int(item.get("requeues", 0)) + 1
                queue_transfer(self.queue, self.store, task_id, requeues=requeues)
                logger.warning(
                    "stuck task queued again",
                    extra={
                        "task_id": task_id,
                        "task_status": item["status"],
                        "reason": verdict.reason,
                        "requeues": requeues,
                    },
                )
                return Visit.RECOVERED
        return self._poll(task_id, seen_due)

    def _poll(self, task_id: str, seen_due: int | None) -> Visit:
        assert self.provider is not None
        try:
            info = self.provider.record_info(task_id)
        except ProviderError as error:
            if error.provider_code in ACCOUNT_WIDE_CODES:
                self._halt = True  # the limit is the account's: the other tasks would only add to it
            delay = BACKOFF_SECONDS if error.retryable else REFUSED_RETRY_SECONDS
            logger.warning(
                "provider poll failed; backing off",
                extra={"task_id": task_id, "provider_code": error.provider_code, "reason": error.message},
            )
            self.store.schedule_poll(task_id, delay, seen_due)
            return Visit.BACKED_OFF
        if info.video_ready and info.video_url:
            callback = Callback(
                code=SUCCESS_CODE, msg="found by reconcile", task_id=task_id, video_url=info.video_url
            )
            outcome = self.store.record_callback(callback, counted=False, audio_id=info.audio_id)
            if outcome.queue_transfer:
                queue_transfer(self.queue, self.store, task_id)
            logger.info("late task found ready; transfer queued", extra={"task_id": task_id})
            return Visit.QUEUED
        if info.is_failed:
            callback = Callback(
                code=info.error_code or 500,
                msg=info.error_message or info.success_flag,
                task_id=task_id,
                video_url=None,
            )
            if callback.code == SUCCESS_CODE:
                callback = Callback(code=500, msg=callback.msg, task_id=task_id, video_url=None)
            outcome = self.store.record_callback(callback, counted=False, audio_id=info.audio_id)
            record = outcome.record
            if record.get("status") == TaskStatus.RECEIVED and not record.get("transfer_queued"):
                # A callback gave this task a video that the provider now reports failed: the
                # transfer's own confirmation ends it TRANSFER_FAILED with the reason in words.
                queue_transfer(self.queue, self.store, task_id)
            logger.info(
                "late task failed at the provider", extra={"task_id": task_id, "flag": info.success_flag}
            )
            return Visit.FAILED
        self.store.schedule_poll(task_id, POLL_INTERVAL_SECONDS, seen_due)
        return Visit.WAITING
