"""Multipart upload of a stream of unknown length, with a hard bound on memory.

boto3's `upload_fileobj` reads ahead about 15 parts from a non-seekable stream, so its
memory grows with the part size times its queue, not with what is in flight. Here the
caller hands over one part at a time and `add_part` blocks while `concurrency` parts are
being sent: at most `concurrency` parts in flight plus the one being filled.

Every part carries a CRC32 additional checksum that S3 verifies as it arrives; the
completed object records them. Nothing is left behind on failure: `abort` removes the
upload and its parts (the bucket's lifecycle rule is only the last resort).
"""

from __future__ import annotations

import base64
import contextlib
import io
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, cast

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from videohook.errors import AwsFault

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = Logger(child=True)
CHECKSUM_ALGORITHM: Final = "CRC32"
ABORT_TRIES = 3


def crc32_checksum(data: bytes | PartBody) -> str:
    """S3's CRC32 additional checksum: the big-endian CRC, base64-encoded."""
    crc = data.crc32() if isinstance(data, PartBody) else zlib.crc32(data)
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


class PartBody(io.BufferedIOBase):
    """One part's bytes as the chunks they arrived in, read like a seekable file.

    Why: joining the chunks into one part-sized bytes object costs a copy of every byte and
    one part-sized allocation per part; freed in another order than they were made, those
    allocations fragment the heap, and the process's RSS creeps up with the video's length.
    botocore sends, signs and (for a retry) rewinds a seekable body by reading it in small
    blocks, so the part never has to exist in one piece. The chunks must not change while
    the part is being sent (bytes, or views of bytes, never change).
    """

    def __init__(self, pieces: Sequence[bytes | memoryview]) -> None:
        super().__init__()
        self._pieces = [memoryview(piece).cast("B") for piece in pieces if len(piece)]
        self._starts: list[int] = []
        size = 0
        for piece in self._pieces:
            self._starts.append(size)
            size += len(piece)
        self._size = size
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def crc32(self) -> int:
        crc = 0
        for piece in self._pieces:
            crc = zlib.crc32(piece, crc)
        return crc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if self._pos >= end:
            return b""
        index = bisect_right(self._starts, self._pos) - 1
        taken: list[memoryview] = []
        pos = self._pos
        while pos < end:
            piece, offset = self._pieces[index], pos - self._starts[index]
            take = min(len(piece) - offset, end - pos)
            taken.append(piece[offset : offset + take])
            pos += take
            index += 1
        self._pos = end
        return taken[0].tobytes() if len(taken) == 1 else b"".join(taken)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def getvalue(self) -> bytes:
        """The whole part in one bytes object (a copy), as `io.BytesIO.getvalue` gives it."""
        return b"".join(self._pieces)


@dataclass(frozen=True)
class CompletedUpload:
    bucket: str
    key: str
    version_id: str | None
    etag: str
    parts: int


class MultipartUpload:
    """One object being written part by part; use as a context manager so failures abort."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        *,
        concurrency: int,
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.concurrency = concurrency
        self.content_type = content_type
        self.metadata = metadata
        self.upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[Future[CompletedPartTypeDef]] = set()
        self._done: list[CompletedPartTypeDef] = []
        self._next_part = 1

    def __enter__(self) -> MultipartUpload:
        with _faults("create_multipart_upload"):
            answer = self.s3.create_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                ContentType=self.content_type,
                Metadata=self.metadata,
                ServerSideEncryption="AES256",
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            )
        self.upload_id = answer["UploadId"]
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="upload")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def _open_id(self) -> str:
        assert self.upload_id is not None, "use MultipartUpload as a context manager"
        return self.upload_id

    def _send(self, number: int, data: bytes | PartBody) -> CompletedPartTypeDef:
        checksum = crc32_checksum(data)
        with _faults("upload_part"):
            answer = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._open_id,
                PartNumber=number,
                # PartBody is a seekable binary file as botocore reads one (not an IO[bytes] subclass).
                Body=cast("bytes | IO[bytes]", data),
                ChecksumCRC32=checksum,
            )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": checksum}

    def _collect(self, block_until_below: int) -> None:
        """Wait until fewer than `block_until_below` parts are in flight; surface failures."""
        while len(self._in_flight) >= block_until_below and self._in_flight:
            finished, self._in_flight = wait(self._in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                self._done.append(future.result())

    def wait_for_room(self) -> None:
        """Block until fewer than `concurrency` parts are in flight (surfacing any failure)."""
        assert self._pool is not None, "use MultipartUpload as a context manager"
        self._collect(self.concurrency)

    def add_part(self, data: bytes | PartBody) -> None:
        """Queue one part; blocks while `concurrency` parts are already being sent."""
        assert self._pool is not None, "use MultipartUpload as a context manager"
        self._collect(self.concurrency)
        self._in_flight.add(self._pool.submit(self._send, self._next_part, data))
        self._next_part += 1

    def complete(self) -> CompletedUpload:
        self._collect(1)
        parts = sorted(self._done, key=lambda part: part["PartNumber"])
        with _faults("complete_multipart_upload"):
            answer = self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._open_id,
                MultipartUpload={"Parts": parts},
            )
        self.upload_id = None
        return CompletedUpload(
            bucket=self.bucket,
            key=self.key,
            version_id=answer.get("VersionId"),
            etag=answer.get("ETag", ""),
            parts=len(parts),
        )

    def abort(self) -> None:
        """Stop sending and remove the upload; retried, because an orphan costs money."""
        if self._pool is not None:
            for future in self._in_flight:
                future.cancel()
            self._pool.shutdown(wait=True)
        upload_id = self.upload_id
        if upload_id is None:
            return
        for attempt in range(1, ABORT_TRIES + 1):
            try:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
                self.upload_id = None
                return
            except (ClientError, BotoCoreError) as exc:
                if _error_code(exc) == "NoSuchUpload":
                    self.upload_id = None
                    return
                logger.warning(
                    "abort of multipart upload failed", extra={"attempt": attempt, "error": _error_code(exc)}
                )
        logger.error("multipart upload left open; the bucket lifecycle rule will remove it within a day")


def abort_orphaned_uploads(s3: S3Client, bucket: str, key: str) -> int:
    """Abort every multipart upload of `key` still open; returns how many were aborted.

    A worker that dies mid-copy (a Lambda stopped at its timeout, a local worker killed)
    never runs its abort: its upload stays open, its parts billed, until the bucket's
    lifecycle rule removes it a day later. Only the holder of the task's lease writes the
    task's key, so an upload of the key found open by the holder belongs to a worker that
    lost its lease: aborting it leaves nothing behind, and also stops that worker, should it
    still be alive, from completing a second version. Best effort: a failure to list or
    abort is logged and the copy goes on (the lifecycle rule stays the last resort).
    """
    aborted = 0
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": key}
    try:
        while True:
            answer = s3.list_multipart_uploads(**kwargs)
            for upload in answer.get("Uploads", []):
                if upload.get("Key") != key:
                    continue  # another key that merely starts with this one
                try:
                    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                    aborted += 1
                except ClientError as exc:
                    if _error_code(exc) != "NoSuchUpload":  # gone meanwhile: fine
                        raise
            if not answer.get("IsTruncated"):
                break
            kwargs.update(KeyMarker=answer["NextKeyMarker"], UploadIdMarker=answer["NextUploadIdMarker"])
    except (ClientError, BotoCoreError) as exc:
        logger.warning(
            "open multipart uploads of the video could not be cleaned up; the lifecycle rule will",
            extra={"error": _error_code(exc), "aborted": aborted},
        )
    if aborted:
        logger.warning(
            "aborted multipart uploads left open by an earlier attempt", extra={"aborted": aborted}
        )
    return aborted


@contextlib.contextmanager
def _faults(operation: str) -> Iterator[None]:
    """S3 and connection errors as AwsFault."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise AwsFault(f"S3 {operation} failed ({type(exc).__name__}: {_error_code(exc)})") from exc


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "unknown"))
    return type(exc).__name__
