"""The task rules alone (handler/videohook/lifecycle.py): no AWS, no clock, plain values in and out.

Each row: GIVEN a record as read (None: unknown task) WHEN a callback arrives THEN the
change it plans (status, fields), whether a transfer is queued, and whether it is noted
as suspicious. Then every write's move is checked against the table of allowed moves.
"""

from __future__ import annotations

from typing import Any

import pytest

from videohook.lifecycle import (
    INTERNAL_FIELDS,
    LEASE_FROM,
    LEASED_FROM,
    MOVES,
    POLL_PARTITION,
    QUEUED_FROM,
    REDRIVE_FROM,
    TaskStatus,
    may_move,
    plan_callback,
    plan_lease,
    plan_queued,
    plan_redrive,
    plan_retry,
    plan_stored,
    plan_submitted,
    plan_transfer_failed,
    public_record,
)
from videohook.models import Callback, StoredVideo

NOW = 1_800_000_000.25
STAMP = "2027-01-15T08:00:00.250Z"
POLL_AFTER = 300
URL = "https://cdn.example.com/v/1.mp4"
OTHER_URL = "https://cdn.example.com/v/2.mp4"
SUCCESS = Callback(code=200, msg="ok", task_id="t-1", video_url=URL)
FAILURE = Callback(code=451, msg="no audio", task_id="t-1", video_url=None)
S = TaskStatus


def task(status: TaskStatus, **fields: Any) -> dict[str, Any]:
    return {"task_id": "t-1", "status": status.value, "revision": 3, **fields}


# (why, record as read, callback, status after (None: unchanged), queue a transfer, suspicious)
CALLBACK_RULES = [
    ("a new task's success starts it", None, SUCCESS, S.RECEIVED, True, False),
    ("a submitted task's success starts it", task(S.SUBMITTED), SUCCESS, S.RECEIVED, True, False),
    (
        "a failed transfer is queued again by a new callback",
        task(S.TRANSFER_FAILED, video_url=URL),
        SUCCESS,
        S.RECEIVED,
        True,
        False,
    ),
    ("a received task not yet queued is queued", task(S.RECEIVED, video_url=URL), SUCCESS, None, True, False),
    (
        "a duplicate for a queued task queues nothing",
        task(S.RECEIVED, video_url=URL, transfer_queued=True),
        SUCCESS,
        None,
        False,
        False,
    ),
    (
        "a duplicate while copying queues nothing",
        task(S.TRANSFERRING, video_url=URL),
        SUCCESS,
        None,
        False,
        False,
    ),
    ("a stored video is never replaced", task(S.STORED, video_url=URL), SUCCESS, None, False, False),
    (
        "another URL for a known task is only noted",
        task(S.STORED, video_url=OTHER_URL),
        SUCCESS,
        None,
        False,
        True,
    ),
    (
        "a success after a generation failure is only counted",
        task(S.GENERATION_FAILED),
        SUCCESS,
        None,
        False,
        True,
    ),
    ("a new task's failure is a generation failure", None, FAILURE, S.GENERATION_FAILED, False, False),
    ("a submitted task's failure ends it", task(S.SUBMITTED), FAILURE, S.GENERATION_FAILED, False, False),
    (
        "a failure after a success changes no status",
        task(S.RECEIVED, video_url=URL),
        FAILURE,
        None,
        False,
        True,
    ),
    ("a failure never downgrades a stored video", task(S.STORED, video_url=URL), FAILURE, None, False, True),
]


@pytest.mark.parametrize(
    ("item", "callback", "status_after", "queued", "suspicious"),
    [row[1:] for row in CALLBACK_RULES],
    ids=[row[0] for row in CALLBACK_RULES],
)
def test_callback_rules(
    item: dict[str, Any] | None,
    callback: Callback,
    status_after: TaskStatus | None,
    queued: bool,
    suspicious: bool,
) -> None:
    # GIVEN the record as read WHEN the callback is planned
    plan = plan_callback(item, callback, NOW, poll_after=POLL_AFTER)
    # THEN the status moves (or not) as the row says, along an allowed move
    assert plan.change.status == status_after
    if status_after is not None:
        source = TaskStatus(item["status"]) if item else None
        assert may_move(source, status_after)
    # AND a transfer is queued, or a note is made, exactly when the row says
    assert plan.queue_transfer is queued
    assert (plan.suspicious is not None) is suspicious
    # AND every callback is counted and stamped, and the revision moves on
    assert plan.change.adds == {"revision": 1, "callbacks": 1}
    assert plan.change.sets["updated_at"] == STAMP


def test_a_starting_callback_records_the_url_and_a_due_time_for_reconcile() -> None:
    # GIVEN a task that had failed its transfer WHEN a new success callback arrives
    plan = plan_callback(task(S.TRANSFER_FAILED, error="x"), SUCCESS, NOW, poll_after=POLL_AFTER)
    # THEN the URL and the provider's words are recorded, and reconcile looks again when due
    sets = plan.change.sets
    assert (sets["video_url"], sets["provider_code"], sets["provider_msg"]) == (URL, 200, "ok")
    assert (sets["poll_partition"], sets["poll_due"]) == (POLL_PARTITION, int(NOW) + POLL_AFTER)
    # AND the last error and the old message mark are dropped
    assert plan.change.removes == {"transfer_queued", "error"}


def test_a_failure_callback_records_the_providers_words_and_stops_polling() -> None:
    plan = plan_callback(task(S.SUBMITTED), FAILURE, NOW, poll_after=POLL_AFTER)
    assert (plan.change.sets["provider_code"], plan.change.sets["provider_msg"]) == (451, "no audio")
    assert plan.change.removes == {"poll_partition", "poll_due"}


def test_a_new_task_is_created_with_its_time() -> None:
    plan = plan_callback(None, SUCCESS, NOW, poll_after=POLL_AFTER)
    assert plan.change.sets["created_at"] == STAMP


def test_a_poll_result_is_not_counted_as_a_callback() -> None:
    # GIVEN reconcile found a task ready (not a callback) WHEN it is planned
    unknown = plan_callback(None, SUCCESS, NOW, poll_after=POLL_AFTER, counted=False, audio_id="a-1")
    known = plan_callback(
        task(S.SUBMITTED, audio_id="a-0"), SUCCESS, NOW, poll_after=POLL_AFTER, counted=False, audio_id="a-1"
    )
    # THEN no callback is counted (a new record starts at zero), and a known audio_id is kept
    assert "callbacks" not in unknown.change.adds and unknown.change.sets["callbacks"] == 0
    assert unknown.change.sets["audio_id"] == "a-1"
    assert "callbacks" not in known.change.adds and "audio_id" not in known.change.sets


@pytest.mark.parametrize("status", [None, *TaskStatus])
@pytest.mark.parametrize("callback", [SUCCESS, FAILURE], ids=["success", "failure"])
def test_no_callback_makes_a_move_the_table_forbids(status: TaskStatus | None, callback: Callback) -> None:
    item = task(status, video_url=URL) if status else None
    plan = plan_callback(item, callback, NOW, poll_after=POLL_AFTER)
    target = plan.change.status
    assert target is None or may_move(status, target)


VIDEO = StoredVideo("bucket", "videos/t-1.mp4", "v1", "ab" * 32, 10, 4.0004, 1080, 1920)

# (write, the statuses it may start from, its change)
WRITES = [
    ("lease", LEASE_FROM, plan_lease("w", NOW, 120)),
    ("stored", LEASED_FROM, plan_stored(VIDEO, NOW)),
    ("retry", LEASED_FROM, plan_retry("dropped", NOW, poll_after=POLL_AFTER)),
    ("transfer failed", LEASED_FROM, plan_transfer_failed("expired", NOW)),
    ("redrive", REDRIVE_FROM, plan_redrive(NOW, poll_after=POLL_AFTER)),
    ("submitted", (None,), plan_submitted("a-1", NOW, poll_after=POLL_AFTER)),
]


@pytest.mark.parametrize(("sources", "change"), [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_every_write_moves_along_the_table(sources: tuple[TaskStatus | None, ...], change: Any) -> None:
    assert change.status is not None
    assert all(may_move(source, change.status) for source in sources)


def test_the_table_ends_at_the_final_statuses() -> None:
    # STORED and GENERATION_FAILED lead nowhere; TRANSFER_FAILED only back to RECEIVED.
    assert MOVES[S.STORED] == frozenset() and MOVES[S.GENERATION_FAILED] == frozenset()
    assert MOVES[S.TRANSFER_FAILED] == {S.RECEIVED}
    assert not may_move(S.STORED, S.RECEIVED) and not may_move(S.GENERATION_FAILED, S.RECEIVED)


def test_marking_queued_changes_no_status_and_keeps_a_due_time() -> None:
    # A queued message is a way forward only while it exists: reconcile looks again once it
    # should have been picked up (docs/task-record.md "Nothing is stuck").
    change = plan_queued(NOW, poll_after=POLL_AFTER)
    assert change.status is None
    assert change.sets == {
        "transfer_queued": True,
        "poll_partition": POLL_PARTITION,
        "poll_due": int(NOW) + 300,
    }
    assert change.removes == set()
    assert set(QUEUED_FROM) == {S.RECEIVED, S.TRANSFERRING}


def test_a_stored_video_ends_the_lease_and_keeps_what_the_mp4_check_read() -> None:
    change = plan_stored(VIDEO, NOW)
    assert change.sets["duration_seconds"] == 4.0 and (change.sets["width"], change.sets["height"]) == (
        1080,
        1920,
    )
    assert change.sets["bytes_transferred"] == change.sets["size"] == 10
    assert {"lease_owner", "lease_expires", "error", "poll_due"} <= change.removes
    # A file with no video track (audio only) records null dimensions and rotation 0, as
    # docs/task-record.md says; no version id and no warnings are left out.
    bare = plan_stored(StoredVideo("b", "k", None, "0" * 64, 1, None, None, None), NOW)
    assert (bare.sets["width"], bare.sets["height"], bare.sets["duration_seconds"]) == (None, None, None)
    assert bare.sets["rotation"] == 0
    assert not {"s3_version_id", "warnings"} & set(bare.sets)


def test_the_public_record_hides_the_machinery() -> None:
    item = task(
        S.TRANSFERRING, lease_owner="w", lease_expires=1, transfer_queued=True, poll_due=2, attempts=1
    )
    record = public_record(item)
    assert not INTERNAL_FIELDS & set(record)
    assert record == {"attempts": 1, "status": "TRANSFERRING", "task_id": "t-1"}
    assert list(record) == sorted(record)
