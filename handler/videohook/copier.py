"""Stream one video from its source into S3, checking every byte on the way.

The video passes through in fixed-size parts and is never held whole: each chunk feeds
the MP4 structure check, the sha256 and the byte count before it joins the part being
filled. The upload is completed only when the stream has ended cleanly and every check has
passed; anything else aborts it, so S3 never holds a partial or unverified video.

A dropped connection is resumed from the last byte received with a `Range` request
(`If-Range` pins the same entity). A source that ignores the range answers 200 with the
whole file: the bytes already taken are read again, compared against the hash of what was
uploaded, and skipped.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from aws_lambda_powertools import Logger

from videohook.errors import SourceUnavailable, VideoRejected
from videohook.models import StoredVideo
from videohook.mp4 import Mp4Checker
from videohook.policy import describe_url
from videohook.source import SourceSession
from videohook.upload import MultipartUpload, PartBody, abort_orphaned_uploads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = Logger(child=True)

# Small enough that a drop loses little (urllib3 discards a read cut short), large enough to be cheap.
READ_CHUNK_BYTES = 256 * 1024
MAX_RESUMES = 5
PROGRESS_EVERY_SECONDS = 5.0
CONTENT_TYPE = "video/mp4"


# What requests/urllib3 raise when a streaming body stops short or stalls.
class _EndedEarly(Exception):
    """The source closed cleanly before the bytes it owed: handled like a drop."""


STREAM_ERRORS = (
    _EndedEarly,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


def video_key(task_id: str) -> str:
    return f"videos/{task_id}.mp4"


ProgressFn = Callable[[int, int | None], None]


class _Stream:
    """The source as one sequence of bytes, across however many HTTP responses it takes."""

    def __init__(self, source: SourceSession, url: str, max_bytes: int) -> None:
        self.source = source
        self.url = url
        self.max_bytes = max_bytes
        self.received = 0
        self.content_length: int | None = None
        self.resumes = 0
        self._validator: str | None = None
        self._response: requests.Response | None = None

    def open(self) -> None:
        response = self.source.open(self.url)
        if response.status_code != 200:
            response.close()
            raise SourceUnavailable(
                f"{describe_url(self.url)} answered {response.status_code} to a plain GET"
            )
        self.content_length = _int_header(response, "Content-Length")
        if self.content_length is not None and self.content_length > self.max_bytes:
            response.close()
            raise VideoRejected(
                f"the source announces {self.content_length} bytes, over the limit of {self.max_bytes}",
                code="video_too_large",
            )
        etag = response.headers.get("ETag")
        self._validator = (
            etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
        )
        self._response = response

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def _reopen(self, prefix_digest: bytes) -> bytes:
        """Continue after a drop; returns any bytes past `received` already read (restart case)."""
        self.close()
        self.resumes += 1
        if self.resumes > MAX_RESUMES:
            raise SourceUnavailable(
                f"the source dropped the connection {MAX_RESUMES} times; giving up this attempt"
            )
        headers = {"Range": f"bytes={self.received}-"}
        if self._validator:
            headers["If-Range"] = self._validator
        response = self.source.open(self.url, headers=headers)
        if response.status_code == 206:
            start, total = _content_range(response)
            if start != self.received or (
                self.content_length is not None and total not in (None, self.content_length)
            ):
                response.close()
                raise SourceUnavailable("the source resumed at the wrong offset or with another length")
            logger.info("source resumed with Range", extra={"offset": self.received, "resumes": self.resumes})
            self._response = response
            return b""
        if response.status_code == 416:
            response.close()
            raise SourceUnavailable(
                f"the source ended at byte {self.received} but announced {self.content_length} bytes"
            )
        if response.status_code != 200:
            response.close()
            raise SourceUnavailable(f"the source answered {response.status_code} to a resume")
        # The source ignored the range: read the prefix again and make sure it is the same video.
        logger.info("source ignored Range; re-reading the prefix", extra={"offset": self.received})
        self._response = response
        return self._skip_prefix(prefix_digest)

    def _skip_prefix(self, prefix_digest: bytes) -> bytes:
        assert self._response is not None
        digest = hashlib.sha256()
        remaining = self.received
        leftover = b""
        for chunk in self._response.iter_content(READ_CHUNK_BYTES):
            if remaining >= len(chunk):
                digest.update(chunk)
                remaining -= len(chunk)
            else:
                digest.update(chunk[:remaining])
                leftover = chunk[remaining:]
                remaining = 0
            if remaining == 0:
                break
        if remaining:
            raise _EndedEarly(f"the source ended {remaining} bytes short while its prefix was re-read")
        if digest.digest() != prefix_digest:
            raise SourceUnavailable("the source's bytes changed between attempts; starting over next attempt")
        return leftover

    def _resume(self, prefix_digest: bytes) -> bytes:
        """Reopen after a drop; a drop while reopening is one more resume, up to MAX_RESUMES."""
        while True:
            try:
                return self._reopen(prefix_digest)
            except STREAM_ERRORS as exc:
                logger.warning(
                    "source dropped again while resuming",
                    extra={"offset": self.received, "error": type(exc).__name__},
                )

    def chunks(self, prefix_digest: Callable[[], bytes]) -> Iterator[bytes]:
        """Yield the body's chunks, resuming after drops, until the source's end."""
        pending = b""
        while True:
            assert self._response is not None
            try:
                if pending:
                    yield pending
                    pending = b""
                yield from self._response.iter_content(READ_CHUNK_BYTES)
            except STREAM_ERRORS as exc:
                logger.warning(
                    "source connection dropped", extra={"offset": self.received, "error": type(exc).__name__}
                )
                pending = self._resume(prefix_digest())
                continue
            if self.content_length is not None and self.received < self.content_length:
                pending = self._resume(prefix_digest())
                continue
            return


class VideoCopier:
    """Copies one task's video; memory is bounded by part size x concurrency.

    The part being filled counts against the concurrency: once a part is handed over, the
    source is read on only when fewer than `concurrency` parts are in flight. So a video of
    any length holds at most `concurrency` parts, no more than a video of just that many parts.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        part_bytes: int,
        concurrency: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.part_bytes = part_bytes
        self.concurrency = concurrency
        self.max_bytes = max_bytes
        self.clock = clock

    def copy(self, task_id: str, url: str, source: SourceSession, progress: ProgressFn) -> StoredVideo:
        """Stream `url` to `videos/{task_id}.mp4`; raises (after aborting) on any failure."""
        # An upload a dead worker left open for this key goes first (the caller holds the lease).
        abort_orphaned_uploads(self.s3, self.bucket, video_key(task_id))
        stream = _Stream(source, url, self.max_bytes)
        stream.open()
        checker = Mp4Checker()
        digest = hashlib.sha256()
        metadata = {"task-id": task_id, "source-host": urlsplit(url).hostname or ""}
        upload = MultipartUpload(
            self.s3,
            self.bucket,
            video_key(task_id),
            concurrency=self.concurrency,
            content_type=CONTENT_TYPE,
            metadata=metadata,
        )
        try:
            with upload:
                # The part being filled, kept as the chunks themselves: never joined (PartBody).
                pieces: list[bytes | memoryview] = []
                pending = 0
                last_report = self.clock()
                progress(0, stream.content_length)
                for chunk in stream.chunks(lambda: digest.copy().digest()):
                    if not chunk:
                        continue
                    self._take(stream, chunk)
                    checker.feed(chunk)
                    digest.update(chunk)
                    pieces.append(chunk)
                    pending += len(chunk)
                    while pending >= self.part_bytes:
                        upload.add_part(PartBody(_take_first(pieces, self.part_bytes)))
                        pending -= self.part_bytes
                        upload.wait_for_room()
                    if self.clock() - last_report >= PROGRESS_EVERY_SECONDS:
                        progress(_in_progress(stream.received, stream.content_length), stream.content_length)
                        last_report = self.clock()
                info = checker.finish()
                if stream.content_length is not None and stream.received != stream.content_length:
                    raise VideoRejected(
                        f"received {stream.received} bytes but the source announced {stream.content_length}",
                        code="length_mismatch",
                    )
                if pending:
                    upload.add_part(PartBody(_take_first(pieces, pending)))
                progress(_in_progress(stream.received, stream.content_length), stream.content_length)
                completed = upload.complete()
        finally:
            stream.close()
        return StoredVideo(
            bucket=completed.bucket,
            key=completed.key,
            version_id=completed.version_id,
            sha256=digest.hexdigest(),
            size=stream.received,
            duration_seconds=info.duration_seconds,
            width=info.width,
            height=info.height,
            rotation=info.rotation,
            warnings=info.warnings,
        )

    def _take(self, stream: _Stream, chunk: bytes) -> None:
        """Count a chunk against the announced length and the size limit before using it."""
        stream.received += len(chunk)
        if stream.content_length is not None and stream.received > stream.content_length:
            raise VideoRejected(
                f"the source sent more than the {stream.content_length} bytes it announced",
                code="length_mismatch",
            )
        if stream.received > self.max_bytes:
            raise VideoRejected(
                f"the video is over the limit of {self.max_bytes} bytes", code="video_too_large"
            )


def _in_progress(received: int, content_length: int | None) -> int:
    """Bytes to show while the copy runs: never the whole length before S3 has the object.

    Every byte may have been read while the last parts and the completion are still being
    sent; 100% (bytes_transferred == content_length) is written with the STORED record only
    (docs/task-record.md).
    """
    if content_length is None:
        return received
    return min(received, max(content_length - 1, 0))


def _take_first(pieces: list[bytes | memoryview], size: int) -> list[bytes | memoryview]:
    """Remove the first `size` bytes from `pieces`, without copying any (a chunk is split by views)."""
    taken: list[bytes | memoryview] = []
    need = size
    while need:
        piece = pieces[0]
        if len(piece) <= need:
            taken.append(pieces.pop(0))
            need -= len(piece)
        else:
            view = memoryview(piece)
            taken.append(view[:need])
            pieces[0] = view[need:]
            need = 0
    return taken


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` -> (START, TOTAL); None where absent or unreadable."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, spec = value.split(" ", 1)
        span, total = spec.split("/", 1)
        start = int(span.split("-", 1)[0])
    except ValueError:
        return None, None
    if unit.strip().lower() != "bytes":
        return None, None
    return start, int(total) if total.strip().isdigit() else None
