"""MP4 files made in memory or on the fly, for every suite and the bench.

ISO base media boxes (`box`, `full_box` and the few the MP4 check reads), a movie header
(`movie_head`: `ftyp` and a `moov` with one video track), and whole files the transfer's
check accepts, of any size: `synthetic_mp4` (bytes, random media data, `moov` first or last)
and `streamed_mp4` (a `Generated` body made per request and never held whole, for sources
of many MiB). The bundled fixtures (tests/fixtures) are real encoder output but small;
these reach any size. The sample tables are empty: the streaming check does not read them.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Callable, Iterator

from testkit.video_source import Generated, Video, repeat_block

# 64 KiB + 7 of pseudo-random bytes: parts and read chunks never line up with its period.
BLOCK = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2049))[: 64 * 1024 + 7]


# --- boxes ------------------------------------------------------------------------------------


def box(typ: bytes, payload: bytes = b"", *, size: int | None = None, large: bool = False) -> bytes:
    """One box; `size` overrides the size field, `large` writes a 64-bit size (size field 1)."""
    if large:
        return struct.pack(">I4sQ", 1, typ, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload) if size is None else size, typ) + payload


def full_box(typ: bytes, version: int, flags: int, body: bytes) -> bytes:
    return box(typ, bytes([version]) + flags.to_bytes(3, "big") + body)


def ftyp() -> bytes:
    return box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")


def mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    if version == 1:
        return full_box(b"mvhd", 1, 0, struct.pack(">QQIQ", 0, 0, timescale, duration) + bytes(80))
    return full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, duration) + bytes(80))


def tkhd(track_id: int, width: int, height: int, duration: int = 0) -> bytes:
    """A track header; `duration` in the movie's timescale."""
    body = struct.pack(">IIIII", 0, 0, track_id, 0, duration) + bytes(16) + bytes(36)
    return full_box(b"tkhd", 0, 3, body + struct.pack(">II", width << 16, height << 16))


def trak(
    track_id: int,
    handler: bytes,
    timescale: int,
    *,
    width: int = 0,
    height: int = 0,
    seconds: int = 0,
    movie_timescale: int = 1000,
) -> bytes:
    """A track of `handler` type (b"vide", b"soun"); `seconds` sets its two durations."""
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, seconds * timescale, 0, 0))
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, handler) + bytes(12) + b"Handler\0")
    stbl = box(b"stbl", box(b"stsd", bytes(8)) + box(b"stts", bytes(8)))
    minf = box(b"minf", box(b"dinf", box(b"dref", bytes(8))) + stbl)
    header = tkhd(track_id, width, height, seconds * movie_timescale)
    return box(b"trak", header + box(b"mdia", mdhd + hdlr + minf))


def moov(duration: int = 2000, *, extra: bytes = b"") -> bytes:
    """A movie of 2 s (timescale 1000) with a 640x360 video track and an audio track."""
    tracks = trak(1, b"soun", 44100) + trak(2, b"vide", 12800, width=640, height=360)
    return box(b"moov", mvhd(1000, duration) + tracks + extra)


def mdat(n: int = 100) -> bytes:
    return box(b"mdat", bytes(range(256)) * (n // 256) + bytes(n % 256))


def movie_head(width: int = 640, height: int = 360, seconds: int = 2) -> bytes:
    """`ftyp` and a `moov` with one video track of width x height lasting `seconds`."""
    video = trak(1, b"vide", 12800, width=width, height=height, seconds=seconds)
    return ftyp() + box(b"moov", mvhd(1000, seconds * 1000) + video)


def mdat_header(media_bytes: int) -> bytes:
    """The header of an `mdat` holding `media_bytes` (a 64-bit size when 32 bits are too few)."""
    if 8 + media_bytes <= 0xFFFFFFFF:
        return struct.pack(">I4s", 8 + media_bytes, b"mdat")
    return struct.pack(">I4sQ", 1, b"mdat", 16 + media_bytes)


# --- whole files ------------------------------------------------------------------------------


def synthetic_mp4(
    size: int, seed: int, *, moov_last: bool = False, width: int = 640, height: int = 360
) -> bytes:
    """An MP4 of exactly `size` bytes (at least about 600) whose media data is random."""
    head = movie_head(width, height, max(1, size // 250_000))
    file_type, movie = head[: len(ftyp())], head[len(ftyp()) :]
    media = size - len(head) - 8
    if media < 1:
        raise ValueError(f"an MP4 needs more than {size} bytes")
    data_box = mdat_header(media) + random.Random(seed).randbytes(media)
    data = file_type + data_box + movie if moov_last else file_type + movie + data_box
    assert len(data) == size
    return data


def streamed_mp4(
    media_bytes: int, block: Callable[[], bytes] = lambda: BLOCK, *, seconds: int = 2
) -> Generated:
    """A faststart MP4 with `media_bytes` of media data, generated per request (never held whole).

    The `mdat` repeats `block`, which is asked once per request, so a test can change the
    video's bytes between two requests.
    """
    prefix = movie_head(seconds=seconds) + mdat_header(media_bytes)
    size = len(prefix) + media_bytes

    def chunks(start: int) -> Iterator[bytes]:
        filler = block()
        if start < len(prefix):
            yield prefix[start:]
            start = len(prefix)
        yield from repeat_block(filler, size, start=start)

    return Generated(size, chunks)


def materialise(video: Generated) -> bytes:
    return b"".join(video.chunks(0))


def generated_sha256(video: Generated) -> str:
    digest = hashlib.sha256()
    for chunk in video.chunks(0):
        digest.update(chunk)
    return digest.hexdigest()


def make_video(name: str, size: int, seed: int, *, moov_last: bool | None = None) -> Video:
    """A named synthetic video; `moov_last` defaults to every other seed."""
    last = bool(seed % 2) if moov_last is None else moov_last
    return Video(name, synthetic_mp4(size, seed, moov_last=last))
