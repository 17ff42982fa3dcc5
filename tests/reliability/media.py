"""Valid MP4 files of any size for the reliability scenarios, made in memory.

Each is an ISO base media file the transfer's checker accepts: `ftyp`, a `moov` with a
movie header and one video track, and an `mdat` of random bytes (so every video has its own
sha256). `moov` comes first or last. The bundled fixtures (tests/fixtures) are real
encoder output but at most 278 KB; these reach any size.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass

from videohook.mp4 import Mp4Checker


def _box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full(kind: bytes, flags: int, body: bytes) -> bytes:
    return _box(kind, bytes([0]) + flags.to_bytes(3, "big") + body)


def _moov(seconds: int, width: int, height: int) -> bytes:
    mvhd = _full(b"mvhd", 0, struct.pack(">IIII", 0, 0, 1000, seconds * 1000) + bytes(80))
    tkhd = _full(
        b"tkhd",
        3,
        struct.pack(">IIIII", 0, 0, 1, 0, seconds * 1000)
        + bytes(52)
        + struct.pack(">II", width << 16, height << 16),
    )
    mdhd = _full(b"mdhd", 0, struct.pack(">IIIIHH", 0, 0, 12800, seconds * 12800, 0, 0))
    hdlr = _full(b"hdlr", 0, struct.pack(">I4s", 0, b"vide") + bytes(12) + b"VideoHandler\0")
    stbl = _box(b"stbl", _box(b"stsd", bytes(8)) + _box(b"stts", bytes(8)))
    minf = _box(b"minf", _box(b"dinf", _box(b"dref", bytes(8))) + stbl)
    trak = _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr + minf))
    return _box(b"moov", mvhd + trak)


@dataclass(frozen=True)
class Video:
    """A source video: its bytes and what the stored copy must match."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def synthetic_mp4(
    size: int, seed: int, *, moov_last: bool = False, width: int = 640, height: int = 360
) -> bytes:
    """An MP4 of exactly `size` bytes (at least about 600) whose media data is random."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")
    moov = _moov(max(1, size // 250_000), width, height)
    media = size - len(ftyp) - len(moov) - 8
    if media < 1:
        raise ValueError(f"an MP4 needs more than {size} bytes")
    mdat = _box(b"mdat", random.Random(seed).randbytes(media))
    data = ftyp + mdat + moov if moov_last else ftyp + moov + mdat
    assert len(data) == size
    return data


def make_video(name: str, size: int, seed: int, *, moov_last: bool | None = None) -> Video:
    """A named synthetic video; `moov_last` defaults to every other seed."""
    last = bool(seed % 2) if moov_last is None else moov_last
    return Video(name, synthetic_mp4(size, seed, moov_last=last))


def is_valid_mp4(data: bytes) -> bool:
    checker = Mp4Checker()
    try:
        checker.feed(data)
        checker.finish()
    except Exception:
        return False
    return True
