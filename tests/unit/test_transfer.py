"""The transfer path through the transfer function's Lambda entry point, on moto, from a real HTTP source.

Each test records a task through the store (or the ingest function), serves its video from
`testkit.video_source.VideoServer` on 127.0.0.1 and delivers the SQS message of
events/transfer_message.json to `transfer.lambda_handler`. Covered: every fixture's verdict,
multipart with CRC32 part checksums, resume after drops (Range honoured or ignored), lying or
missing Content-Length, expired links and server errors, redirects, the size limit, slow
sources, S3 and DynamoDB faults, the lease under duplicate and late deliveries, batches, and
the SSRF guard at fetch time. After every failure: no object version and no multipart upload.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore import xform_name

import ingest
import transfer
from testkit.aws import client_error, on_call
from testkit.lambda_context import LambdaContext
from testkit.media import BLOCK, generated_sha256, materialise, streamed_mp4
from testkit.video_source import Generated, VideoServer
from tests.conftest import FIXTURES, AwsWorld, load_event, signed_callback
from videohook import services
from videohook.copier import MAX_RESUMES, READ_CHUNK_BYTES
from videohook.errors import LeaseLost
from videohook.lifecycle import TaskStatus
from videohook.models import Callback, StoredVideo
from videohook.source import SourceSession
from videohook.transfer_service import Delivery, TransferService

MESSAGE = "transfer_message.json"
TASK = json.loads(load_event(MESSAGE)["Records"][0]["body"])["task_id"]
MIB = 1024 * 1024
FIXTURE = "moov_at_end.mp4"  # the largest real fixture (278 240 bytes), for the failure cases

VALID_FIXTURES = [  # fixtures/README.md: name, duration s, width, height
    ("faststart.mp4", 4.0, 320, 240),
    ("moov_at_end.mp4", 3.0, 640, 360),
    ("fragmented.mp4", 4.08, 320, 240),
]
INVALID_FIXTURES = [  # name, words the reason must contain
    ("truncated.mp4", "ends inside mdat"),
    ("no_moov.mp4", "no moov"),
    ("not_mp4.html", "not an MP4"),
]


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stalling(video: Generated, release: threading.Event, at: int) -> Generated:
    """`video`, except that the first request stalls at byte `at` until `release` is set."""
    calls: list[int] = []

    def chunks(start: int) -> Iterator[bytes]:
        calls.append(start)
        offset = start
        for chunk in video.chunks(start):
            if len(calls) == 1 and offset <= at < offset + len(chunk):
                yield chunk[: at - offset]
                assert release.wait(timeout=20), "the test never released the stalled source"
                chunk = chunk[at - offset :]
            yield chunk
            offset += len(chunk)

    return Generated(video.size, chunks)


SMALL_SYNTHETIC = materialise(streamed_mp4(int(2.5 * MIB)))  # 2.5 MiB: three 1 MiB reads


# --- the rig -------------------------------------------------------------------------------


def message(
    task_id: str = TASK, *, receive_count: int = 1, body: str | None = None, message_id: str | None = None
) -> dict[str, Any]:
    """One SQS record shaped like events/transfer_message.json."""
    record = copy.deepcopy(load_event(MESSAGE)["Records"][0])
    record["body"] = json.dumps({"task_id": task_id}) if body is None else body
    record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
    if message_id is not None:
        record["messageId"] = message_id
    return record


def message_id(record: dict[str, Any] | None = None) -> str:
    return (record or message())["messageId"]


@dataclass
class Rig:
    """The transfer function's environment on moto, plus a video server."""

    aws: AwsWorld
    server: VideoServer
    env: dict[str, str] = field(default_factory=dict)

    def configure(self, allow_private: bool = True, **overrides: str) -> None:
        if allow_private:
            overrides.setdefault("VIDEO_SOURCE_ALLOW_PRIVATE", "true")
        self.env = self.aws.use_function("TransferFunction", **overrides)

    @property
    def store(self) -> Any:
        return services.services().store

    @property
    def s3(self) -> Any:
        return self.aws.client("s3")

    @property
    def bucket(self) -> str:
        return self.aws.output("VideosBucket")

    @property
    def max_attempts(self) -> int:
        return int(self.env["TRANSFER_MAX_ATTEMPTS"])

    def receive(self, url: str, task_id: str = TASK) -> None:
        """Record a success callback for `task_id` naming `url` (the task becomes RECEIVED)."""
        outcome = self.store.record_callback(Callback(code=200, msg="ok", task_id=task_id, video_url=url))
        assert outcome.record["status"] == "RECEIVED"

    def deliver(self, *records: dict[str, Any]) -> list[str]:
        """Invoke the handler with these records (default: the sample message); the failed ids."""
        event = {"Records": list(records)} if records else load_event(MESSAGE)
        answer = transfer.lambda_handler(event, LambdaContext())
        return [failure["itemIdentifier"] for failure in answer["batchItemFailures"]]

    def task(self, task_id: str = TASK) -> dict[str, Any]:
        return self.store.get(task_id)

    def versions(self, task_id: str = TASK) -> list[dict[str, Any]]:
        answer = self.s3.list_object_versions(Bucket=self.bucket, Prefix=f"videos/{task_id}.mp4")
        return answer.get("Versions", []) + answer.get("DeleteMarkers", [])

    def uploads(self) -> list[dict[str, Any]]:
        return self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    def assert_nothing_left(self, task_id: str = TASK) -> None:
        """No object version for the task's key and no multipart upload in the bucket."""
        assert self.uploads() == []
        assert self.versions(task_id) == []

    def assert_stored(self, task_id: str, expected_sha256: str, size: int) -> dict[str, Any]:
        """The task is STORED and its object is the source's bytes, described as docs/stored-video.md says."""
        item = self.task(task_id)
        key = f"videos/{task_id}.mp4"
        assert item["status"] == "STORED", item.get("error")
        assert (item["sha256"], item["size"]) == (expected_sha256, size)
        assert (item["s3_bucket"], item["s3_key"]) == (self.bucket, key)
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        assert sha256(body) == expected_sha256 and len(body) == size
        head = self.s3.head_object(Bucket=self.bucket, Key=key)
        assert head["ContentType"] == "video/mp4"
        assert head["Metadata"] == {"task-id": task_id, "source-host": "127.0.0.1"}
        assert head["ServerSideEncryption"] == "AES256"
        assert head["VersionId"] and item["s3_version_id"] == head["VersionId"]
        assert "error" not in item and "lease_owner" not in item
        assert self.uploads() == []
        return item


@pytest.fixture
def server() -> Iterator[VideoServer]:
    with VideoServer() as video_server:
        yield video_server


@pytest.fixture
def rig(aws: AwsWorld, server: VideoServer) -> Rig:
    rig = Rig(aws, server)
    rig.configure()
    return rig


# --- every fixture gets its verdict -----------------------------------------------------------


def test_sample_message_stores_the_sample_task(rig: Rig) -> None:
    # GIVEN the task of events/transfer_message.json, RECEIVED with a URL on the video server
    data = fixture("faststart.mp4")
    rig.receive(rig.server.add("/video_847715e66259.mp4", data))
    # WHEN the sample event is delivered as it is
    failures = rig.deliver()
    # THEN the message is acknowledged and the video stored, with one attempt counted
    assert failures == []
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert item["attempts"] == 1 and item["bytes_transferred"] == len(data)
    assert item["content_length"] == len(data) and item["stored_at"].endswith("Z")


@pytest.mark.parametrize(("name", "duration", "width", "height"), VALID_FIXTURES)
def test_valid_fixture_is_stored_with_its_description(
    rig: Rig, name: str, duration: float, width: int, height: int
) -> None:
    # GIVEN a task whose source serves a valid fixture
    data = fixture(name)
    rig.receive(rig.server.add(f"/{name}", data))
    # WHEN its message is delivered
    failures = rig.deliver()
    # THEN it is stored byte for byte, with what the MP4 check read from it
    assert failures == []
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert (item["duration_seconds"], item["width"], item["height"]) == (duration, width, height)
    assert len(rig.versions()) == 1


@pytest.mark.parametrize(("name", "reason"), INVALID_FIXTURES)
def test_invalid_fixture_fails_at_once_with_a_reason(rig: Rig, name: str, reason: str) -> None:
    # GIVEN a task whose source serves a fixture that is not a complete MP4
    rig.receive(rig.server.add(f"/{name}", fixture(name)))
    # WHEN its message is delivered (first attempt)
    failures = rig.deliver()
    # THEN the task fails for good with the reason in words, the message is not retried,
    # and S3 holds neither an object nor a multipart upload
    assert failures == []
    item = rig.task()
    assert item["status"] == "TRANSFER_FAILED"
    assert reason in item["error"], item["error"]
    assert item["attempts"] == 1 and "lease_owner" not in item
    # AND the source was fetched once more before the task failed (a CDN's error page may pass)
    assert len(rig.server.requests_for(f"/{name}")) == 2
    rig.assert_nothing_left()


# --- what the MP4 check tolerates, reads and refuses, as the record shows it -------------------


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, size) of the boxes in data[start:end] (32-bit sizes, as in the fixtures)."""
    while start + 8 <= end:
        size, typ = struct.unpack(">I4s", data[start : start + 8])
        yield typ, start, size
        start += size


def _stbl_tables(data: bytes, typ: bytes) -> Iterator[int]:
    """Where each box of type `typ` lies in the fixture's moov/trak/mdia/minf/stbl."""
    path = [b"moov", b"trak", b"mdia", b"minf", b"stbl"]

    def walk(depth: int, start: int, end: int) -> Iterator[int]:
        for kind, at, size in _boxes(data, start, end):
            if depth == len(path) and kind == typ:
                yield at
            elif depth < len(path) and kind == path[depth]:
                yield from walk(depth + 1, at + 8, at + size)

    return walk(0, 0, len(data))


def with_leading_free(data: bytes) -> bytes:
    """An 8-byte free box before ftyp, every chunk offset moved by 8 as a muxer writes it."""
    out = bytearray(data)
    for at in _stbl_tables(data, b"stco"):
        count = struct.unpack(">I", data[at + 12 : at + 16])[0]
        for k in range(count):
            entry = at + 16 + 4 * k
            out[entry : entry + 4] = struct.pack(">I", struct.unpack(">I", data[entry : entry + 4])[0] + 8)
    return struct.pack(">I4s", 8, b"free") + bytes(out)


def rotated_90(data: bytes) -> bytes:
    """The video track's tkhd matrix set to a 90-degree clockwise turn (a portrait phone video)."""
    out = bytearray(data)
    for _, trak, size in (b for b in _boxes(data, 32, len(data)) if b[0] == b"moov"):
        for kind, at, _ in _boxes(data, trak + 8, trak + size):
            if kind == b"trak" and data[at + 8 + 4 : at + 8 + 8] == b"tkhd":
                tkhd_body = at + 8 + 8 + 4
                if struct.unpack(">I", data[tkhd_body + 76 : tkhd_body + 80])[0]:  # has a width
                    matrix = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
                    out[tkhd_body + 36 : tkhd_body + 72] = matrix
    return bytes(out)


@pytest.mark.parametrize(
    ("variant", "make", "warning"),
    [
        ("leading_free", with_leading_free, "leading free box(es) before ftyp"),
        ("appended_zeros", lambda data: data + bytes(300), "300 bytes after the last box"),
        ("appended_3_bytes", lambda data: data + b"\r\n\n", "3 bytes after the last box"),
    ],
)
def test_tolerated_mp4_is_stored_with_a_warning(
    rig: Rig, variant: str, make: Callable[[bytes], bytes], warning: str
) -> None:
    # GIVEN a task whose source serves a fixture with a leading free box or bytes appended
    data = make(fixture("faststart.mp4"))
    rig.receive(rig.server.add(f"/{variant}.mp4", data))
    # WHEN its message is delivered
    assert rig.deliver() == []
    # THEN it is stored, with what the check tolerated in `warnings`, fetched only once
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert len(item["warnings"]) == 1 and warning in item["warnings"][0], item["warnings"]
    assert (item["duration_seconds"], item["width"], item["height"], item["rotation"]) == (4.0, 320, 240, 0)
    assert len(rig.server.requests_for(f"/{variant}.mp4")) == 1


def test_clean_mp4_is_stored_without_warnings_and_a_rotated_one_with_its_displayed_size(rig: Rig) -> None:
    # GIVEN two tasks: the faststart fixture as it is, and the same with its video turned 90 degrees
    plain, turned = fixture("faststart.mp4"), rotated_90(fixture("faststart.mp4"))
    rig.receive(rig.server.add("/plain.mp4", plain), "task-plain")
    rig.receive(rig.server.add("/turned.mp4", turned), "task-turned")
    # WHEN both messages are delivered
    assert rig.deliver(message("task-plain"), message("task-turned")) == []
    # THEN the plain one has rotation 0 and no warnings; the turned one is shown portrait
    item = rig.assert_stored("task-plain", sha256(plain), len(plain))
    assert (item["width"], item["height"], item["rotation"]) == (320, 240, 0) and "warnings" not in item
    item = rig.assert_stored("task-turned", sha256(turned), len(turned))
    assert (item["width"], item["height"], item["rotation"]) == (240, 320, 90)


def test_error_page_then_the_video_is_stored_on_the_same_attempt(rig: Rig) -> None:
    # GIVEN a source that answers 200 with an HTML error page first, then the video
    data = fixture("faststart.mp4")
    page = b"<!DOCTYPE html><html><body>Service busy, try again</body></html>".ljust(len(data), b" ")
    calls: list[int] = []

    def chunks(start: int) -> Iterator[bytes]:
        calls.append(start)
        yield (page if len(calls) == 1 else data)[start:]

    rig.receive(rig.server.add("/flaky.mp4", Generated(len(data), chunks)))
    # WHEN the message is delivered once
    assert rig.deliver() == []
    # THEN the page was refused, the video fetched once more and stored, in one attempt
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert item["attempts"] == 1 and len(calls) == 2
    assert len(rig.versions()) == 1


def test_second_invalid_answer_fails_the_task_with_the_checks_reason(rig: Rig) -> None:
    # GIVEN a source whose sample table points outside its media data (a damaged chunk offset)
    data = bytearray(fixture("faststart.mp4"))
    stco = next(_stbl_tables(bytes(data), b"stco"))
    data[stco + 16 : stco + 20] = struct.pack(">I", 10**6)
    rig.receive(rig.server.add("/damaged.mp4", bytes(data)))
    # WHEN the message is delivered
    assert rig.deliver() == []
    # THEN after a second fetch the task fails, in words, and nothing is left in S3
    item = rig.task()
    assert item["status"] == "TRANSFER_FAILED" and "outside the media data" in item["error"]
    assert len(rig.server.requests_for("/damaged.mp4")) == 2
    rig.assert_nothing_left()
    rig.assert_nothing_left()


def test_callback_through_ingest_then_its_queued_message_stores_the_video(rig: Rig) -> None:
    # GIVEN a signed callback accepted by the ingest function (loopback allowed for the test)
    data = fixture("fragmented.mp4")
    url = rig.server.add("/cdn/fragmented.mp4", data)
    rig.aws.use_function("IngestFunction", VIDEO_SOURCE_ALLOW_PRIVATE="true")
    body = {"code": 200, "msg": "success", "data": {"task_id": "task-e2e", "video_url": url}}
    answer = ingest.lambda_handler(
        signed_callback("callback_success.json", token=rig.aws.callback_token, body=body), LambdaContext()
    )
    assert answer["statusCode"] == 200
    [queued] = rig.aws.queued_messages()
    # WHEN the transfer function receives exactly the message ingest queued
    rig.configure()
    record = message(body=queued["Body"], message_id=queued["MessageId"])
    # THEN the video is stored under the callback's task id
    assert rig.deliver(record) == []
    rig.assert_stored("task-e2e", sha256(data), len(data))


# --- multipart with part checksums -----------------------------------------------------------


def test_large_video_is_sent_in_crc32_checked_parts(rig: Rig) -> None:
    # GIVEN a 13 MiB synthetic MP4 generated by the server, and 5 MiB parts (the minimum)
    rig.configure(TRANSFER_PART_BYTES=str(5 * MIB))
    video = streamed_mp4(13 * MIB)
    rig.receive(rig.server.add("/large.mp4", video))
    sent: list[tuple[int, str | None, bytes]] = []
    lock = threading.Lock()

    def record_part(params: dict[str, Any], **_: Any) -> None:
        with lock:
            sent.append(
                (
                    params["query_string"]["partNumber"],
                    params["headers"].get("x-amz-checksum-crc32"),
                    params["body"].getvalue(),
                )
            )

    with on_call(services.services().s3, "UploadPart", record_part):
        # WHEN its message is delivered
        failures = rig.deliver()
    # THEN three parts were sent, 5 + 5 + the rest, each with its own correct CRC32
    assert failures == []
    sent.sort()
    assert [(number, len(body)) for number, _, body in sent] == [
        (1, 5 * MIB),
        (2, 5 * MIB),
        (3, video.size - 10 * MIB),
    ]
    for _, checksum, body in sent:
        assert checksum == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    # AND the object is the source, with S3's composite CRC32 over those parts
    rig.assert_stored(TASK, generated_sha256(video), video.size)
    key = f"videos/{TASK}.mp4"
    composite = base64.b64encode(
        zlib.crc32(b"".join(base64.b64decode(c) for _, c, _ in sent)).to_bytes(4, "big")
    ).decode()
    head = rig.s3.head_object(Bucket=rig.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"].split("-")[0] == composite  # real S3 adds "-3"; moto does not
    attributes = rig.s3.get_object_attributes(
        Bucket=rig.bucket, Key=key, ObjectAttributes=["Checksum", "ObjectParts", "ObjectSize"]
    )
    assert attributes["ObjectSize"] == video.size
    assert attributes["Checksum"]["ChecksumType"] == "COMPOSITE"
    assert attributes["Checksum"]["ChecksumCRC32"].split("-")[0] == composite
    # (moto does not answer ObjectParts; real S3 lists 3 parts with their ChecksumCRC32 here)
    assert attributes.get("ObjectParts", {}).get("TotalPartsCount", 3) == 3


def test_progress_reaches_the_whole_length_only_once_the_object_is_stored(rig: Rig, monkeypatch) -> None:
    # GIVEN a 11 MiB video sent in 5 MiB parts, with progress written after every chunk read
    monkeypatch.setattr("videohook.copier.PROGRESS_EVERY_SECONDS", 0)
    rig.configure(TRANSFER_PART_BYTES=str(5 * MIB))
    video = streamed_mp4(11 * MIB)
    rig.receive(rig.server.add("/progress.mp4", video))
    seen: list[tuple[str, int, int | None]] = []

    def snapshot(what: str) -> Callable[..., None]:
        def look(**_: Any) -> None:
            task = rig.task()
            seen.append((what, int(task["bytes_transferred"]), task.get("content_length")))

        return look

    s3 = services.services().s3
    hooks = {
        "before-call.s3.UploadPart": snapshot("part"),
        "before-call.s3.CompleteMultipartUpload": snapshot("complete"),
    }
    for event, hook in hooks.items():
        s3.meta.events.register(event, hook)
    try:
        # WHEN its message is delivered
        failures = rig.deliver()
    finally:
        for event, hook in hooks.items():
            s3.meta.events.unregister(event, hook)
    # THEN while parts and the completion were being sent, the record never showed 100%
    assert failures == []
    assert [what for what, _, _ in seen].count("complete") == 1
    assert seen[-1][0] == "complete" and seen[-1][1] > 10 * MIB  # all read, the last part sent
    assert all(done < total for _, done, total in seen if total is not None)
    assert all(total == video.size for _, _, total in seen[1:])
    # AND the stored record shows the whole video transferred
    task = rig.assert_stored(TASK, generated_sha256(video), video.size)
    assert task["bytes_transferred"] == task["content_length"] == video.size


# --- dropped connections ------------------------------------------------------------------


@pytest.mark.parametrize("drop", [7, 100_000, MIB, 1_500_000, len(SMALL_SYNTHETIC) - 1])
def test_dropped_connection_is_resumed_with_range(rig: Rig, drop: int) -> None:
    # GIVEN a 2.5 MiB video whose first response is cut after `drop` bytes; Range is honoured
    rig.receive(rig.server.add("/v.mp4", SMALL_SYNTHETIC, drop_at=drop))
    # WHEN its message is delivered
    failures = rig.deliver()
    # THEN it is stored intact in one attempt
    assert failures == []
    rig.assert_stored(TASK, sha256(SMALL_SYNTHETIC), len(SMALL_SYNTHETIC))
    # AND the second request asked for the rest with Range (and If-Range on the first ETag),
    # from the drop offset or at most one read chunk before it (urllib3 discards the bytes
    # of a read cut short, so the copier resumes after the last whole chunk it received)
    first, resume = rig.server.requests_for("/v.mp4")
    assert first.range is None
    assert resume.range is not None and resume.range.endswith("-")
    assert drop - READ_CHUNK_BYTES < resume.range_start <= drop
    if drop % READ_CHUNK_BYTES == 0:
        assert resume.range_start == drop
    assert resume.if_range == rig.server.routes["/v.mp4"].etag


def test_several_drops_in_one_transfer_are_each_resumed(rig: Rig) -> None:
    # GIVEN a source that drops three times at growing offsets, then serves the rest
    rig.receive(rig.server.add("/v.mp4", SMALL_SYNTHETIC, drop_at=[MIB, 2 * MIB, 2 * MIB + 300_000]))
    # WHEN its message is delivered
    assert rig.deliver() == []
    # THEN four requests made one intact copy
    rig.assert_stored(TASK, sha256(SMALL_SYNTHETIC), len(SMALL_SYNTHETIC))
    starts = [r.range_start for r in rig.server.requests_for("/v.mp4")]
    # urllib3 discards a read cut short, so each resume starts at the last whole chunk received.
    assert starts == [None, MIB, 2 * MIB, 2 * MIB + 300_000 - 300_000 % READ_CHUNK_BYTES]


def test_chunked_source_that_drops_is_resumed(rig: Rig) -> None:
    # GIVEN a chunked source (no Content-Length) that drops once mid-body
    rig.receive(rig.server.add("/v.mp4", SMALL_SYNTHETIC, framing="chunked", drop_at=MIB + 4096))
    # WHEN its message is delivered THEN it is resumed with Range and stored intact
    assert rig.deliver() == []
    rig.assert_stored(TASK, sha256(SMALL_SYNTHETIC), len(SMALL_SYNTHETIC))
    first, resume = rig.server.requests_for("/v.mp4")
    assert first.range is None and MIB + 4096 - READ_CHUNK_BYTES < resume.range_start <= MIB + 4096


@pytest.mark.parametrize("drop", [100_000, 2 * MIB])
def test_source_ignoring_range_is_restarted_and_its_prefix_checked(rig: Rig, drop: int) -> None:
    # GIVEN a source that drops once and ignores Range (always 200 with the whole body)
    rig.receive(rig.server.add("/v.mp4", SMALL_SYNTHETIC, drop_at=drop, ranges=False))
    # WHEN its message is delivered
    failures = rig.deliver()
    # THEN the copier re-read the prefix, found it identical, and stored one intact copy
    assert failures == []
    rig.assert_stored(TASK, sha256(SMALL_SYNTHETIC), len(SMALL_SYNTHETIC))
    assert len(rig.server.requests_for("/v.mp4")) == 2


def test_source_whose_bytes_change_under_a_restart_is_not_stitched(rig: Rig) -> None:
    # GIVEN a source ignoring Range whose content differs on the second request
    calls: list[int] = []

    def block() -> bytes:
        calls.append(1)
        return BLOCK if len(calls) == 1 else BLOCK[::-1]

    rig.receive(rig.server.add("/v.mp4", streamed_mp4(int(2.5 * MIB), block), drop_at=2 * MIB, ranges=False))
    # WHEN its message is delivered
    failures = rig.deliver()
    # THEN the attempt is given back for a retry: nothing mixed from two files is stored
    assert failures == [message_id()]
    item = rig.task()
    assert item["status"] == "RECEIVED" and "changed" in item["error"]
    rig.assert_nothing_left()


def test_drop_on_every_request_is_retried_then_failed_on_the_last_attempt(rig: Rig) -> None:
    # GIVEN a source that drops every response after 100 000 bytes
    data = fixture(FIXTURE)
    rig.receive(rig.server.add("/v.mp4", data, drop_at=100_000, drops=None))
    # WHEN the first delivery arrives
    failures = rig.deliver()
    # THEN it gave up after the resume limit and handed the message back to SQS: the task is
    # RECEIVED again with the error in words, and nothing is left in S3
    assert failures == [message_id()]
    assert len(rig.server.requests_for("/v.mp4")) == 1 + MAX_RESUMES
    item = rig.task()
    assert item["status"] == "RECEIVED" and "dropped the connection" in item["error"]
    assert "lease_owner" not in item and item["attempts"] == 1
    rig.assert_nothing_left()
    # WHEN the message arrives for the last time (ApproximateReceiveCount = TRANSFER_MAX_ATTEMPTS)
    failures = rig.deliver(message(receive_count=rig.max_attempts))
    # THEN the task fails for good and the message is acknowledged
    assert failures == []
    item = rig.task()
    assert item["status"] == "TRANSFER_FAILED" and "dropped the connection" in item["error"]
    assert item["attempts"] == 2
    rig.assert_nothing_left()


def test_drop_while_rereading_the_prefix_is_resumed_like_any_drop(rig: Rig) -> None:
    # GIVEN a source ignoring Range that drops at 2.2 MB, then at 1.1 MB while the prefix is re-read
    rig.receive(rig.server.add("/v.mp4", SMALL_SYNTHETIC, drop_at=[2_200_000, 1_100_000], ranges=False))
    # WHEN its message is delivered
    failures = rig.deliver()
    # THEN the second drop is treated like the first (another restart, within MAX_RESUMES)
    assert failures == [], rig.task().get("error")
    rig.assert_stored(TASK, sha256(SMALL_SYNTHETIC), len(SMALL_SYNTHETIC))


def test_content_length_bigger_than_the_body_is_retried_then_failed(rig: Rig) -> None:
    # GIVEN a source announcing 1000 bytes more than it sends (the body ends early)
    rig.receive(rig.server.add("/v.mp4", fixture(FIXTURE), length_delta=1000))
    # WHEN the message is delivered THEN the attempt is retried and nothing is stored
    assert rig.deliver() == [message_id()]
    assert rig.task()["status"] == "RECEIVED" and rig.task()["error"]
    rig.assert_nothing_left()
    # WHEN the last attempt meets the same source THEN the task fails for good
    assert rig.deliver(message(receive_count=rig.max_attempts)) == []
    assert rig.task()["status"] == "TRANSFER_FAILED"
    rig.assert_nothing_left()


def test_content_length_smaller_than_the_body_fails_as_a_truncated_mp4(rig: Rig) -> None:
    # GIVEN a source announcing 1000 bytes less than the file (the client stops there)
    rig.receive(rig.server.add("/v.mp4", fixture(FIXTURE), length_delta=-1000))
    # WHEN the message is delivered
    failures = rig.deliver()
    # THEN the cut MP4 is refused for good, in words, and nothing is stored
    assert failures == []
    item = rig.task()
    assert item["status"] == "TRANSFER_FAILED" and "ends inside" in item["error"]
    rig.assert_nothing_left()


@pytest.mark.parametrize("framing", ["close", "chunked"])
def test_valid_video_without_content_length_is_stored(rig: Rig, framing: str) -> None:
    # GIVEN a source sending no Content-Length (close-delimited or chunked)
    data = fixture(FIXTURE)
    rig.receive(rig.server.add("/v.mp4", data, framing=framing))
    # WHEN the message is delivered THEN the video is stored intact
    assert rig.deliver() == []
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert "content_length" not in item


def test_close_delimited_source_cut_short_is_refused_by_the_mp4_check(rig: Rig) -> None:
    # GIVEN a source without Content-Length whose connection closes early on every request:
    # it looks like an end
    rig.receive(rig.server.add("/v.mp4", fixture(FIXTURE), framing="close", drop_at=200_000, drops=None))
    # WHEN the message is delivered THEN the MP4 check sees the truncation twice (a second fetch
    # after the first); nothing is stored
    assert rig.deliver() == []
    item = rig.task()
    assert item["status"] == "TRANSFER_FAILED" and "ends inside" in item["error"]
    assert len(rig.server.requests_for("/v.mp4")) == 2
    rig.assert_nothing_left()


def test_close_delimited_source_cut_short_once_is_stored_from_the_second_fetch(rig: Rig) -> None:
    # GIVEN a source without Content-Length whose first response closes early
    data = fixture(FIXTURE)
    rig.receive(rig.server.add("/v.mp4", data, framing="close", drop_at=200_000))
    # WHEN the message is delivered THEN the cut copy is refused and the second fetch is stored
    assert rig.deliver() == []
    rig.assert_stored(TASK, sha256(data), len(data))
    assert len(rig.server.requests_for("/v.mp4")) == 2


# --- statuses, redirects, size limit, slow sources ----------------------------------------------


def test_expired_link_fails_at_once(rig: Rig) -> None:
    # GIVEN three tasks whose sources answer 403, 404 and 410
    statuses = [403, 404, 410]
    for status in statuses:
        rig.receive(rig.server.add(f"/{status}.mp4", status=status), f"task-{status}")
    # WHEN the first delivery of each arrives
    failures = rig.deliver(*(message(f"task-{s}", message_id=f"m-{s}") for s in statuses))
    # THEN each fails for good at once, with an "expired" reason; no message is retried
    assert failures == []
    for status in statuses:
        item = rig.task(f"task-{status}")
        assert item["status"] == "TRANSFER_FAILED" and "expired" in item["error"]
        assert str(status) in item["error"] and item["attempts"] == 1
        assert len(rig.server.requests_for(f"/{status}.mp4")) == 1
        rig.assert_nothing_left(f"task-{status}")


def test_server_error_is_retried_then_failed_on_the_last_attempt(rig: Rig) -> None:
    # GIVEN three tasks whose sources answer 500, 503 and 429
    statuses = [500, 503, 429]
    for status in statuses:
        rig.receive(rig.server.add(f"/{status}.mp4", status=status), f"task-{status}")
    # WHEN the first delivery of each arrives
    failures = rig.deliver(*(message(f"task-{s}", message_id=f"m-{s}") for s in statuses))
    # THEN every message is handed back, each task RECEIVED with its error in words
    assert sorted(failures) == sorted(f"m-{s}" for s in statuses)
    for status in statuses:
        item = rig.task(f"task-{status}")
        assert item["status"] == "RECEIVED" and str(status) in item["error"]
        rig.assert_nothing_left(f"task-{status}")
    # WHEN the last attempt meets the same answers THEN the tasks fail for good
    last = rig.max_attempts
    assert rig.deliver(*(message(f"task-{s}", receive_count=last) for s in statuses)) == []
    for status in statuses:
        assert rig.task(f"task-{status}")["status"] == "TRANSFER_FAILED"
        rig.assert_nothing_left(f"task-{status}")


def test_server_error_then_recovery_stores_on_the_retry(rig: Rig) -> None:
    # GIVEN a source answering 503 on the first delivery
    data = fixture("faststart.mp4")
    rig.receive(rig.server.add("/v.mp4", status=503))
    assert rig.deliver() == [message_id()]
    # WHEN the source recovers and SQS redelivers
    rig.server.add("/v.mp4", data)
    # THEN the video is stored and the earlier error is cleared
    assert rig.deliver(message(receive_count=2)) == []
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert item["attempts"] == 2


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_redirects_up_to_three_hops_are_followed(rig: Rig, hops: int) -> None:
    # GIVEN a video behind `hops` redirects
    data = fixture("faststart.mp4")
    rig.server.add("/v.mp4", data)
    rig.receive(rig.server.redirect_chain("/v.mp4", hops))
    # WHEN the message is delivered THEN every hop was requested and the video stored
    assert rig.deliver() == []
    rig.assert_stored(TASK, sha256(data), len(data))
    assert len(rig.server.requests) == hops + 1


def test_fourth_redirect_is_refused(rig: Rig) -> None:
    # GIVEN a video behind 4 redirects
    rig.server.add("/v.mp4", fixture("faststart.mp4"))
    rig.receive(rig.server.redirect_chain("/v.mp4", 4))
    # WHEN the message is delivered
    assert rig.deliver() == []
    # THEN the task fails for good, the video itself was never requested, nothing stored
    item = rig.task()
    assert item["status"] == "TRANSFER_FAILED" and "redirects more than 3" in item["error"]
    assert rig.server.requests_for("/v.mp4") == []
    rig.assert_nothing_left()


FRAMINGS = ["length", "close", "chunked"]  # Content-Length, close-delimited, chunked


def test_video_over_max_video_bytes_is_refused(rig: Rig) -> None:
    # GIVEN MAX_VIDEO_BYTES below the video's size, and the video served with and without
    # Content-Length (one task per framing)
    rig.configure(MAX_VIDEO_BYTES="100000")
    for framing in FRAMINGS:
        rig.receive(rig.server.add(f"/{framing}.mp4", fixture(FIXTURE), framing=framing), f"task-{framing}")
    # WHEN their messages are delivered
    assert rig.deliver(*(message(f"task-{f}", message_id=f) for f in FRAMINGS)) == []
    # THEN each task fails for good, naming the limit, and nothing is stored
    for framing in FRAMINGS:
        item = rig.task(f"task-{framing}")
        assert item["status"] == "TRANSFER_FAILED" and "limit of 100000" in item["error"], framing
        rig.assert_nothing_left(f"task-{framing}")


def test_video_of_exactly_max_video_bytes_is_stored(rig: Rig) -> None:
    # GIVEN MAX_VIDEO_BYTES equal to the video's size, served with and without Content-Length
    data = fixture(FIXTURE)
    rig.configure(MAX_VIDEO_BYTES=str(len(data)))
    for framing in FRAMINGS:
        rig.receive(rig.server.add(f"/{framing}.mp4", data, framing=framing), f"task-{framing}")
    # WHEN their messages are delivered THEN every copy is stored
    assert rig.deliver(*(message(f"task-{f}", message_id=f) for f in FRAMINGS)) == []
    for framing in FRAMINGS:
        rig.assert_stored(f"task-{framing}", sha256(data), len(data))


def test_slow_source_is_stored(rig: Rig) -> None:
    # GIVEN a ~280 KB video trickled 64 KiB every 50 ms
    data = fixture(FIXTURE)
    rig.receive(rig.server.add("/v.mp4", data, trickle=(64 * 1024, 0.05)))
    # WHEN the message is delivered THEN it is stored intact from one request
    assert rig.deliver() == []
    rig.assert_stored(TASK, sha256(data), len(data))
    assert len(rig.server.requests_for("/v.mp4")) == 1


# --- AWS faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["UploadPart", "CompleteMultipartUpload"])
def test_s3_fault_mid_copy_aborts_the_upload_and_the_retry_stores(rig: Rig, failing: str) -> None:
    # GIVEN a two-part video, and S3 failing on the 2nd UploadPart (or on the completion)
    rig.configure(TRANSFER_PART_BYTES=str(5 * MIB))
    video = streamed_mp4(6 * MIB)
    rig.receive(rig.server.add("/v.mp4", video))
    seen: list[int] = []
    lock = threading.Lock()

    def fault(**_: Any) -> None:
        with lock:
            seen.append(1)
            if failing == "CompleteMultipartUpload" or len(seen) == 2:
                raise client_error(failing)

    with on_call(services.services().s3, failing, fault):
        # WHEN the message is delivered
        failures = rig.deliver()
    # THEN the attempt is retried, the multipart upload aborted, no object made
    assert failures == [message_id()]
    item = rig.task()
    assert item["status"] == "RECEIVED" and f"S3 {xform_name(failing)} failed" in item["error"]
    rig.assert_nothing_left()
    # WHEN S3 is back and SQS redelivers THEN the video is stored
    assert rig.deliver(message(receive_count=2)) == []
    rig.assert_stored(TASK, generated_sha256(video), video.size)
    assert len(rig.versions()) == 1


def test_abort_is_retried_when_s3_fails_to_abort(rig: Rig) -> None:
    # GIVEN an invalid video (so the upload is aborted) and S3 failing the first two aborts
    rig.receive(rig.server.add("/v.mp4", fixture("truncated.mp4")))
    aborts: list[int] = []

    def flaky_abort(**_: Any) -> None:
        aborts.append(1)
        if len(aborts) <= 2:
            raise client_error("AbortMultipartUpload", "SlowDown")

    with on_call(services.services().s3, "AbortMultipartUpload", flaky_abort):
        failures = rig.deliver()
    # THEN the third abort removed the upload, the second fetch's upload was aborted at its first
    # try, and the task failed for its own reason
    assert failures == [] and len(aborts) == 4
    assert rig.task()["status"] == "TRANSFER_FAILED"
    rig.assert_nothing_left()


def test_dynamodb_fault_when_marking_stored_is_retried_and_the_retry_reuploads(rig: Rig) -> None:
    # GIVEN DynamoDB refusing the write that marks the task STORED
    data = fixture("faststart.mp4")
    rig.receive(rig.server.add("/v.mp4", data))

    def refuse_stored(params: dict[str, Any], **_: Any) -> None:
        if {"S": "STORED"} in params.get("ExpressionAttributeValues", {}).values():
            raise client_error("UpdateItem", "InternalServerError")

    with on_call(rig.store.client, "UpdateItem", refuse_stored, stage="before-parameter-build"):
        # WHEN the message is delivered
        failures = rig.deliver()
    # THEN the message is handed back; observed: the object is complete in S3 (one version),
    # the record still TRANSFERRING under the dead attempt's lease, no upload left open
    assert failures == [message_id()]
    item = rig.task()
    assert item["status"] == "TRANSFERRING" and item["lease_owner"]
    assert len(rig.versions()) == 1 and rig.uploads() == []
    # WHEN a redelivery comes while that lease is still live (not the case in production: the
    # queue's visibility timeout, 5400 s, is far longer than the lease)
    assert rig.deliver(message(receive_count=2)) == []
    # THEN observed: it is acknowledged without touching the source
    assert len(rig.server.requests_for("/v.mp4")) == 1
    # WHEN the redelivery comes after the lease expired
    lease = services.services().settings.lease_seconds
    rig.store.clock = lambda: time.time() + lease + 5
    assert rig.deliver(message(receive_count=3)) == []
    # THEN it copies again: STORED, naming the newest of two identical object versions
    item = rig.assert_stored(TASK, sha256(data), len(data))
    versions = rig.versions()
    assert len(versions) == 2 and len({v["ETag"] for v in versions}) == 1
    assert item["s3_version_id"] == next(v["VersionId"] for v in versions if v["IsLatest"])


# --- the lease ----------------------------------------------------------------------------------


class AtomicTable:
    """A DynamoDB client whose calls run one at a time, as DynamoDB applies each conditional write.

    Why: moto reads the item, evaluates the condition and writes without a lock, so two threads'
    conditional updates can both pass, which real DynamoDB never allows. Serialising the calls
    to the fake restores that guarantee; the workers themselves still run concurrently.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


def test_two_workers_racing_for_one_task_copy_it_once(rig: Rig) -> None:
    # GIVEN one task on a slow source, two workers holding the same delivery, and a table whose
    # conditional writes are atomic (see AtomicTable)
    rig.store.client = AtomicTable(rig.store.client)
    video = streamed_mp4(200_000)
    release = threading.Event()
    rig.receive(rig.server.add("/v.mp4", stalling(video, release, at=100_000)))
    start = threading.Barrier(2)
    outcomes: list[tuple[str, str | None]] = []

    def worker() -> None:
        service = services.transfer_service()
        start.wait()
        outcome = service.handle(TASK, 1)
        outcomes.append((outcome.status, outcome.task_status))

    # WHEN both handle it at the same moment (the source holds the winner mid-copy until the
    # loser has answered, so the loser cannot arrive after the end)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    # THEN one copied it and the other stood aside: one GET on the source, one object version
    assert sorted(outcomes) == [(Delivery.SKIPPED, TaskStatus.TRANSFERRING), (Delivery.STORED, None)]
    assert len(rig.server.requests_for("/v.mp4")) == 1
    assert len(rig.versions()) == 1
    item = rig.assert_stored(TASK, generated_sha256(video), video.size)
    assert item["attempts"] == 1


def test_delivery_while_another_worker_holds_a_live_lease_does_nothing(rig: Rig) -> None:
    # GIVEN a task another worker holds under a live lease
    rig.receive(rig.server.add("/v.mp4", fixture("faststart.mp4")))
    assert rig.store.acquire_lease(TASK, "other-worker", 120) is not None
    # WHEN a duplicate delivery arrives THEN it is acknowledged without a source request
    assert rig.deliver() == []
    assert rig.server.requests == []
    item = rig.task()
    assert item["status"] == "TRANSFERRING" and item["lease_owner"] == "other-worker"


def test_expired_lease_is_taken_over_and_the_dead_worker_cannot_write(rig: Rig) -> None:
    # GIVEN a task whose worker died mid-copy: its lease ran out 10 s ago
    data = fixture("faststart.mp4")
    rig.receive(rig.server.add("/v.mp4", data))
    store = rig.store
    store.clock = lambda: time.time() - 200
    assert store.acquire_lease(TASK, "dead-worker", 190) is not None
    store.clock = time.time
    assert rig.task()["status"] == "TRANSFERRING"
    # WHEN the message is delivered again
    failures = rig.deliver(message(receive_count=2))
    # THEN the new delivery takes the task over and stores the video
    assert failures == []
    item = rig.assert_stored(TASK, sha256(data), len(data))
    assert item["attempts"] == 2
    # AND the dead worker, waking up, can change nothing
    with pytest.raises(LeaseLost):
        store.report_progress(TASK, "dead-worker", 10, None, 120)
    with pytest.raises(LeaseLost):
        store.mark_stored(
            TASK, "dead-worker", StoredVideo(rig.bucket, "k", None, "0" * 64, 1, None, None, None)
        )
    assert rig.task()["sha256"] == sha256(data)


def test_worker_overtaken_mid_copy_aborts_its_upload(rig: Rig) -> None:
    # GIVEN worker A stalled mid-copy on its source
    video = streamed_mp4(200_000)
    release = threading.Event()
    rig.receive(rig.server.add("/v.mp4", stalling(video, release, at=100_000)))
    outcomes: dict[str, Delivery] = {}
    service_a = services.transfer_service()
    thread = threading.Thread(target=lambda: outcomes.update(a=service_a.handle(TASK, 1).status))
    thread.start()
    deadline = time.monotonic() + 10
    while "content_length" not in rig.task() and time.monotonic() < deadline:
        time.sleep(0.01)  # A has opened the source and written its first progress
    # WHEN A's lease runs out and a redelivery takes the task over, and only then A wakes up
    rig.aws.client("dynamodb").update_item(
        TableName=rig.store.table_name,
        Key={"task_id": {"S": TASK}},
        UpdateExpression="SET lease_expires = :past",
        ExpressionAttributeValues={":past": {"N": "0"}},
    )
    failures = rig.deliver(message(receive_count=2))
    release.set()
    thread.join(timeout=30)
    # THEN B stored the video; A noticed it lost the lease and completed nothing
    assert failures == []
    assert outcomes == {"a": Delivery.LEASE_LOST}
    item = rig.assert_stored(TASK, generated_sha256(video), video.size)
    assert len(rig.versions()) == 1 and item["attempts"] == 2


def test_delivery_for_a_stored_task_does_nothing(rig: Rig) -> None:
    # GIVEN a task already stored
    data = fixture("faststart.mp4")
    rig.receive(rig.server.add("/v.mp4", data))
    assert rig.deliver() == []
    before = rig.task()
    # WHEN a duplicate of its message arrives
    failures = rig.deliver(message(receive_count=2))
    # THEN it is acknowledged, the source is not asked again, the record and object unchanged
    assert failures == []
    assert len(rig.server.requests_for("/v.mp4")) == 1
    assert rig.task() == before
    assert len(rig.versions()) == 1


def test_delivery_for_a_task_that_cannot_be_copied_does_nothing(rig: Rig) -> None:
    # GIVEN tasks that are unknown, failed (generation or transfer), or still waiting for a video
    url = rig.server.add("/v.mp4", fixture("faststart.mp4"))
    store = rig.store
    store.record_callback(Callback(code=501, msg="generation failed", task_id="t-genfail", video_url=None))
    rig.receive(url, "t-xferfail")
    store.acquire_lease("t-xferfail", "w", 60)
    store.mark_transfer_failed("t-xferfail", "w", "link expired")
    store.record_submitted("t-submitted", "audio-1")
    tasks = ["t-unknown", "t-genfail", "t-xferfail", "t-submitted"]
    before = {task: rig.task(task) for task in tasks}
    assert [None if r is None else r["status"] for r in before.values()] == [
        None,
        "GENERATION_FAILED",
        "TRANSFER_FAILED",
        "SUBMITTED",
    ]
    # WHEN a delivery for each arrives
    failures = rig.deliver(*(message(task, message_id=task) for task in tasks))
    # THEN all are acknowledged and nothing happens: no source request, no record change
    assert failures == []
    assert rig.server.requests == []
    for task in tasks:
        assert rig.task(task) == before[task]
        rig.assert_nothing_left(task)


def test_batch_reports_exactly_the_failed_records(rig: Rig) -> None:
    # GIVEN three records: a good task, a poisoned body, a task whose source answers 503
    data = fixture("faststart.mp4")
    rig.receive(rig.server.add("/good.mp4", data), "task-good")
    rig.receive(rig.server.add("/down.mp4", status=503), "task-down")
    good = message("task-good", message_id="m-good")
    poison = message(body="not json{", message_id="m-poison")
    down = message("task-down", message_id="m-down")
    # WHEN they arrive in one batch
    failures = rig.deliver(good, poison, down)
    # THEN exactly the two bad ones are reported, and the good one is stored
    assert sorted(failures) == ["m-down", "m-poison"]
    rig.assert_stored("task-good", sha256(data), len(data))
    assert rig.task("task-down")["status"] == "RECEIVED"
    rig.assert_nothing_left("task-down")


# --- SSRF at fetch time -------------------------------------------------------------------------


PRIVATE_URLS = [
    "http://127.0.0.1:{port}/v.mp4",
    "https://127.0.0.1:{port}/v.mp4",
    "https://localhost:{port}/v.mp4",
    "https://[::1]:{port}/v.mp4",
    "https://2130706433:{port}/v.mp4",
    "https://0x7f.0.0.1:{port}/v.mp4",
]


def test_private_source_is_refused_at_fetch_time(aws: AwsWorld, server: VideoServer) -> None:
    # GIVEN the deployed policy (VIDEO_SOURCE_ALLOW_PRIVATE unset) and tasks whose recorded URLs
    # point at this machine (recorded directly: ingest would have refused them)
    aws.monkeypatch.delenv("VIDEO_SOURCE_ALLOW_PRIVATE", raising=False)
    rig = Rig(aws, server)
    rig.configure(allow_private=False)
    assert not services.services().settings.source_policy.allow_private
    server.add("/v.mp4", fixture("faststart.mp4"))
    port = server.base_url.rsplit(":", 1)[1]
    tasks = [f"task-ssrf-{i}" for i in range(len(PRIVATE_URLS))]
    for task, template in zip(tasks, PRIVATE_URLS, strict=True):
        rig.receive(template.format(port=port), task)
    # WHEN their messages are delivered
    failures = rig.deliver(*(message(task, message_id=task) for task in tasks))
    # THEN every task fails for good, in words, and no request reached the server
    assert failures == []
    for task, template in zip(tasks, PRIVATE_URLS, strict=True):
        item = rig.task(task)
        assert item["status"] == "TRANSFER_FAILED" and item["error"], template
        rig.assert_nothing_left(task)
    assert server.requests == []


def test_host_resolving_to_loopback_is_refused_at_fetch_time(aws: AwsWorld, server: VideoServer) -> None:
    # GIVEN the deployed policy and a public-looking host whose DNS answer is 127.0.0.1
    aws.monkeypatch.delenv("VIDEO_SOURCE_ALLOW_PRIVATE", raising=False)
    rig = Rig(aws, server)
    rig.configure(allow_private=False)
    server.add("/v.mp4", fixture("faststart.mp4"))
    port = int(server.base_url.rsplit(":", 1)[1])
    rig.receive(f"https://cdn.example.com:{port}/v.mp4")

    def rebinding(host: str, port: int, *_: Any, **__: Any) -> Iterable[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    base = services.transfer_service()
    service = TransferService(
        base.store,
        base.copier,
        base.policy,
        lease_seconds=base.lease_seconds,
        max_attempts=base.max_attempts,
        source_factory=lambda policy: SourceSession(policy, resolver=rebinding),
    )
    # WHEN the transfer runs
    outcome = service.handle(TASK, 1)
    # THEN it fails for good, naming the address, and nothing reached the server
    assert outcome.status == "TRANSFER_FAILED"
    assert "127.0.0.1" in rig.task()["error"]
    assert server.requests == []
    rig.assert_nothing_left()


@dataclass
class ShortLivedContext(LambdaContext):
    """A Lambda invocation with about one second left."""

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


def test_an_attempt_near_the_lambda_timeout_gives_the_task_back(rig: Rig, monkeypatch) -> None:
    # GIVEN a slow source and an invocation about to time out (progress checked often)
    monkeypatch.setattr("videohook.copier.PROGRESS_EVERY_SECONDS", 0.05)
    data = fixture(FIXTURE)
    rig.receive(rig.server.add("/v.mp4", data, trickle=(16 * 1024, 0.05)))
    # WHEN the message is delivered
    answer = transfer.lambda_handler(load_event(MESSAGE), ShortLivedContext())
    # THEN the attempt stops cleanly before Lambda would kill it: retried, task RECEIVED, nothing left
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [message_id()]
    task = rig.task()
    assert task["status"] == "RECEIVED" and "ran out of time" in task["error"]
    rig.assert_nothing_left()
