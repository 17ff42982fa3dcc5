"""Incremental MP4 (ISO base media file) structure check, fed chunk by chunk.

The transfer streams a provider's video straight into an S3 multipart upload and must decide,
before it completes the upload, whether the bytes form an MP4 (SPEC "Stored video (S3)"): an
`ftyp` box first, box sizes consistent to the exact end of the stream, a `moov` box and media
data present, `moov` before or after `mdat`, fragmented MP4 allowed. Videos can be far larger
than a Lambda's memory, so the check never holds the file: it walks the box tree as bytes go
by, skips payloads it does not need (`mdat` above all) by counting, and keeps only a box header
and the first few hundred bytes of the handful of small boxes it reads (`mvhd`, `tkhd`, `mdhd`,
`hdlr`, `mehd`, `trex`, `tfhd`). `trun` sample tables are summed as they stream by. It descends
only where the format puts a container, so its stack depth is bounded too; whatever the size of
the file, the checker holds well under a kilobyte of buffers.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import NoReturn

from videohook.errors import InvalidMp4

__all__ = ["Mp4Checker", "Mp4Info", "check_file"]

# How much of a parsed leaf box is kept: every field read lies within its first 112 bytes, so
# the rest (e.g. a long `hdlr` name) is counted and dropped.
LEAF_PREFIX_CAP = 256
# A real video has a few tracks; the cap keeps the per-track tables bounded on hostile input.
MAX_TRACKS = 256
CHUNK_SIZE = 64 * 1024

# Containers the check descends into, by parent type (None = top level). Descending only where
# the format puts a container bounds the nesting depth whatever the input.
_CONTAINERS: dict[bytes | None, frozenset[bytes]] = {
    None: frozenset({b"moov", b"moof", b"mfra"}),
    b"moov": frozenset({b"trak", b"mvex"}),
    b"trak": frozenset({b"mdia", b"edts"}),
    b"mdia": frozenset({b"minf"}),
    b"minf": frozenset({b"stbl", b"dinf"}),
    b"moof": frozenset({b"traf"}),
}
# Small boxes whose fields are read, by parent type.
_LEAVES: dict[bytes | None, frozenset[bytes]] = {
    None: frozenset({b"ftyp"}),
    b"moov": frozenset({b"mvhd"}),
    b"trak": frozenset({b"tkhd"}),
    b"mdia": frozenset({b"mdhd", b"hdlr"}),
    b"mvex": frozenset({b"mehd", b"trex"}),
    b"traf": frozenset({b"tfhd"}),
}
_EMPTY: frozenset[bytes] = frozenset()

# Parser states.
_HEADER, _SKIP, _LEAF, _TRUN = range(4)
# Phases inside a `trun` box.
_TRUN_HEADER, _TRUN_SAMPLES, _TRUN_DONE = range(3)

_UNKNOWN_32 = 0xFFFFFFFF
_UNKNOWN_64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Mp4Info:
    """What the check read from a valid MP4; a field is None when the file does not say."""

    duration_seconds: float | None
    width: int | None
    height: int | None


@dataclass
class _Track:
    """What one `trak` says about its track (filled in as its boxes stream by)."""

    track_id: int | None = None
    width: int = 0
    height: int = 0
    timescale: int = 0
    duration: int = 0
    handler: bytes = b""


@dataclass
class _Open:
    """A box being read: container on the stack, or the current leaf (for messages and ends)."""

    type: bytes
    start: int
    body: int  # offset of the first byte after the header
    size: int | None  # None: runs to the end of the file (size field 0)
    end: int | None


def _u32(buf: bytes | bytearray, off: int) -> int:
    return int.from_bytes(buf[off : off + 4], "big")


def _u64(buf: bytes | bytearray, off: int) -> int:
    return int.from_bytes(buf[off : off + 8], "big")


def _show(raw: bytes) -> str:
    """Bytes as readable text for a message: printable ASCII kept, the rest as dots."""
    return "'" + "".join(chr(c) if 0x20 <= c <= 0x7E else "." for c in raw) + "'"


class Mp4Checker:
    """Checks that a byte stream is a complete MP4 while it is copied, in bounded memory.

    Why incremental: the video is streamed from the provider into S3 and can be gigabytes, so
    it can neither be held nor read twice. Feed every chunk in order with `feed` (it raises
    `InvalidMp4` as soon as the structure is provably broken, so a garbage stream is refused
    early), then call `finish` at the end of the stream: it raises `InvalidMp4` when something
    is missing or cut short, else returns what it read (`Mp4Info`). Once it has raised, the
    checker keeps raising the same error. Buffers stay under `LEAF_PREFIX_CAP` plus a few
    dozen bytes whatever the input (`buffered_bytes` tells).
    """

    def __init__(self) -> None:
        self._bytes_seen = 0
        self._pos = 0  # stream offset of the next byte to parse
        self._error: str | None = None
        self._finished = False
        self._state = _HEADER
        self._hbuf = bytearray()
        self._hneed = 8
        self._stack: list[_Open] = []
        self._cur: _Open | None = None  # current non-container box
        self._remaining: int | None = None  # bytes left in the current box (None: to EOF)
        self._lbuf = bytearray()
        self._boxes = 0
        # Findings.
        self._has_moov = False
        self._has_media = False
        self._mvhd_timescale: int | None = None
        self._mvhd_duration = 0
        self._mehd_duration = 0
        self._tracks: list[_Track] = []
        self._trak: _Track | None = None
        self._trex_default: dict[int, int] = {}
        # Per track ID: [ticks summed from fragments, samples waiting for the trex default].
        self._frag: dict[int, list[int]] = {}
        self._traf_track: int | None = None
        self._traf_default: int | None = None
        # trun streaming state.
        self._trun_phase = _TRUN_HEADER
        self._tbuf = bytearray()
        self._trun_need = 8
        self._trun_rec = 0
        self._trun_left = 0
        self._trun_ticks = 0
        self._trun_fmt: struct.Struct | None = None

    # --- public -----------------------------------------------------------------------------

    @property
    def bytes_seen(self) -> int:
        """Bytes fed so far (the caller compares it with Content-Length and the size limit)."""
        return self._bytes_seen

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in internal buffers right now: proof that memory stays bounded."""
        return len(self._hbuf) + len(self._lbuf) + len(self._tbuf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Parse the next chunk of the stream; raise `InvalidMp4` once the structure is broken."""
        if self._error is not None:
            raise InvalidMp4(self._error)
        if self._finished:
            raise RuntimeError("Mp4Checker.feed() called after finish()")
        data = memoryview(chunk)
        if data.format != "B" or data.ndim != 1:
            data = data.cast("B")
        n = len(data)
        self._bytes_seen += n
        try:
            self._feed(data, n)
        except InvalidMp4 as exc:
            self._error = exc.message
            raise

    def finish(self) -> Mp4Info:
        """Declare the end of the stream: raise `InvalidMp4` if incomplete, else return the info."""
        if self._error is not None:
            raise InvalidMp4(self._error)
        self._finished = True
        try:
            return self._finish()
        except InvalidMp4 as exc:
            self._error = exc.message
            raise

    # --- the byte loop ------------------------------------------------------------------------

    def _feed(self, data: memoryview, n: int) -> None:
        i = 0
        while i < n:
            if self._state == _HEADER:
                take = min(self._hneed - len(self._hbuf), n - i)
                self._hbuf += data[i : i + take]
                i += take
                self._pos += take
                if len(self._hbuf) == self._hneed:
                    self._on_header()
                continue
            rem = self._remaining
            take = n - i if rem is None else min(rem, n - i)
            state = self._state
            if state == _SKIP:
                if take and not self._stack and self._cur is not None and self._cur.type == b"mdat":
                    self._has_media = True
            elif state == _LEAF:
                room = LEAF_PREFIX_CAP - len(self._lbuf)
                if room > 0:
                    self._lbuf += data[i : i + min(room, take)]
            else:
                self._trun_feed(data[i : i + take])
            i += take
            self._pos += take
            if rem is not None:
                self._remaining = rem - take
                if self._remaining == 0:
                    self._end_box()

    def _on_header(self) -> None:
        h = self._hbuf
        if self._hneed == 8:
            size, typ = struct.unpack(">I4s", h)
            if self._boxes == 0 and typ != b"ftyp":
                self._fail(f"not an MP4: first box is not ftyp (the stream starts with {_show(bytes(h))})")
            if not all(0x20 <= c <= 0x7E for c in typ):
                self._fail(
                    f"box at byte {self._pos - 8} has a type that is not four printable characters "
                    f"({_show(typ)}): not a valid MP4 box structure"
                )
            if size == 1:
                self._hneed = 16  # a 64-bit size follows
                return
            hlen = 8
        else:
            typ = bytes(h[4:8])
            size = _u64(h, 8)
            hlen = 16
            if size < 16:
                self._fail(
                    f"{self._name(typ)} box at byte {self._pos - 16} has a 64-bit size of {size}, "
                    "smaller than its 16-byte header"
                )
        h.clear()
        self._hneed = 8
        self._open_box(typ, size, hlen)

    def _open_box(self, typ: bytes, size: int, hlen: int) -> None:
        start = self._pos - hlen
        parent = self._stack[-1] if self._stack else None
        parent_type = parent.type if parent else None
        parent_end = parent.end if parent else None
        if size == 0:
            if parent is not None and parent_end is not None:
                self._fail(
                    f"{self._name(typ)} box at byte {start} has size 0 (runs to the end of the file) "
                    f"but lies inside {self._path()}, which ends at byte {parent_end}"
                )
            end = None
        elif size < 8:
            self._fail(
                f"{self._name(typ)} box at byte {start} has size {size}, smaller than its 8-byte header"
            )
        else:
            end = start + size
            if parent_end is not None and end > parent_end:
                self._fail(
                    f"{self._name(typ)} box at byte {start} (size {size}) overruns its parent "
                    f"{self._path()}, which ends at byte {parent_end}"
                )
        self._boxes += 1
        if parent is None and typ == b"moov":
            if self._has_moov:
                self._fail(f"a second moov box at byte {start}: an MP4 has exactly one")
            self._has_moov = True
        box = _Open(typ, start, self._pos, size or None, end)
        payload = None if end is None else end - self._pos
        if typ in _CONTAINERS.get(parent_type, _EMPTY):
            if typ == b"trak":
                self._trak = _Track()
            elif typ == b"traf":
                self._traf_track = None
                self._traf_default = None
            self._stack.append(box)
            self._state = _HEADER
            self._close_finished()
            return
        self._cur = box
        self._remaining = payload
        if typ in _LEAVES.get(parent_type, _EMPTY):
            self._state = _LEAF
            self._lbuf.clear()
        elif typ == b"trun" and parent_type == b"traf":
            self._state = _TRUN
            self._trun_phase = _TRUN_HEADER
            self._tbuf.clear()
            self._trun_need = 8
        else:
            self._state = _SKIP
        if payload == 0:
            self._end_box()

    def _end_box(self) -> None:
        """The current non-container box is complete: use what it held, close finished parents."""
        if self._state == _LEAF:
            assert self._cur is not None
            self._parse_leaf(self._cur.type, bytes(self._lbuf))
            self._lbuf.clear()
        elif self._state == _TRUN:
            self._trun_end()
        self._state = _HEADER
        self._cur = None
        self._remaining = None
        self._close_finished()

    def _close_finished(self) -> None:
        while self._stack and self._stack[-1].end == self._pos:
            self._close_container(self._stack.pop())
        if self._stack:
            end = self._stack[-1].end
            if end is not None and end - self._pos < 8:
                self._fail(
                    f"{end - self._pos} stray bytes at the end of {self._path()} (byte {self._pos}), "
                    "too few for a box"
                )

    def _close_container(self, box: _Open) -> None:
        if box.type == b"trak" and self._trak is not None:
            if len(self._tracks) >= MAX_TRACKS:
                self._fail(f"more than {MAX_TRACKS} tracks")
            self._tracks.append(self._trak)
            self._trak = None

    # --- leaf boxes ---------------------------------------------------------------------------

    def _too_short(self, typ: bytes, buf: bytes) -> NoReturn:
        self._fail(f"{self._name(typ)} box is too short ({len(buf)} bytes of content) for its fields")

    def _parse_leaf(self, typ: bytes, buf: bytes) -> None:
        if typ == b"ftyp":
            if len(buf) < 8:
                self._too_short(typ, buf)
            return
        if len(buf) < 4:
            self._too_short(typ, buf)
        version = buf[0]
        flags = int.from_bytes(buf[1:4], "big")
        if typ in (b"mvhd", b"mdhd"):
            if version > 1:
                return  # a version this check does not know: structure fine, fields unread
            need = 32 if version == 1 else 20
            if len(buf) < need:
                self._too_short(typ, buf)
            if version == 1:
                timescale, duration = _u32(buf, 20), _u64(buf, 24)
                duration = 0 if duration == _UNKNOWN_64 else duration
            else:
                timescale, duration = _u32(buf, 12), _u32(buf, 16)
                duration = 0 if duration == _UNKNOWN_32 else duration
            if typ == b"mvhd":
                self._mvhd_timescale, self._mvhd_duration = timescale, duration
            elif self._trak is not None:
                self._trak.timescale, self._trak.duration = timescale, duration
        elif typ == b"tkhd":
            if version > 1:
                return
            need = 96 if version == 1 else 84
            if len(buf) < need:
                self._too_short(typ, buf)
            if self._trak is not None:
                self._trak.track_id = _u32(buf, 20 if version == 1 else 12)
                self._trak.width = _u32(buf, need - 8) >> 16
                self._trak.height = _u32(buf, need - 4) >> 16
        elif typ == b"hdlr":
            if len(buf) < 12:
                self._too_short(typ, buf)
            if self._trak is not None:
                self._trak.handler = buf[8:12]
        elif typ == b"mehd":
            if version > 1:
                return
            need = 12 if version == 1 else 8
            if len(buf) < need:
                self._too_short(typ, buf)
            self._mehd_duration = _u64(buf, 4) if version == 1 else _u32(buf, 4)
        elif typ == b"trex":
            if len(buf) < 16:
                self._too_short(typ, buf)
            track_id = _u32(buf, 4)
            if track_id not in self._trex_default and len(self._trex_default) >= MAX_TRACKS:
                self._fail(f"more than {MAX_TRACKS} tracks")
            self._trex_default[track_id] = _u32(buf, 12)
        elif typ == b"tfhd":
            need = 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
            dur_off = need
            need += sum(4 for bit in (0x08, 0x10, 0x20) if flags & bit)
            if len(buf) < need:
                self._too_short(typ, buf)
            self._traf_track = _u32(buf, 4)
            self._traf_default = _u32(buf, dur_off) if flags & 0x08 else None

    # --- trun: sample table summed as it streams ------------------------------------------------

    def _trun_feed(self, chunk: memoryview) -> None:
        i, n = 0, len(chunk)
        while i < n:
            phase = self._trun_phase
            if phase == _TRUN_HEADER:
                take = min(self._trun_need - len(self._tbuf), n - i)
                self._tbuf += chunk[i : i + take]
                i += take
                if len(self._tbuf) < self._trun_need:
                    return
                if self._trun_need == 8:
                    flags = int.from_bytes(self._tbuf[1:4], "big")
                    extra = 4 * (bool(flags & 0x001) + bool(flags & 0x004))
                    if extra:
                        self._trun_need += extra
                        continue
                self._trun_begin_samples()
            elif phase == _TRUN_SAMPLES:
                rec = self._trun_rec
                if self._tbuf:  # a sample record split across chunks
                    take = min(rec - len(self._tbuf), n - i)
                    self._tbuf += chunk[i : i + take]
                    i += take
                    if len(self._tbuf) == rec:
                        self._trun_ticks += _u32(self._tbuf, 0)
                        self._trun_left -= 1
                        self._tbuf.clear()
                else:
                    k = min(self._trun_left, (n - i) // rec)
                    if k:
                        assert self._trun_fmt is not None
                        block = chunk[i : i + k * rec]
                        self._trun_ticks += sum(v[0] for v in self._trun_fmt.iter_unpack(block))
                        self._trun_left -= k
                        i += k * rec
                    else:
                        self._tbuf += chunk[i:n]
                        i = n
                if self._trun_left == 0:
                    self._add_ticks(self._trun_ticks, 0)
                    self._trun_phase = _TRUN_DONE
            else:
                return  # bytes after the sample table: nothing to read

    def _trun_begin_samples(self) -> None:
        flags = int.from_bytes(self._tbuf[1:4], "big")
        count = _u32(self._tbuf, 4)
        self._tbuf.clear()
        rec = 4 * sum(1 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
        cur = self._cur
        if cur is not None and cur.end is not None:
            room = cur.end - cur.body - self._trun_need
            if count * rec > room:
                self._fail(
                    f"trun box at byte {cur.start} declares {count} samples, "
                    f"more than its {cur.size} bytes can hold"
                )
        if flags & 0x100 and count:
            self._trun_rec = rec
            self._trun_left = count
            self._trun_ticks = 0
            self._trun_fmt = struct.Struct(f">I{rec - 4}x")
            self._trun_phase = _TRUN_SAMPLES
            return
        if not flags & 0x100:
            if self._traf_default is not None:
                self._add_ticks(count * self._traf_default, 0)
            else:
                self._add_ticks(0, count)
        self._trun_phase = _TRUN_DONE

    def _trun_end(self) -> None:
        if self._trun_phase == _TRUN_HEADER:
            assert self._cur is not None
            self._fail(f"trun box at byte {self._cur.start} is too short for its header")
        if self._trun_phase == _TRUN_SAMPLES:
            self._fail("stream ends inside the sample table of a trun box")

    def _add_ticks(self, ticks: int, default_samples: int) -> None:
        track_id = self._traf_track
        if track_id is None:
            return  # a trun before any tfhd: no track to credit
        entry = self._frag.get(track_id)
        if entry is None:
            if len(self._frag) >= MAX_TRACKS:
                self._fail(f"more than {MAX_TRACKS} tracks")
            entry = self._frag[track_id] = [0, 0]
        entry[0] += ticks
        entry[1] += default_samples

    # --- end of stream ------------------------------------------------------------------------

    def _finish(self) -> Mp4Info:
        if self._pos == 0:
            self._fail("empty stream: no bytes at all, not an MP4")
        if self._boxes == 0:
            self._fail(f"not an MP4: the stream is only {self._pos} bytes, too short for a box")
        in_body = self._state != _HEADER
        open_boxes = [b for b in self._stack if b.end is not None]
        if in_body and self._remaining is not None:
            assert self._cur is not None
            open_boxes.append(self._cur)
        if open_boxes:
            outer = open_boxes[0]
            path = self._path(self._cur.type if in_body and self._cur else None)
            self._fail(
                f"truncated: stream ends inside {path} ({outer.type.decode('ascii')} at byte "
                f"{outer.start} declares {outer.size} bytes; the stream ends at byte {self._pos})"
            )
        if self._hbuf:
            where = f"at the end of {self._path()}" if self._stack else "after the last box"
            self._fail(f"{len(self._hbuf)} stray bytes {where}, too few for a box")
        if in_body:
            self._end_box()  # the current box ran to the end of the file: it is complete
        while self._stack:
            self._close_container(self._stack.pop())
        if not self._has_moov:
            self._fail("no moov box: the movie header (track and timing information) is missing")
        if not self._has_media:
            self._fail("no media data: there is no mdat box with content")
        return self._info()

    def _info(self) -> Mp4Info:
        video = next((t for t in self._tracks if t.handler == b"vide" and t.width and t.height), None)
        if video is None:
            video = next((t for t in self._tracks if t.width and t.height), None)
        return Mp4Info(
            duration_seconds=self._duration(),
            width=video.width if video else None,
            height=video.height if video else None,
        )

    def _duration(self) -> float | None:
        timescale = self._mvhd_timescale
        if timescale and self._mvhd_duration:
            return self._mvhd_duration / timescale
        if timescale and self._mehd_duration:
            return self._mehd_duration / timescale
        scales = {t.track_id: t.timescale for t in self._tracks if t.track_id is not None and t.timescale}
        from_fragments = [
            (ticks + waiting * self._trex_default.get(track_id, 0)) / scales[track_id]
            for track_id, (ticks, waiting) in self._frag.items()
            if track_id in scales
        ]
        if from_fragments and max(from_fragments) > 0:
            return max(from_fragments)
        from_tracks = [t.duration / t.timescale for t in self._tracks if t.timescale and t.duration]
        if from_tracks:
            return max(from_tracks)
        return 0.0 if timescale else None

    # --- messages -----------------------------------------------------------------------------

    def _path(self, last: bytes | None = None) -> str:
        parts = [b.type.decode("ascii") for b in self._stack]
        if last is not None:
            parts.append(last.decode("ascii"))
        return "/".join(parts)

    def _name(self, typ: bytes) -> str:
        return self._path(typ) if self._stack else typ.decode("ascii")

    def _fail(self, reason: str) -> NoReturn:
        raise InvalidMp4(reason)


def check_file(path: str | os.PathLike[str]) -> Mp4Info:
    """Check a whole file the way the transfer checks a stream (64 KiB chunks); for tests and bench."""
    checker = Mp4Checker()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            checker.feed(chunk)
    return checker.finish()
