"""The due-time rules alone (handler/videohook/lifecycle.py): plain values in and out.

Every write that leaves a task not final gives it a due time; reconcile's decision for a due
task (plan_check) follows docs/reconcile.md; the remembered signature timestamps stay bounded.
"""

from __future__ import annotations

from typing import Any

import pytest

from videohook.lifecycle import (
    FINAL_STATUSES,
    LEASE_GRACE_SECONDS,
    POLL_FIELDS,
    RECOVERY_MAX_SECONDS,
    RETRY_REDELIVERY_SECONDS,
    SUBMITTED_LIFETIME_SECONDS,
    Change,
    Check,
    TaskStatus,
    iso_now,
    plan_callback,
    plan_check,
    plan_confirmed_url,
    plan_expired,
    plan_lease,
    plan_progress,
    plan_queued,
    plan_redrive,
    plan_retry,
    plan_stored,
    plan_submitted,
    plan_transfer_failed,
    queued_wait,
    remembered_timestamps,
)
from videohook.models import Callback, StoredVideo

NOW = 1_800_000_000.0
AFTER = 300
CREATED = iso_now(NOW - 1000)
S = TaskStatus
URL = "https://cdn.example.com/v.mp4"


def task(status: TaskStatus, **fields: Any) -> dict[str, Any]:
    return {"task_id": "t", "status": status.value, "revision": 2, "created_at": CREATED, **fields}


# (why, record as read, with an API key?, check, due for LATER)
CHECKS = [
    ("a task gone", None, True, Check.DROP, None),
    ("a stored task", task(S.STORED, poll_due=NOW - 1), False, Check.DROP, None),
    ("a failed transfer", task(S.TRANSFER_FAILED, poll_due=NOW - 1), False, Check.DROP, None),
    (
        "a due time moved on since the index was read",
        task(S.RECEIVED, poll_due=NOW + 5),
        True,
        Check.NOT_DUE,
        None,
    ),
    ("a submit, with a key: poll", task(S.SUBMITTED, poll_due=NOW), True, Check.POLL, None),
    (
        "a submit, no key: wait for the 14 days",
        task(S.SUBMITTED, poll_due=NOW),
        False,
        Check.LATER,
        int(NOW - 1000) + SUBMITTED_LIFETIME_SECONDS,
    ),
    (
        "a submit 14 days old: end it, key or not",
        task(S.SUBMITTED, created_at=iso_now(NOW - SUBMITTED_LIFETIME_SECONDS), poll_due=NOW),
        True,
        Check.END,
        None,
    ),
    (
        "a received task never queued, with a key: poll",
        task(S.RECEIVED, poll_due=NOW),
        True,
        Check.POLL,
        None,
    ),
    ("a received task never queued, no key: queue", task(S.RECEIVED, poll_due=NOW), False, Check.QUEUE, None),
    (
        "a queued message not picked up: queue again, key or not",
        task(S.RECEIVED, poll_due=NOW, transfer_queued=True),
        True,
        Check.QUEUE,
        None,
    ),
    (
        "a live lease: look again after it",
        task(S.TRANSFERRING, poll_due=NOW, lease_expires=int(NOW) + 30),
        True,
        Check.LATER,
        int(NOW) + 30 + LEASE_GRACE_SECONDS,
    ),
    (
        "a lease just expired: its grace minute first",
        task(S.TRANSFERRING, poll_due=NOW, lease_expires=int(NOW) - 59),
        False,
        Check.LATER,
        int(NOW) + 1,
    ),
    (
        "a lease expired a minute ago: queue again",
        task(S.TRANSFERRING, poll_due=NOW, lease_expires=int(NOW) - 60),
        False,
        Check.QUEUE,
        None,
    ),
]


@pytest.mark.parametrize(
    ("item", "keyed", "check", "due"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS]
)
def test_what_reconcile_does_with_a_due_task(item: Any, keyed: bool, check: Check, due: int | None) -> None:
    verdict = plan_check(item, NOW, can_poll=keyed)
    assert verdict.check is check
    assert verdict.due == due
    if check in (Check.QUEUE, Check.END):
        assert verdict.reason  # logged in words


def test_the_wait_for_a_queued_message_doubles_up_to_six_hours() -> None:
    assert [queued_wait(AFTER, n) for n in range(9)] == [
        300,
        600,
        1200,
        2400,
        4800,
        9600,
        19200,
        RECOVERY_MAX_SECONDS,
        RECOVERY_MAX_SECONDS,
    ]
    assert queued_wait(0, 0) == 60  # RECONCILE_AFTER_SECONDS=0 still waits a minute
    assert queued_wait(AFTER, 10**6) == RECOVERY_MAX_SECONDS


VIDEO = StoredVideo("b", "videos/t.mp4", "v1", "ab" * 32, 10, 1.0, 2, 2)
SUCCESS = Callback(200, "ok", "t", URL)
FAILURE = Callback(500, "no", "t", None)


def _writes() -> list[tuple[str, TaskStatus | None, Change]]:
    """(name, status the task is in before, the change) for every write and every start status."""
    rows: list[tuple[str, TaskStatus | None, Change]] = [
        ("submitted", None, plan_submitted("a", NOW, poll_after=AFTER)),
        ("queued", S.RECEIVED, plan_queued(NOW, poll_after=AFTER)),
        ("queued again", S.TRANSFERRING, plan_queued(NOW, poll_after=AFTER, requeues=3)),
        ("lease", S.RECEIVED, plan_lease("w", NOW, 120)),
        ("progress", S.TRANSFERRING, plan_progress(1, 2, NOW, 120)),
        ("confirmed url", S.TRANSFERRING, plan_confirmed_url(URL, NOW)),
        ("retry", S.TRANSFERRING, plan_retry("503", NOW, poll_after=AFTER)),
        ("redrive", S.TRANSFER_FAILED, plan_redrive(NOW, poll_after=AFTER)),
        ("stored", S.TRANSFERRING, plan_stored(VIDEO, NOW)),
        ("transfer failed", S.TRANSFERRING, plan_transfer_failed("404", NOW)),
        ("14 days", S.SUBMITTED, plan_expired(NOW)),
    ]
    for status in [None, *TaskStatus]:
        for callback in (SUCCESS, FAILURE):
            item = task(status, video_url=URL) if status else None
            rows.append(
                (
                    f"callback {callback.code} on {status}",
                    status,
                    plan_callback(item, callback, NOW, poll_after=AFTER).change,
                )
            )
    return rows


@pytest.mark.parametrize(("before", "change"), [w[1:] for w in _writes()], ids=[w[0] for w in _writes()])
def test_no_write_leaves_a_task_that_is_not_final_without_a_due_time(
    before: TaskStatus | None, change: Change
) -> None:
    after = change.status or before
    if after is None or after in FINAL_STATUSES:
        # a final task leaves the index (one that had no due time has nothing to remove)
        assert before is None or before in FINAL_STATUSES or change.removes >= POLL_FIELDS
        return
    if change.status is not None or before is None:
        # a write that moves a task sets its due time in the future
        assert change.sets["poll_partition"] == "due" and change.sets["poll_due"] > NOW, change
    # and no write removes the due time of a task it leaves not final
    assert not POLL_FIELDS & change.removes


def test_a_retry_is_left_to_sqs_for_its_visibility_timeout() -> None:
    assert (
        plan_retry("503", NOW, poll_after=AFTER).sets["poll_due"]
        == int(NOW) + RETRY_REDELIVERY_SECONDS + AFTER
    )


def test_the_remembered_timestamps_are_bounded_by_the_window() -> None:
    # GIVEN timestamps remembered over time, WHEN a new one arrives THEN only those a replay
    # could still present stay, and the same timestamp again is a replay (None)
    item = {"seen_timestamps": [str(int(NOW) - 400), str(int(NOW) - 200), str(int(NOW) + 100)]}
    assert remembered_timestamps(item, str(int(NOW)), NOW, 300) == [
        str(int(NOW) - 200),
        str(int(NOW)),
        str(int(NOW) + 100),
    ]
    assert remembered_timestamps(item, str(int(NOW) - 200), NOW, 300) is None
    assert remembered_timestamps(None, "1", NOW, 300) == ["1"]
