"""Incremental MP4 (ISO base media file, QuickTime) check, fed chunk by chunk.

The transfer streams a provider's video straight into an S3 multipart upload and must decide,
before it completes the upload, whether the bytes form a playable MP4 (docs/stored-video.md).
A link that expires makes a refused video a lost one, so the check accepts every file a
mainstream player plays and refuses only what cannot be played or was cut short:

- accepted: top-level boxes that tile the stream, an `ftyp` first (or after leading `free`,
  `skip` or `wide` boxes, with a warning), exactly one `moov`, media data (`mdat`, or
  fragments); 64-bit and size-0 boxes; a 4-byte zero terminator closing a container; bytes
  after the last box that cannot be the start of a box cut short (with a warning);
- refused: no `ftyp`, `moov` or media data; a second `ftyp` or `moov`; a box running past
  its parent or, for a known top-level type, past the end of the stream; a sample table
  pointing outside the media data (every chunk of `stco`/`co64` + `stsc` + `stsz`/`stz2`, and
  the data of every `trun`, must lie inside one `mdat`); anything that is not an MP4.

What it reads: the duration a player shows (the longest track, from its samples in `moov`
and in every fragment, its edit list applied; `mvhd`/`mehd` only when there are no samples),
the displayed size (`tkhd` size, the pixel aspect of a `pasp` box and the rotation matrix
applied) and the rotation (clockwise degrees).

Videos can be far larger than a Lambda's memory, so the check never holds the file: it walks
the box tree as bytes go by, skips payloads it does not need (`mdat` above all) by counting,
keeps the first bytes of a few small boxes and streams the sample tables record by record.
The tables the extents check needs are kept only until their chunks are matched with an
`mdat`, under caps (`max_table_entries`, `max_pending_extents`); past a cap that check is
skipped with a warning. The number of boxes is capped relative to the bytes (`max_boxes_base`,
`boxes_per_mib`), so a stream of millions of empty boxes cannot hold a worker longer than its
bytes justify.
"""

from __future__ import annotations

import bisect
import math
import operator
import os
import struct
import sys
from array import array
from dataclasses import dataclass, field
from typing import NoReturn

from videohook.errors import InvalidMp4

__all__ = [
    "ACCEPTED",
    "ACCEPTED_WITH_WARNINGS",
    "BOXES_PER_MIB",
    "MAX_BOXES_BASE",
    "Mp4Checker",
    "Mp4Info",
    "check_bytes",
    "check_file",
]

ACCEPTED = "accepted"
ACCEPTED_WITH_WARNINGS = "accepted_with_warnings"

# How much of a parsed leaf box is kept: every field read lies within its first 112 bytes, so
# the rest (e.g. a long `hdlr` name) is counted and dropped.
LEAF_PREFIX_CAP = 256
# A real video has a few tracks; the cap keeps the per-track state bounded on hostile input.
MAX_TRACKS = 256
CHUNK_SIZE = 64 * 1024
# Sample-table entries held at once for the extents check (stsz sizes, chunk offsets, stsc,
# stts/ctts runs): 2 Mi entries, at most 16 MiB. A two-hour 60 fps video has 432 000 samples.
MAX_TABLE_ENTRIES = 2 * 1024 * 1024
# Chunk extents waiting for the mdat they must lie in (moov before mdat): 1 Mi, 16 MiB.
MAX_PENDING_EXTENTS = 1024 * 1024
# mdat boxes remembered for extents that come after them (moov at the end, fragments).
MAX_MDATS = 1024 * 1024
# Box count allowed: MAX_BOXES_BASE plus BOXES_PER_MIB for every MiB parsed (docs/stored-video.md).
# A stream of 8-byte empty boxes is refused after about 1.14 million boxes (8.7 MiB, a few seconds
# of parsing); real files have one box per several hundred bytes or more.
MAX_BOXES_BASE = 1_000_000
BOXES_PER_MIB = 16 * 1024

# Top-level box types: a header of one of these at the end of the stream is a box cut short
# (truncation); any other type there is trailing bytes, tolerated with a warning.
TOP_LEVEL_TYPES = frozenset(
    {
        b"ftyp", b"styp", b"pdin", b"moov", b"moof", b"mfra", b"mdat", b"free", b"skip",
        b"wide", b"meta", b"sidx", b"ssix", b"prft", b"emsg", b"uuid", b"pnot", b"udta",
        b"afra", b"abst", b"imda", b"PICT",
    }
)  # fmt: skip
LEADING_TYPES = frozenset({b"free", b"skip", b"wide"})

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
    b"stbl": frozenset({b"stsd"}),
}
# stsd is read further than other leaves: a visual sample entry's `pasp` (pixel aspect) box
# follows its codec configuration, which can take a few hundred bytes.
STSD_PREFIX_CAP = 1024
# Tables streamed record by record, by parent type.
_TABLES: dict[bytes | None, frozenset[bytes]] = {
    b"stbl": frozenset({b"stts", b"ctts", b"stsc", b"stsz", b"stz2", b"stco", b"co64"}),
    b"edts": frozenset({b"elst"}),
    b"traf": frozenset({b"trun"}),
}
_EMPTY: frozenset[bytes] = frozenset()

# Parser states.
_HEADER, _SKIP, _LEAF, _TABLE, _TERM, _TRAILING = range(6)
# Phases inside a table box.
_T_HEADER, _T_RECORDS, _T_DONE = range(3)

_UNKNOWN_32 = 0xFFFFFFFF
_UNKNOWN_64 = 0xFFFFFFFFFFFFFFFF
_SWAP = sys.byteorder == "little"
_TRUN_BITS = (0x100, 0x200, 0x400, 0x800)


@dataclass(frozen=True)
class Mp4Info:
    """What the check read from an accepted MP4; a field is None when the file does not say.

    `rotation` is the clockwise rotation a player applies (0, 90, 180 or 270; 0 without a video
    track); `width`/`height` are the displayed size, rotation applied. `warnings` says in words
    what was tolerated (leading `free` box, trailing bytes, a check skipped past its cap).
    """

    duration_seconds: float | None
    width: int | None
    height: int | None
    rotation: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return ACCEPTED_WITH_WARNINGS if self.warnings else ACCEPTED


@dataclass
class _Track:
    """What one `trak` says about its track (filled in as its boxes stream by)."""

    track_id: int | None = None
    width_fx: int = 0  # 16.16 fixed point, before rotation
    height_fx: int = 0
    coded_width: int = 0  # the visual sample entry's size and pixel aspect (pasp)
    pixel_aspect: tuple[int, int] | None = None
    rotation: int = 0
    timescale: int = 0
    mdhd_duration: int = 0
    handler: bytes = b""
    # Edit list summary (movie timescale): empty edits before the media, first media time, total.
    elst_entries: int = 0
    elst_empty: int = 0
    elst_media_time: int | None = None
    elst_total: int = 0
    # Samples in moov.
    samples: int = 0
    ticks: int = 0
    max_end: int = 0  # latest presentation end (decode time + composition offset + duration)
    max_cto: int = 0
    # Tables kept for the extents check and the presentation end (dropped when stbl closes).
    stts: array[int] | None = None
    ctts: array[int] | None = None
    stsc: array[int] | None = None
    stsz: array[int] | None = None
    stsz_const: int = 0
    stsz_count: int = 0
    stsz_seen: bool = False
    chunks: array[int] | None = None
    tables_dropped: bool = False
    runs_dropped: bool = False


@dataclass
class _Fragments:
    """One track's samples in fragments: decode time runs on from the track's moov samples."""

    dts: int
    samples: int = 0
    max_end: int = 0


@dataclass
class _Traf:
    """The track fragment being read: its track, defaults and where its data runs."""

    track_id: int | None = None
    base: int = 0
    next_data: int = 0
    default_duration: int = 0
    default_size: int = 0


@dataclass
class _Table:
    """A table box being streamed: its header, then `left` records of `rec` bytes."""

    kind: bytes
    version: int = 0
    flags: int = 0
    phase: int = _T_HEADER
    need: int = 8
    rec: int = 0
    left: int = 0
    fmt: struct.Struct | None = None
    # trun: where its data starts, sizes and times summed so far.
    data_start: int = 0
    data_size: int = 0
    extra: dict[str, int] = field(default_factory=dict)


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


def _s32(buf: bytes | bytearray, off: int) -> int:
    return int.from_bytes(buf[off : off + 4], "big", signed=True)


def _u64(buf: bytes | bytearray, off: int) -> int:
    return int.from_bytes(buf[off : off + 8], "big")


def _array(code: str, block: memoryview | bytes) -> array[int]:
    """Big-endian records as a native array (one C-speed copy)."""
    values = array(code)
    values.frombytes(block)
    if _SWAP:
        values.byteswap()
    return values


def _show(raw: bytes) -> str:
    """Bytes as readable text for a message: printable ASCII kept, the rest as dots."""
    return "'" + "".join(chr(c) if 0x20 <= c <= 0x7E else "." for c in raw) + "'"


_PRINTABLE = bytes(range(0x20, 0x7F))


def _printable(typ: bytes) -> bool:
    return not typ.translate(None, _PRINTABLE)  # nothing left once printable ASCII is deleted


class Mp4Checker:
    """Checks that a byte stream is a playable MP4 while it is copied, in bounded memory.

    Why incremental: the video is streamed from the provider into S3 and can be gigabytes, so
    it can neither be held nor read twice. Feed every chunk in order with `feed` (it raises
    `InvalidMp4` as soon as the structure is provably broken, so a garbage stream is refused
    early), then call `finish` at the end of the stream: it raises `InvalidMp4` when something
    is missing or cut short, else returns what it read (`Mp4Info`). Once it has raised, the
    checker keeps raising the same error. The verdict does not depend on how the stream is
    cut into chunks.
    """

    def __init__(
        self,
        *,
        max_table_entries: int = MAX_TABLE_ENTRIES,
        max_pending_extents: int = MAX_PENDING_EXTENTS,
        max_mdats: int = MAX_MDATS,
        max_boxes_base: int = MAX_BOXES_BASE,
        boxes_per_mib: int = BOXES_PER_MIB,
    ) -> None:
        self._max_table_entries = max_table_entries
        self._max_pending = max_pending_extents
        self._max_mdats = max_mdats
        self._max_boxes_base = max_boxes_base
        self._boxes_per_mib = boxes_per_mib
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
        self._leaf_cap = LEAF_PREFIX_CAP
        self._boxes = 0
        self._warnings: list[str] = []
        # Findings.
        self._leading: list[bytes] = []
        self._has_ftyp = False
        self._has_moov = False
        self._has_media = False
        self._mvhd_timescale: int | None = None
        self._mvhd_duration = 0
        self._mehd_duration = 0
        self._tracks: list[_Track] = []
        self._trak: _Track | None = None
        self._trex: dict[int, tuple[int, int]] = {}  # track ID -> default duration, size
        self._frag: dict[int, _Fragments] = {}
        self._moof_start = 0
        self._moof_data_end = 0
        self._traf: _Traf | None = None
        self._table: _Table | None = None
        self._tbuf = bytearray()
        self._trailing_start: int | None = None
        self._trailing_head = b""
        # Extents check: mdat payloads seen, and extents waiting for a later mdat.
        self._extents_on = True
        self._table_entries = 0
        self._mdat_starts: array[int] = array("q")
        self._mdat_ends: array[int] = array("q")
        self._open_mdat_body: int | None = None
        self._open_mdat_need = -1  # for a size-0 (to the end) mdat: the furthest extent in it
        self._pending: list[tuple[array[int], array[int], list[int], str]] = []
        self._pending_count = 0

    # --- public -----------------------------------------------------------------------------

    @property
    def bytes_seen(self) -> int:
        """Bytes fed so far (the caller compares it with Content-Length and the size limit)."""
        return self._bytes_seen

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in the parsing buffers right now (tables for the extents check apart)."""
        return len(self._hbuf) + len(self._lbuf) + len(self._tbuf)

    @property
    def boxes(self) -> int:
        """Box headers parsed so far."""
        return self._boxes

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
        """Declare the end of the stream: raise `InvalidMp4` if unplayable, else return the info."""
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
            state = self._state
            if state in (_HEADER, _TERM):
                take = min(self._hneed - len(self._hbuf), n - i)
                self._hbuf += data[i : i + take]
                i += take
                self._pos += take
                if len(self._hbuf) == self._hneed:
                    if state == _TERM:
                        self._on_terminator()
                    else:
                        self._on_header()
                continue
            if state == _TRAILING:
                self._pos += n - i
                return
            rem = self._remaining
            take = n - i if rem is None else min(rem, n - i)
            if state == _LEAF:
                room = self._leaf_cap - len(self._lbuf)
                if room > 0:
                    self._lbuf += data[i : i + min(room, take)]
            elif state == _TABLE:
                self._table_feed(data[i : i + take])
            i += take
            self._pos += take
            if rem is not None:
                self._remaining = rem - take
                if self._remaining == 0:
                    self._end_box()

    def _on_header(self) -> None:
        h = self._hbuf
        start = self._pos - self._hneed
        top = not self._stack
        if self._hneed == 8:
            size, typ = struct.unpack(">I4s", h)
            if top and not self._has_ftyp:
                if typ in LEADING_TYPES:
                    pass
                elif typ != b"ftyp":
                    self._fail(self._no_ftyp(bytes(h)))
            if not _printable(typ):
                if top:
                    self._start_trailing(start, bytes(h))
                    return
                self._fail(
                    f"box at byte {start} has a type that is not four printable characters "
                    f"({_show(typ)}): not a valid MP4 box structure"
                )
            if size == 1:
                self._hneed = 16  # a 64-bit size follows
                return
            hlen = 8
            if 0 < size < 8 and top and typ not in TOP_LEVEL_TYPES:
                self._start_trailing(start, bytes(h))
                return
        else:
            typ = bytes(h[4:8])
            size = _u64(h, 8)
            hlen = 16
            if size < 16:
                if top and typ not in TOP_LEVEL_TYPES:
                    self._start_trailing(start, bytes(h))
                    return
                self._fail(
                    f"{self._name(typ)} box at byte {start} has a 64-bit size of {size}, "
                    "smaller than its 16-byte header"
                )
        h.clear()
        self._hneed = 8
        self._open_box(typ, size, hlen)

    def _no_ftyp(self, head: bytes) -> str:
        if self._leading:
            names = ", ".join(t.decode("ascii") for t in self._leading)
            return f"not an MP4: no ftyp box after the leading {names} box(es) (next comes {_show(head)})"
        return f"not an MP4: first box is not ftyp (the stream starts with {_show(head)})"

    def _start_trailing(self, start: int, head: bytes) -> None:
        """Bytes after the last box that cannot be a box: the rest of the stream is ignored."""
        self._trailing_start = start
        self._trailing_head = head
        self._hbuf.clear()
        self._state = _TRAILING

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
        if self._boxes > self._max_boxes_base and self._boxes > self._box_allowance():
            self._fail(
                f"too many boxes: {self._boxes} box headers in the first {self._pos} bytes, more than "
                "any playable file has (a stream of empty boxes is refused rather than parsed)"
            )
        if parent is None:
            self._top_level(typ, start, end)
        box = _Open(typ, start, self._pos, size or None, end)
        payload = None if end is None else end - self._pos
        if typ in _CONTAINERS.get(parent_type, _EMPTY):
            if typ == b"trak":
                self._trak = _Track()
            elif typ == b"traf":
                self._traf = _Traf()
            self._stack.append(box)
            self._state = _HEADER
            self._close_finished()
            return
        self._cur = box
        self._remaining = payload
        if typ in _LEAVES.get(parent_type, _EMPTY):
            self._state = _LEAF
            self._lbuf.clear()
            self._leaf_cap = STSD_PREFIX_CAP if typ == b"stsd" else LEAF_PREFIX_CAP
        elif typ in _TABLES.get(parent_type, _EMPTY):
            self._state = _TABLE
            self._table = _Table(typ)
            self._tbuf.clear()
        else:
            self._state = _SKIP
        if payload == 0:
            self._end_box()

    def _box_allowance(self) -> int:
        return self._max_boxes_base + (self._pos * self._boxes_per_mib >> 20)

    def _top_level(self, typ: bytes, start: int, end: int | None) -> None:
        if not self._has_ftyp:
            if typ in LEADING_TYPES:
                self._leading.append(typ)
                return
            self._has_ftyp = True
            if self._leading:
                names = ", ".join(t.decode("ascii") for t in self._leading)
                self._warnings.append(f"leading {names} box(es) before ftyp (bytes 0-{start - 1})")
            return
        if typ == b"ftyp":
            self._fail(f"a second ftyp box at byte {start}: an MP4 has one (two files joined?)")
        if typ == b"moov":
            if self._has_moov:
                self._fail(f"a second moov box at byte {start}: an MP4 has exactly one (two files joined?)")
            self._has_moov = True
        elif typ == b"moof":
            self._moof_start = start
            self._moof_data_end = start
        elif typ == b"mdat":
            body = self._pos
            if end is None:
                self._open_mdat_body = body  # media only if a byte follows its header
            elif end > body:
                self._has_media = True
            self._on_mdat(body, end)

    def _end_box(self) -> None:
        """The current non-container box is complete: use what it held, close finished parents."""
        assert self._cur is not None
        if self._state == _LEAF:
            self._parse_leaf(self._cur.type, bytes(self._lbuf))
            self._lbuf.clear()
        elif self._state == _TABLE:
            self._table_end()
        self._state = _HEADER
        self._cur = None
        self._remaining = None
        self._close_finished()

    def _close_finished(self) -> None:
        while self._stack and self._stack[-1].end == self._pos:
            self._close_container(self._stack.pop())
        if self._stack:
            end = self._stack[-1].end
            if end is not None and end - self._pos == 4:
                self._state = _TERM  # QuickTime: a 32-bit zero may close a list of boxes
                self._hneed = 4
            elif end is not None and end - self._pos < 8:
                self._fail(
                    f"{end - self._pos} stray bytes at the end of {self._path()} (byte {self._pos}), "
                    "too few for a box"
                )

    def _on_terminator(self) -> None:
        if any(self._hbuf):
            self._fail(
                f"4 stray bytes at the end of {self._path()} (byte {self._pos - 4}), too few for a box "
                "and not a zero terminator"
            )
        self._hbuf.clear()
        self._hneed = 8
        self._state = _HEADER
        self._close_finished()

    def _close_container(self, box: _Open) -> None:
        if box.type == b"trak" and self._trak is not None:
            if len(self._tracks) >= MAX_TRACKS:
                self._fail(f"more than {MAX_TRACKS} tracks")
            self._tracks.append(self._trak)
            self._trak = None
        elif box.type == b"stbl" and self._trak is not None:
            self._close_stbl(self._trak)
        elif box.type == b"traf":
            self._traf = None

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
                self._trak.timescale, self._trak.mdhd_duration = timescale, duration
        elif typ == b"tkhd":
            if version > 1:
                return
            need = 96 if version == 1 else 84
            if len(buf) < need:
                self._too_short(typ, buf)
            if self._trak is not None:
                self._trak.track_id = _u32(buf, 20 if version == 1 else 12)
                matrix = need - 44
                a, b = _s32(buf, matrix), _s32(buf, matrix + 4)
                self._trak.rotation = round(math.degrees(math.atan2(b, a)) / 90) % 4 * 90 if a or b else 0
                self._trak.width_fx = _u32(buf, need - 8)
                self._trak.height_fx = _u32(buf, need - 4)
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
            if len(buf) < 20:
                self._too_short(typ, buf)
            track_id = _u32(buf, 4)
            if track_id not in self._trex and len(self._trex) >= MAX_TRACKS:
                self._fail(f"more than {MAX_TRACKS} tracks")
            self._trex[track_id] = (_u32(buf, 12), _u32(buf, 16))
        elif typ == b"tfhd":
            self._parse_tfhd(typ, buf, flags)
        elif typ == b"stsd" and self._trak is not None and self._trak.handler == b"vide":
            self._parse_visual_entry(self._trak, buf)

    @staticmethod
    def _parse_visual_entry(track: _Track, buf: bytes) -> None:
        """The first visual sample entry's width and its `pasp` box, if they lie in the prefix kept."""
        entry = 8  # after version, flags and entry count
        if len(buf) < entry + 8 + 78:
            return
        entry_end = entry + _u32(buf, entry)
        track.coded_width = int.from_bytes(buf[entry + 32 : entry + 34], "big")
        child = entry + 8 + 78
        while child + 8 <= min(entry_end, len(buf)):
            size = _u32(buf, child)
            if buf[child + 4 : child + 8] == b"pasp" and size >= 16 and child + 16 <= len(buf):
                h_spacing, v_spacing = _u32(buf, child + 8), _u32(buf, child + 12)
                if h_spacing and v_spacing:
                    track.pixel_aspect = (h_spacing, v_spacing)
                return
            if size < 8:
                return
            child += size

    def _parse_tfhd(self, typ: bytes, buf: bytes, flags: int) -> None:
        need = 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
        fields: dict[int, int] = {}
        for bit in (0x08, 0x10, 0x20):
            if flags & bit:
                fields[bit] = need
                need += 4
        if len(buf) < need:
            self._too_short(typ, buf)
        traf = self._traf
        if traf is None:
            return
        traf.track_id = track_id = _u32(buf, 4)
        default_duration, default_size = self._trex.get(track_id, (0, 0))
        traf.default_duration = _u32(buf, fields[0x08]) if 0x08 in fields else default_duration
        traf.default_size = _u32(buf, fields[0x10]) if 0x10 in fields else default_size
        if flags & 0x01:
            traf.base = _u64(buf, 8)
        elif flags & 0x020000:
            traf.base = self._moof_start
        else:  # the moof's start for its first traf, else where the previous traf's data ended
            traf.base = self._moof_data_end
        traf.next_data = traf.base

    # --- tables: streamed record by record ------------------------------------------------------

    def _table_feed(self, chunk: memoryview) -> None:
        t = self._table
        assert t is not None
        i, n = 0, len(chunk)
        while i < n:
            if t.phase == _T_HEADER:
                take = min(t.need - len(self._tbuf), n - i)
                self._tbuf += chunk[i : i + take]
                i += take
                if len(self._tbuf) < t.need:
                    return
                if t.need == 8 and t.kind == b"trun":
                    flags = int.from_bytes(self._tbuf[1:4], "big")
                    extra = 4 * (bool(flags & 0x001) + bool(flags & 0x004))
                    if extra:
                        t.need += extra
                        continue
                if t.need == 8 and t.kind in (b"stsz", b"stz2"):
                    t.need = 12
                    continue
                self._table_begin(t, bytes(self._tbuf))
                self._tbuf.clear()
            elif t.phase == _T_RECORDS:
                rec = t.rec
                if self._tbuf:  # a record split across chunks
                    take = min(rec - len(self._tbuf), n - i)
                    self._tbuf += chunk[i : i + take]
                    i += take
                    if len(self._tbuf) == rec:
                        t.left -= 1
                        self._table_records(t, memoryview(bytes(self._tbuf)))
                        self._tbuf.clear()
                else:
                    k = min(t.left, (n - i) // rec)
                    if k:
                        t.left -= k
                        self._table_records(t, chunk[i : i + k * rec])
                        i += k * rec
                    else:
                        self._tbuf += chunk[i:n]
                        i = n
                if t.left == 0:
                    t.phase = _T_DONE
            else:
                return  # bytes after the records: nothing to read

    def _table_begin(self, t: _Table, head: bytes) -> None:
        cur = self._cur
        assert cur is not None
        t.version = head[0]
        t.flags = flags = int.from_bytes(head[1:4], "big")
        count = _u32(head, 4)
        kind = t.kind
        track = self._trak
        if kind in (b"stts", b"ctts"):
            rec = 8
        elif kind == b"stsc":
            rec = 12
        elif kind == b"stco":
            rec = 4
        elif kind == b"co64":
            rec = 8
        elif kind == b"elst":
            rec = 20 if t.version == 1 else 12
        elif kind == b"stsz":
            const, count = count, _u32(head, 8)
            rec = 0 if const else 4
            if track is not None:
                track.stsz_const, track.stsz_count, track.stsz_seen = const, count, True
        elif kind == b"stz2":
            bits, count = head[7], _u32(head, 8)
            if bits not in (4, 8, 16):
                self._fail(f"{self._name(kind)} box at byte {cur.start} has a field size of {bits} bits")
            if track is not None:
                track.stsz_count, track.stsz_seen = count, True
                t.extra["bits"] = bits
            rec = 2 if bits == 16 else 1
            t.extra["count"] = count
            if bits == 4:
                count = (count + 1) // 2
        else:  # trun
            rec = 4 * sum(1 for bit in _TRUN_BITS if flags & bit)
            self._trun_begin(t, head, count)
        room = (cur.end - cur.body - len(head)) if cur.end is not None else None
        if room is not None and count * rec > room:
            self._fail(
                f"{self._name(kind)} box at byte {cur.start} declares {count} "
                f"{'samples' if kind in (b'trun', b'stsz', b'stz2') else 'entries'}, "
                f"more than its {cur.size} bytes can hold"
            )
        t.rec, t.left = rec, count
        if kind == b"trun":
            fields = "".join(
                code for bit, code in zip(_TRUN_BITS, ("I", "I", "4x", "i"), strict=True) if flags & bit
            )
            t.fmt = struct.Struct(">" + fields) if fields else None
        if rec and count:
            t.phase = _T_RECORDS
            if kind != b"trun" and kind != b"elst" and track is not None:
                self._reserve(track, kind, count)
        else:
            t.phase = _T_DONE

    def _reserve(self, track: _Track, kind: bytes, count: int) -> None:
        """Make room for a table the extents check needs, or give that check up (with a warning)."""
        if kind in (b"stts", b"ctts"):
            if track.runs_dropped:
                return
            if self._table_entries + count > self._max_table_entries:
                track.runs_dropped = True
                track.stts = track.ctts = None
                return
            self._table_entries += count
            if kind == b"stts":
                track.stts = array("I")
            else:
                track.ctts = array("i")
            return
        if not self._extents_on or track.tables_dropped:
            return
        entries = count * 3 if kind == b"stsc" else count
        if self._table_entries + entries > self._max_table_entries:
            self._skip_extents(
                f"the sample tables of track {track.track_id} are too large to keep "
                f"(over {self._max_table_entries} entries)"
            )
            track.tables_dropped = True
            track.stsc = track.stsz = track.chunks = None
            return
        self._table_entries += entries
        if kind == b"stsc":
            track.stsc = array("I")
        elif kind in (b"stsz", b"stz2"):
            track.stsz = array("I")
        else:
            track.chunks = array("Q")

    def _table_records(self, t: _Table, block: memoryview) -> None:
        kind = t.kind
        if kind == b"trun":
            self._trun_records(t, block)
            return
        track = self._trak
        if kind == b"elst":
            self._elst_records(t, block)
            return
        if track is None:
            return
        if kind == b"stts":
            values = _array("I", block)
            counts, deltas = values[0::2], values[1::2]
            track.samples += sum(counts)
            track.ticks += sum(map(operator.mul, counts, deltas))
            if track.stts is not None:
                track.stts.extend(values)
        elif kind == b"ctts":
            values = _array("i", block)
            track.max_cto = max(track.max_cto, max(values[1::2]))
            if track.ctts is not None:
                track.ctts.extend(values)
        elif kind == b"stsc" and track.stsc is not None:
            track.stsc.extend(_array("I", block))
        elif kind == b"stsz" and track.stsz is not None:
            track.stsz.extend(_array("I", block))
        elif kind == b"stz2" and track.stsz is not None:
            bits = t.extra["bits"]
            if bits == 16:
                track.stsz.extend(array("I", _array("H", block)))
            elif bits == 8:
                track.stsz.extend(array("I", bytes(block)))
            else:
                for byte in block:
                    track.stsz.append(byte >> 4)
                    track.stsz.append(byte & 0x0F)
        elif kind == b"stco" and track.chunks is not None:
            track.chunks.extend(array("Q", _array("I", block)))
        elif kind == b"co64" and track.chunks is not None:
            track.chunks.extend(_array("Q", block))

    def _elst_records(self, t: _Table, block: memoryview) -> None:
        track = self._trak
        if track is None:
            return
        fmt = ">Qq4x" if t.version == 1 else ">Ii4x"
        for duration, media_time in struct.iter_unpack(fmt, block):
            track.elst_entries += 1
            track.elst_total += duration
            if track.elst_media_time is None:
                if media_time == -1:
                    track.elst_empty += duration
                else:
                    track.elst_media_time = media_time

    def _table_end(self) -> None:
        t = self._table
        cur = self._cur
        assert t is not None and cur is not None
        if t.phase == _T_HEADER:
            self._fail(f"{self._name(t.kind)} box at byte {cur.start} is too short for its header")
        if t.phase == _T_RECORDS:  # only a box running to the end of the stream can end here
            self._fail(f"stream ends inside the table of a {t.kind.decode()} box")
        if t.kind == b"stz2" and self._trak is not None and self._trak.stsz is not None:
            del self._trak.stsz[t.extra["count"] :]  # a 4-bit table's last nibble may be padding
        if t.kind == b"trun":
            self._trun_end(t)
        self._table = None

    # --- trun: the samples and data of one run of a track fragment -----------------------------

    def _trun_begin(self, t: _Table, head: bytes, count: int) -> None:
        traf = self._traf
        flags = t.flags
        t.extra["count"] = count
        if traf is None:
            return
        if flags & 0x001:
            t.data_start = traf.base + _s32(head, 8)
        else:
            t.data_start = traf.next_data
        frag = self._fragments(traf.track_id)
        if frag is not None and not flags & 0x100 and not flags & 0x800:
            # Every sample takes the default duration.
            frag.dts += count * traf.default_duration
            frag.max_end = max(frag.max_end, frag.dts)
        if frag is not None:
            frag.samples += count
        if not flags & 0x200:
            t.data_size = count * traf.default_size

    def _trun_records(self, t: _Table, block: memoryview) -> None:
        traf = self._traf
        if traf is None or t.fmt is None:
            return
        flags = t.flags
        frag = self._fragments(traf.track_id)
        fields = [bit for bit in _TRUN_BITS if flags & bit and bit != 0x400]
        rows = t.fmt.iter_unpack(block)
        if frag is None or not flags & 0x900:  # no timing in the records (or no track): sizes only
            if flags & 0x200:
                size_at = fields.index(0x200)
                t.data_size += sum(row[size_at] for row in rows)
            return
        dur_at = fields.index(0x100) if flags & 0x100 else -1
        size_at = fields.index(0x200) if flags & 0x200 else -1
        cto_at = fields.index(0x800) if flags & 0x800 else -1
        default = traf.default_duration
        dts = frag.dts if frag is not None else 0
        max_end = frag.max_end if frag is not None else 0
        size = 0
        for row in rows:
            duration = row[dur_at] if dur_at >= 0 else default
            end = dts + duration + (row[cto_at] if cto_at >= 0 else 0)
            if end > max_end:
                max_end = end
            dts += duration
            if size_at >= 0:
                size += row[size_at]
        t.data_size += size
        if frag is not None:
            frag.dts, frag.max_end = dts, max_end

    def _trun_end(self, t: _Table) -> None:
        traf = self._traf
        if traf is None:
            return
        end = t.data_start + t.data_size
        traf.next_data = end
        self._moof_data_end = end
        if t.data_size:
            self._add_extent(t.data_start, end, f"the data of the trun box at byte {self._cur_start()}")

    def _cur_start(self) -> int:
        return self._cur.start if self._cur is not None else self._pos

    def _fragments(self, track_id: int | None) -> _Fragments | None:
        if track_id is None:
            return None
        frag = self._frag.get(track_id)
        if frag is None:
            if len(self._frag) >= MAX_TRACKS:
                self._fail(f"more than {MAX_TRACKS} tracks")
            track = next((t for t in self._tracks if t.track_id == track_id), None)
            start = max(track.ticks, track.max_end) if track is not None else 0
            frag = self._frag[track_id] = _Fragments(dts=track.ticks if track else 0, max_end=start)
        return frag

    # --- stbl closed: presentation end and chunk extents ----------------------------------------

    def _close_stbl(self, track: _Track) -> None:
        track.max_end = self._presentation_end(track)
        if track.stts is not None or track.ctts is not None:
            self._table_entries -= len(track.stts or ()) // 2 + len(track.ctts or ()) // 2
            track.stts = track.ctts = None
        if self._extents_on and not track.tables_dropped:
            self._chunk_extents(track)
        held = len(track.stsc or ()) + len(track.stsz or ()) + len(track.chunks or ())
        self._table_entries -= held
        track.stsc = track.stsz = track.chunks = None

    @staticmethod
    def _presentation_end(track: _Track) -> int:
        """The latest decode time + composition offset + duration over the track's moov samples."""
        if track.ctts is None or track.stts is None:
            return track.ticks + max(track.max_cto, 0)
        stts, ctts = track.stts, track.ctts
        ns, nc = len(stts) - 1, len(ctts) - 1
        si = ci = 0
        s_left = c_left = delta = offset = 0
        dts = best = 0
        while True:
            while s_left == 0 and si < ns:
                s_left, delta = stts[si], stts[si + 1]
                si += 2
            if s_left == 0:
                return best
            while c_left == 0 and ci < nc:
                c_left, offset = ctts[ci] & 0xFFFFFFFF, ctts[ci + 1]
                ci += 2
            if c_left == 0:  # past the composition offsets: the rest have none
                n, offset = s_left, 0
            else:
                n = min(s_left, c_left)
                c_left -= n
            dts += n * delta
            best = max(best, dts + offset)
            s_left -= n

    def _chunk_extents(self, track: _Track) -> None:
        """Every chunk's bytes, from its offset and the sizes of the samples the chunk map puts in it."""
        chunks, stsc = track.chunks, track.stsc
        if not chunks:
            return
        if stsc is None or not stsc:
            return  # no chunk map: no sample lies in any chunk
        if not track.stsz_seen:
            self._fail(f"track {track.track_id} has chunk offsets but no sample size table (stsz)")
        sizes, const, count = track.stsz, track.stsz_const, track.stsz_count
        nchunks = len(chunks)
        what = f"track {track.track_id}"
        sample = 0
        entries = len(stsc) // 3
        for j in range(entries):
            first, per_chunk = stsc[3 * j], stsc[3 * j + 1]
            last = stsc[3 * (j + 1)] - 1 if j + 1 < entries else nchunks
            if first < 1 or last < first - 1 or last > nchunks:
                if first > nchunks and j + 1 == entries:
                    break
                self._fail(f"the chunk map (stsc) of {what} is out of order or names missing chunks")
            for chunk in range(first - 1, last):
                if sample + per_chunk > count:
                    self._fail(
                        f"the chunk map (stsc) of {what} puts more samples in its chunks than its "
                        f"sample size table (stsz) has ({count})"
                    )
                if const:
                    size = const * per_chunk
                elif sizes is not None:
                    size = sum(sizes[sample : sample + per_chunk]) if per_chunk > 1 else sizes[sample]
                else:
                    size = 0
                sample += per_chunk
                if size:
                    offset = chunks[chunk]
                    self._add_extent(offset, offset + size, f"chunk {chunk + 1} of {what}")

    # --- the extents check ------------------------------------------------------------------------

    def _skip_extents(self, why: str) -> None:
        if self._extents_on:
            self._extents_on = False
            self._warnings.append(f"sample extents not checked: {why}")
            self._pending.clear()
            self._pending_count = 0
            self._mdat_starts = array("q")
            self._mdat_ends = array("q")

    def _add_extent(self, start: int, end: int, what: str) -> None:
        """Bytes the sample tables say hold media: they must lie inside one mdat's payload."""
        if not self._extents_on:
            return
        starts = self._mdat_starts
        i = bisect.bisect_right(starts, start) - 1
        if i >= 0:
            mdat_end = self._mdat_ends[i]
            if mdat_end < 0:  # the open size-0 mdat, which runs to the end of the stream
                self._open_mdat_need = max(self._open_mdat_need, end)
                return
            if end <= mdat_end:
                return
        if start < self._pos:
            self._outside(start, end, what)
        if self._pending_count >= self._max_pending:
            self._skip_extents(f"more than {self._max_pending} chunks wait for their mdat")
            return
        if not self._pending or self._pending[-1][0][-1] > start:
            self._pending.append((array("q"), array("q"), [0], what))
        run = self._pending[-1]
        run[0].append(start)
        run[1].append(end)
        self._pending_count += 1

    def _outside(self, start: int, end: int, what: str) -> NoReturn:
        self._fail(
            f"the sample tables point outside the media data: {what} is bytes {start}-{end - 1}, "
            "which do not lie inside one mdat box (a damaged chunk offset or sample size)"
        )

    def _on_mdat(self, body: int, end: int | None) -> None:
        if not self._extents_on:
            return
        if len(self._mdat_starts) >= self._max_mdats:
            self._skip_extents(f"more than {self._max_mdats} mdat boxes")
            return
        self._mdat_starts.append(body)
        self._mdat_ends.append(-1 if end is None else end)
        limit = math.inf if end is None else end
        kept = []
        for run in self._pending:
            starts, ends, at, what = run
            i = at[0]
            while i < len(starts) and starts[i] < limit:
                if starts[i] < body or ends[i] > limit:
                    self._outside(starts[i], ends[i], what)
                if end is None:
                    self._open_mdat_need = max(self._open_mdat_need, ends[i])
                i += 1
            self._pending_count -= i - at[0]
            at[0] = i
            if i < len(starts):
                kept.append(run)
        self._pending = kept

    # --- end of stream ------------------------------------------------------------------------

    def _finish(self) -> Mp4Info:
        if self._pos == 0:
            self._fail("empty stream: no bytes at all, not an MP4")
        if self._boxes == 0 and self._state != _TRAILING:
            self._fail(f"not an MP4: the stream is only {self._pos} bytes, too short for a box")
        if self._state == _TRAILING:
            self._trailing_warning()
        else:
            self._finish_boxes()
        if self._open_mdat_body is not None and self._pos > self._open_mdat_body:
            self._has_media = True
        if not self._has_ftyp:
            self._fail("not an MP4: no ftyp box")
        if not self._has_moov:
            self._fail("no moov box: the movie header (track and timing information) is missing")
        if not self._has_media:
            self._fail("no media data: there is no mdat box with content")
        if self._extents_on:
            for starts, ends, at, what in self._pending:
                i = at[0]
                self._outside(starts[i], ends[i], what)
            if self._open_mdat_need > self._pos:
                self._fail(
                    "the sample tables point outside the media data: they need bytes up to "
                    f"{self._open_mdat_need - 1}, past the end of the stream at byte {self._pos}"
                )
        return self._info()

    def _finish_boxes(self) -> None:
        in_body = self._state not in (_HEADER, _TERM)
        open_boxes = [b for b in self._stack if b.end is not None]
        if in_body and self._remaining is not None:
            assert self._cur is not None
            open_boxes.append(self._cur)
        if open_boxes:
            outer = open_boxes[0]
            if not self._stack and outer.type not in TOP_LEVEL_TYPES:
                # An unknown top-level type cut short: trailing bytes, not a known box truncated.
                self._trailing_start = outer.start
                self._trailing_head = outer.type
                self._trailing_warning()
                return
            path = self._path(self._cur.type if in_body and self._cur else None)
            self._fail(
                f"truncated: stream ends inside {path} ({outer.type.decode('ascii')} at byte "
                f"{outer.start} declares {outer.size} bytes; the stream ends at byte {self._pos})"
            )
        if self._hbuf:
            if self._stack:
                self._fail(f"{len(self._hbuf)} stray bytes at the end of {self._path()}, too few for a box")
            typ = bytes(self._hbuf[4:8])
            if len(self._hbuf) >= 8 and typ in TOP_LEVEL_TYPES:
                self._fail(
                    f"truncated: stream ends inside the header of a {typ.decode('ascii')} box "
                    f"at byte {self._pos - len(self._hbuf)}"
                )
            self._trailing_start = self._pos - len(self._hbuf)
            self._trailing_head = bytes(self._hbuf)
            self._trailing_warning()
            return
        if in_body:
            self._end_box()  # the current box ran to the end of the file: it is complete
        while self._stack:
            self._close_container(self._stack.pop())

    def _trailing_warning(self) -> None:
        start = self._trailing_start
        assert start is not None
        if not self._has_ftyp:
            self._fail(self._no_ftyp(self._trailing_head))
        count = self._pos - start
        self._warnings.append(
            f"{count} bytes after the last box (from byte {start}, starting "
            f"{_show(self._trailing_head[:8])}) are not a box and were ignored"
        )

    def _info(self) -> Mp4Info:
        video = next((t for t in self._tracks if t.handler == b"vide" and t.width_fx and t.height_fx), None)
        if video is None:
            video = next((t for t in self._tracks if t.width_fx and t.height_fx), None)
        width = height = None
        rotation = 0
        if video is not None:
            width, height = (video.width_fx + 0x8000) >> 16, (video.height_fx + 0x8000) >> 16
            if video.pixel_aspect and width == video.coded_width:
                # The track header gives the coded size: a player applies the pixel aspect.
                h_spacing, v_spacing = video.pixel_aspect
                width = round(width * h_spacing / v_spacing)
            rotation = video.rotation
            if rotation in (90, 270):
                width, height = height, width
        return Mp4Info(
            duration_seconds=self._duration(),
            width=width,
            height=height,
            rotation=rotation,
            warnings=tuple(self._warnings),
        )

    def _duration(self) -> float | None:
        """The longest track as a player shows it, from its samples; headers only without samples."""
        movie_scale = self._mvhd_timescale or 0
        durations = []
        for track in self._tracks:
            if not track.timescale:
                continue
            frag = self._frag.get(track.track_id) if track.track_id is not None else None
            samples = track.samples + (frag.samples if frag else 0)
            if not samples:
                continue
            end = max(track.max_end, frag.max_end if frag else 0)
            start = 0
            empty = 0.0
            if track.elst_entries and movie_scale:
                start = max(track.elst_media_time or 0, 0)
                empty = track.elst_empty / movie_scale
            seconds = empty + max(end - start, 0) / track.timescale
            if track.elst_entries and track.elst_total and movie_scale and not (frag and frag.samples):
                seconds = min(seconds, track.elst_total / movie_scale)
            durations.append(seconds)
        if durations:
            return max(durations)
        from_tracks = [t.mdhd_duration / t.timescale for t in self._tracks if t.timescale and t.mdhd_duration]
        if from_tracks:
            return max(from_tracks)
        if movie_scale and self._mvhd_duration:
            return self._mvhd_duration / movie_scale
        if movie_scale and self._mehd_duration:
            return self._mehd_duration / movie_scale
        return 0.0 if movie_scale else None

    # --- messages -----------------------------------------------------------------------------

    def _path(self, last: bytes | None = None) -> str:
        parts = [b.type.decode("latin-1") for b in self._stack]
        if last is not None:
            parts.append(last.decode("latin-1"))
        return "/".join(parts)

    def _name(self, typ: bytes) -> str:
        return self._path(typ) if self._stack else typ.decode("latin-1")

    def _fail(self, reason: str) -> NoReturn:
        raise InvalidMp4(reason)


def check_bytes(data: bytes | bytearray | memoryview, chunk_size: int = CHUNK_SIZE) -> Mp4Info:
    """Check bytes held in memory, fed in `chunk_size` pieces (tests and the bench)."""
    checker = Mp4Checker()
    view = memoryview(data)
    for i in range(0, len(view), chunk_size):
        checker.feed(view[i : i + chunk_size])
    return checker.finish()


def check_file(path: str | os.PathLike[str]) -> Mp4Info:
    """Check a whole file the way the transfer checks a stream (64 KiB chunks); for tests and bench."""
    checker = Mp4Checker()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            checker.feed(chunk)
    return checker.finish()
