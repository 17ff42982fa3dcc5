"""A multipart upload left open by a worker that died mid-copy is aborted by the next holder.

A worker's own failures abort its upload (MultipartUpload.__exit__), but a worker that is
killed (Lambda's timeout, a lost container, SIGKILL) runs no code at all: its upload stays
open until the bucket's lifecycle rule removes it a day later. docs/stored-video.md: no orphaned multipart
upload. The transfer that takes the task over (its lease expired) aborts any upload still
open for the task's key before it starts its own. On moto, through the transfer handler.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

import transfer
from testkit.aws import client_error
from testkit.lambda_context import LambdaContext
from testkit.video_source import VideoServer
from tests.conftest import FIXTURES, AwsWorld, load_event
from videohook import services
from videohook.models import Callback
from videohook.upload import abort_orphaned_uploads

TASK = json.loads(load_event("transfer_message.json")["Records"][0]["body"])["task_id"]
KEY = f"videos/{TASK}.mp4"
PART = b"\0" * (5 * 1024 * 1024)


@pytest.fixture
def server() -> Iterator[VideoServer]:
    with VideoServer() as video_server:
        yield video_server


def open_upload(aws: AwsWorld, key: str, parts: int = 1) -> str:
    """An upload as a killed worker leaves it: created, some parts sent, never finished."""
    s3, bucket = aws.client("s3"), aws.output("VideosBucket")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/mp4")["UploadId"]
    for number in range(1, parts + 1):
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=PART)
    return str(upload_id)


def uploads(aws: AwsWorld) -> list[tuple[str, str]]:
    answer = aws.client("s3").list_multipart_uploads(Bucket=aws.output("VideosBucket"))
    return sorted((u["Key"], u["UploadId"]) for u in answer.get("Uploads", []))


def test_only_the_keys_own_open_uploads_are_aborted(aws: AwsWorld) -> None:
    # GIVEN two uploads left open for the task's key, and uploads of other keys, one of
    # which merely starts with the task's key
    mine = [open_upload(aws, KEY), open_upload(aws, KEY, parts=0)]
    others = {open_upload(aws, "videos/other.mp4"), open_upload(aws, KEY + ".bak", parts=0)}
    # WHEN the orphans of the task's key are cleaned up
    aborted = abort_orphaned_uploads(aws.client("s3"), aws.output("VideosBucket"), KEY)
    # THEN exactly the task's two are gone, and the others are untouched
    assert aborted == 2
    assert {upload_id for _, upload_id in uploads(aws)} == others
    assert not set(mine) & {upload_id for _, upload_id in uploads(aws)}
    # AND a second run finds nothing to do
    assert abort_orphaned_uploads(aws.client("s3"), aws.output("VideosBucket"), KEY) == 0


class _Flaky:
    """An S3 client whose listing fails, or which pages its answer one upload at a time."""

    def __init__(self, real: Any, fail: bool = False) -> None:
        self.real = real
        self.fail = fail
        self.aborted: list[str] = []

    def list_multipart_uploads(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail:
            raise client_error("ListMultipartUploads", "AccessDenied")
        answer = self.real.list_multipart_uploads(**kwargs)
        found = answer.get("Uploads", [])
        if kwargs.get("UploadIdMarker"):
            found = [u for u in found if u["UploadId"] > kwargs["UploadIdMarker"]]
        found.sort(key=lambda u: u["UploadId"])
        page = found[:1]
        truncated = len(found) > 1
        return {
            "Uploads": page,
            "IsTruncated": truncated,
            "NextKeyMarker": page[-1]["Key"] if page else "",
            "NextUploadIdMarker": page[-1]["UploadId"] if page else "",
        }

    def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self.aborted.append(kwargs["UploadId"])
        return {}


def test_every_page_of_the_listing_is_read(aws: AwsWorld) -> None:
    # GIVEN three orphans of the key, listed one per page
    made = {open_upload(aws, KEY, parts=0) for _ in range(3)}
    client = _Flaky(aws.client("s3"))
    # WHEN cleaned up
    aborted = abort_orphaned_uploads(client, aws.output("VideosBucket"), KEY)
    # THEN all three pages were followed
    assert aborted == 3 and set(client.aborted) == made


def test_a_failed_listing_does_not_stop_the_copy(aws: AwsWorld) -> None:
    # GIVEN S3 refusing the listing (say, a missing permission)
    client = _Flaky(aws.client("s3"), fail=True)
    # WHEN cleaned up
    # THEN nothing is raised (best effort: the lifecycle rule is the last resort)
    assert abort_orphaned_uploads(client, aws.output("VideosBucket"), KEY) == 0


def test_a_task_taken_over_after_its_worker_died_leaves_no_open_upload(
    aws: AwsWorld, server: VideoServer
) -> None:
    # GIVEN a task whose worker died mid-copy: TRANSFERRING under a lease that has expired,
    # and the dead worker's multipart upload still open with a part in it
    aws.use_function("TransferFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
    store = services.services().store
    data = (FIXTURES / "faststart.mp4").read_bytes()
    url = server.add("/v.mp4", data)
    store.record_callback(Callback(code=200, msg="ok", task_id=TASK, video_url=url))
    assert store.acquire_lease(TASK, "dead-worker", lease_seconds=5) is not None
    orphan = open_upload(aws, KEY)
    store.clock = lambda: time.time() + 10  # the dead worker's lease has run out
    # WHEN the message comes back and another worker handles it
    answer = transfer.lambda_handler(load_event("transfer_message.json"), LambdaContext())
    # THEN the task is stored from the source, once
    assert answer["batchItemFailures"] == []
    record = store.get(TASK)
    assert record["status"] == "STORED" and record["attempts"] == 2
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    s3, bucket = aws.client("s3"), aws.output("VideosBucket")
    versions = s3.list_object_versions(Bucket=bucket, Prefix=KEY).get("Versions", [])
    assert len(versions) == 1
    # AND the dead worker's upload is gone: no multipart upload is left open
    assert uploads(aws) == []
    with pytest.raises(ClientError):
        s3.list_parts(Bucket=bucket, Key=KEY, UploadId=orphan)
