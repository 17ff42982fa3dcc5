"""MultipartUpload on its own, against a scriptable in-memory S3 client.

What the transfer tests cannot see from outside: how many parts are in flight at once
(the memory bound), that add_part blocks instead of queueing, the exact calls and
checksums sent, and how abort behaves when S3 itself misbehaves.
"""

from __future__ import annotations

import base64
import threading
import zlib
from typing import Any

import pytest

from testkit.aws import client_error
from videohook.errors import AwsFault
from videohook.upload import ABORT_TRIES, MultipartUpload, crc32_checksum


class FakeS3:
    """Records every call; parts can be held at a gate, made to fail, and aborts to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_parts: set[int] = set()
        self.abort_errors: list[str] = []  # error codes the next aborts raise, in order
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def _record(self, name: str, kwargs: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append((name, kwargs))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._record("create_multipart_upload", kwargs)
        return {"UploadId": "upload-1"}

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self._record("upload_part", kwargs)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            assert self.gate.wait(timeout=10)
            if kwargs["PartNumber"] in self.fail_parts:
                raise client_error("UploadPart", "InternalError")
            return {"ETag": f'"etag-{kwargs["PartNumber"]}"'}
        finally:
            with self._lock:
                self.in_flight -= 1

    def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._record("complete_multipart_upload", kwargs)
        return {"VersionId": "version-1", "ETag": '"final-2"'}

    def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        self._record("abort_multipart_upload", kwargs)
        if self.abort_errors:
            raise client_error("AbortMultipartUpload", self.abort_errors.pop(0))
        return {}


def upload(s3: FakeS3, concurrency: int = 2) -> MultipartUpload:
    return MultipartUpload(
        s3,
        "bucket",
        "videos/t.mp4",
        concurrency=concurrency,
        content_type="video/mp4",
        metadata={"task-id": "t", "source-host": "cdn.example.com"},
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"", "AAAAAA=="), (b"123456789", "y/Q5Jg=="), (b"a" * 1000, None)],
)
def test_crc32_checksum_is_the_big_endian_crc_in_base64(data: bytes, expected: str | None) -> None:
    # GIVEN bytes with a known CRC32 (0xCBF43926 is the standard check value of "123456789")
    value = crc32_checksum(data)
    # THEN the checksum is S3's encoding of it
    assert value == (expected or base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode())


def test_parts_carry_their_crc32_and_complete_lists_them_in_order() -> None:
    # GIVEN an upload of three parts
    s3 = FakeS3()
    parts = [b"a" * 10, b"b" * 20, b"c" * 5]
    # WHEN they are added and the upload completed
    with upload(s3) as up:
        for part in parts:
            up.add_part(part)
        done = up.complete()
    # THEN the upload was created encrypted, typed, described and with the CRC32 algorithm
    name, create = s3.calls[0]
    assert name == "create_multipart_upload"
    assert create["ServerSideEncryption"] == "AES256" and create["ChecksumAlgorithm"] == "CRC32"
    assert create["ContentType"] == "video/mp4" and create["Metadata"]["task-id"] == "t"
    # AND every part was numbered and sent with its own CRC32
    sent = sorted(
        (kw["PartNumber"], kw["Body"], kw["ChecksumCRC32"]) for n, kw in s3.calls if n == "upload_part"
    )
    assert sent == [(i + 1, part, crc32_checksum(part)) for i, part in enumerate(parts)]
    # AND the completion lists the parts in order with their ETags and checksums; nothing aborted
    [complete] = [kw for n, kw in s3.calls if n == "complete_multipart_upload"]
    assert complete["MultipartUpload"]["Parts"] == [
        {"PartNumber": i + 1, "ETag": f'"etag-{i + 1}"', "ChecksumCRC32": crc32_checksum(part)}
        for i, part in enumerate(parts)
    ]
    assert (done.version_id, done.parts, done.key) == ("version-1", 3, "videos/t.mp4")
    assert "abort_multipart_upload" not in s3.names()


def test_add_part_blocks_while_concurrency_parts_are_in_flight() -> None:
    # GIVEN an upload with concurrency 2 whose part uploads are held at a gate
    s3 = FakeS3()
    s3.gate.clear()
    with upload(s3, concurrency=2) as up:
        up.add_part(b"1")
        up.add_part(b"2")
        # WHEN a third part is added
        third = threading.Thread(target=up.add_part, args=(b"3",))
        third.start()
        third.join(timeout=0.3)
        # THEN it waits: no third part is queued behind the two in flight
        assert third.is_alive()
        assert s3.names().count("upload_part") == 2
        # WHEN the uploads finish THEN it goes through, and never more than 2 were in flight
        s3.gate.set()
        third.join(timeout=5)
        assert not third.is_alive()
        up.complete()
    assert s3.max_in_flight == 2


def test_failed_part_surfaces_as_aws_fault_and_aborts_the_upload() -> None:
    # GIVEN S3 failing part 2
    s3 = FakeS3()
    s3.fail_parts = {2}
    # WHEN the parts are added and the upload completed
    with pytest.raises(AwsFault) as caught, upload(s3) as up:
        for part in (b"1", b"2", b"3"):
            up.add_part(part)
        up.complete()
    # THEN the error names the operation, the upload is aborted once and never completed
    assert "upload_part" in caught.value.message and caught.value.retryable
    assert s3.names().count("abort_multipart_upload") == 1
    assert "complete_multipart_upload" not in s3.names()
    assert up.upload_id is None


def test_any_error_inside_the_block_aborts_the_upload() -> None:
    # GIVEN an upload with one part sent
    s3 = FakeS3()
    # WHEN the caller fails (e.g. the MP4 check refuses the stream)
    with pytest.raises(ValueError, match="not an MP4"), upload(s3) as up:
        up.add_part(b"1")
        raise ValueError("not an MP4")
    # THEN the upload is aborted with its id
    aborts = [kw for n, kw in s3.calls if n == "abort_multipart_upload"]
    assert aborts == [{"Bucket": "bucket", "Key": "videos/t.mp4", "UploadId": "upload-1"}]


def test_abort_is_retried_and_no_such_upload_counts_as_done() -> None:
    # GIVEN S3 failing the first abort, then saying the upload is already gone
    s3 = FakeS3()
    s3.abort_errors = ["SlowDown", "NoSuchUpload"]
    # WHEN the upload is abandoned THEN abort was tried twice and the upload is forgotten
    with pytest.raises(RuntimeError), upload(s3) as up:
        raise RuntimeError("stop")
    assert s3.names().count("abort_multipart_upload") == 2
    assert up.upload_id is None


def test_abort_that_keeps_failing_gives_up_without_hiding_the_original_error() -> None:
    # GIVEN S3 failing every abort
    s3 = FakeS3()
    s3.abort_errors = ["InternalError"] * (ABORT_TRIES + 1)
    # WHEN the upload is abandoned THEN abort is tried ABORT_TRIES times and the caller sees its own error
    with pytest.raises(RuntimeError, match="original"), upload(s3):
        raise RuntimeError("original")
    assert s3.names().count("abort_multipart_upload") == ABORT_TRIES
