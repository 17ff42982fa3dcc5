"""The MP4 check on real encoder output: FFmpeg's muxer (through PyAV) in many layouts, and
damaged variants of them made by byte edits.

Every layout of `LAYOUTS` is written once per session (testkit/encoders.py) into a temporary
folder; PyAV reads each file back as the reference a player shows (duration, displayed size,
rotation). A valid file must be accepted with the reference's duration (within 1 % or 50 ms)
and size; every damaged variant gets its verdict (accepted, accepted with a warning, refused
with a reason in words), and valid variants are compared with PyAV's reading of the variant.
Every file gets the same verdict whatever the chunk size (1, 7, 4096 and 256 KiB).
Run `PYTHONPATH=handler:. .venv/bin/python -m tests.unit.test_mp4_corpus` for the table (layout -> verdict,
duration and size vs the reference).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

from testkit.encoders import Layout, Reference, encode, reference
from videohook.errors import InvalidMp4
from videohook.mp4 import Mp4Checker, Mp4Info

EMPTY_MOOV = "frag_keyframe+empty_moov"
CHUNK_SIZES = [1, 7, 4096, 256 * 1024]

LAYOUTS = [
    Layout("h264_moov_at_end"),
    Layout("h264_faststart", movflags="faststart"),
    Layout("h264_aac_faststart", audio_codec="aac", movflags="faststart"),
    Layout("h264_aac_moov_at_end", audio_codec="aac"),
    Layout("h264_bframes_aac", audio_codec="aac", bframes=2),
    Layout("h264_bframes_faststart", bframes=3, movflags="faststart"),
    Layout("frag_keyframe", audio_codec="aac", movflags="frag_keyframe", seconds=3),
    Layout("frag_keyframe_empty_moov", audio_codec="aac", movflags=EMPTY_MOOV, seconds=3),
    Layout("frag_duration_500ms", audio_codec="aac", options={"frag_duration": "500000"}, seconds=3),
    Layout("frag_size_4000", audio_codec="aac", options={"frag_size": "4000"}, seconds=3),
    Layout("frag_default_base_moof", audio_codec="aac", movflags=EMPTY_MOOV + "+default_base_moof"),
    Layout("frag_separate_moof", audio_codec="aac", movflags=EMPTY_MOOV + "+separate_moof"),
    Layout("frag_omit_tfhd_offset", audio_codec="aac", movflags=EMPTY_MOOV + "+omit_tfhd_offset"),
    Layout(
        "frag_negative_cts_offsets",
        bframes=2,
        audio_codec="aac",
        movflags=EMPTY_MOOV + "+negative_cts_offsets",
    ),
    Layout("frag_bframes", bframes=2, audio_codec="aac", movflags="frag_keyframe"),
    Layout("frag_every_frame", movflags="frag_every_frame+empty_moov"),
    Layout("frag_cmaf", audio_codec="aac", movflags="cmaf"),
    Layout("frag_dash_global_sidx", movflags="dash+global_sidx"),
    Layout("frag_delay_moov", audio_codec="aac", movflags="delay_moov+frag_keyframe"),
    Layout("hybrid_fragmented", audio_codec="aac", movflags="hybrid_fragmented"),
    Layout("rotation_90", rotation=90),
    Layout("rotation_180", rotation=180, movflags="faststart"),
    Layout("rotation_270", rotation=270, audio_codec="aac"),
    Layout("rotation_90_fragmented", rotation=90, movflags=EMPTY_MOOV),
    Layout("rotate_metadata_tag_90", metadata_rotate=90),
    Layout("mpeg4", video_codec="mpeg4"),
    Layout("mjpeg", video_codec="mjpeg", pix_fmt="yuvj420p"),
    Layout("hevc", video_codec="libx265"),
    Layout("vp9", video_codec="libvpx-vp9", codec_options={"deadline": "realtime", "cpu-used": "8"}),
    Layout("audio_only_aac", video_codec=None, audio_codec="aac"),
    Layout("audio_only_mp3", video_codec=None, audio_codec="libmp3lame"),
    Layout("audio_only_flac", video_codec=None, audio_codec="flac"),
    Layout("audio_only_opus", video_codec=None, audio_codec="libopus", audio_rate=48000),
    Layout(
        "audio_only_fragmented",
        video_codec=None,
        audio_codec="aac",
        movflags=EMPTY_MOOV,
        options={"frag_duration": "300000"},
    ),
    Layout("mov_h264_pcm", container="mov", audio_codec="pcm_s16le"),
    Layout("mov_alac_faststart", container="mov", video_codec=None, audio_codec="alac", movflags="faststart"),
    Layout("mov_mjpeg", container="mov", video_codec="mjpeg", pix_fmt="yuvj420p"),
    Layout("m4v_ipod", container="ipod", audio_codec="aac"),
    Layout("3gp_h264_aac", container="3gp", audio_codec="aac", audio_rate=8000),
    Layout("ntsc_30000_1001", fps=Fraction(30000, 1001), audio_codec="aac"),
    Layout("fps60_timescale_90000", fps=60, options={"video_track_timescale": "90000"}),
    Layout("fps12_movie_timescale_600", fps=12, seconds=3, options={"movie_timescale": "600"}),
    Layout("anamorphic_4_3", sample_aspect=Fraction(4, 3)),
    Layout("no_editlist_bframes", bframes=2, audio_codec="aac", options={"use_editlist": "0"}),
    Layout("all_intra", gop=1),
]


# --- the corpus, written once per session --------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    expected: str  # "accepted", "accepted_with_warnings" or "refused: <words in the reason>"
    ref: Reference | None  # PyAV's reading, for files a player plays


@pytest.fixture(scope="session")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mp4_corpus")
    return {layout.name: encode(layout, folder / f"{layout.name}{layout.suffix}") for layout in LAYOUTS}


@pytest.fixture(scope="session")
def references(encoded: dict[str, Path]) -> dict[str, Reference]:
    return {name: reference(path) for name, path in encoded.items()}


def run(data: bytes, chunk_size: int = 64 * 1024) -> Mp4Info | str:
    """The info, or "refused: <reason>", so verdicts can be compared with ==."""
    checker = Mp4Checker()
    view = memoryview(data)
    try:
        for i in range(0, len(view), chunk_size):
            checker.feed(view[i : i + chunk_size])
        return checker.finish()
    except InvalidMp4 as exc:
        return f"refused: {exc.message}"


def close_to(got: float | None, want: float) -> bool:
    """Within 1 % or 50 ms of the reference, whichever is looser."""
    return got is not None and abs(got - want) <= max(0.05, 0.01 * want)


def agrees(info: Mp4Info, ref: Reference) -> bool:
    return close_to(info.duration_seconds, ref.duration_seconds) and (
        info.width,
        info.height,
        info.rotation,
    ) == (ref.width, ref.height, ref.rotation)


# --- valid layouts ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_encoder_layout_is_accepted_with_what_a_player_shows(
    layout: Layout, encoded: dict[str, Path], references: dict[str, Reference]
) -> None:
    # GIVEN a file FFmpeg wrote in this layout, and what FFmpeg's demuxer reads from it
    data = encoded[layout.name].read_bytes()
    ref = references[layout.name]
    # WHEN it is checked
    info = run(data)
    # THEN it is accepted without a warning, with the reference's duration, size and rotation
    assert isinstance(info, Mp4Info), info
    assert info.warnings == ()
    assert close_to(info.duration_seconds, ref.duration_seconds), (info, ref)
    assert (info.width, info.height, info.rotation) == (ref.width, ref.height, ref.rotation), (info, ref)


def test_the_corpus_covers_the_layouts_the_check_must_accept(references: dict[str, Reference]) -> None:
    # GIVEN the corpus  WHEN its references are read
    # THEN it holds at least 30 layouts, rotated and audio-only files among them
    assert len(references) >= 30
    assert {ref.rotation for ref in references.values()} >= {0, 90, 180, 270}
    assert any(ref.width is None for ref in references.values())


# --- damaged variants ---------------------------------------------------------------------------


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, start, size, header length) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, typ = struct.unpack(">I4s", data[i : i + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = end - i
        yield typ, i, size, header
        i += size


def find(data: bytes, path: str, nth: int = 0) -> tuple[int, int, int]:
    """(start, size, header length) of the nth box at `path` (e.g. "moov/trak/mdia/minf/stbl/stco")."""
    found = []

    def walk(parts: list[bytes], start: int, end: int) -> None:
        for typ, at, size, header in boxes(data, start, end):
            if typ == parts[0]:
                if len(parts) == 1:
                    found.append((at, size, header))
                else:
                    walk(parts[1:], at + header, at + size)

    walk([p.encode() for p in path.split("/")], 0, len(data))
    return found[nth]


def put32(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + struct.pack(">I", value & 0xFFFFFFFF) + data[at + 4 :]


def get32(data: bytes, at: int) -> int:
    return int(struct.unpack(">I", data[at : at + 4])[0])


STBL = "moov/trak/mdia/minf/stbl"


def shift_offsets(data: bytes, delta: int) -> bytes:
    """Absolute file offsets (stco entries, tfhd base offsets) moved by `delta`, as a muxer would."""
    out = bytearray(data)
    for nth in range(8):
        try:
            at, _, header = find(data, f"{STBL}/stco", nth)
        except IndexError:
            break
        count = get32(data, at + header + 4)
        for k in range(count):
            entry = at + header + 8 + 4 * k
            out[entry : entry + 4] = struct.pack(">I", get32(data, entry) + delta)
    return bytes(out)


def insert_free_before_ftyp(kind: bytes, payload: bytes) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        extra = struct.pack(">I4s", 8 + len(payload), kind) + payload
        return extra + shift_offsets(data, len(extra))

    return edit


def truncate_at(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


def add_to_stco(delta: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, _, header = find(data, f"{STBL}/stco")
        entry = at + header + 8
        return put32(data, entry, get32(data, entry) + delta)

    return edit


def stco_into_moov(data: bytes) -> bytes:
    at, _, header = find(data, f"{STBL}/stco")
    moov, _, _ = find(data, "moov")
    return put32(data, at + header + 8, moov + 16)


def stco_into_mdat_header(data: bytes) -> bytes:
    at, _, header = find(data, f"{STBL}/stco")
    mdat, _, _ = find(data, "mdat")
    return put32(data, at + header + 8, mdat + 4)


def stsz_count(new: Callable[[int], int]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, _, header = find(data, f"{STBL}/stsz")
        return put32(data, at + header + 8, new(get32(data, at + header + 8)))

    return edit


def stsz_entry_huge(data: bytes) -> bytes:
    at, _, header = find(data, f"{STBL}/stsz")
    return put32(data, at + header + 12 + 4 * 3, 0x00FFFFFF)


def stsc_more_per_chunk(data: bytes) -> bytes:
    at, _, header = find(data, f"{STBL}/stsc")
    entry = at + header + 8 + 4
    return put32(data, entry, get32(data, entry) + 50)


def trun_field(offset_in_body: int, new: Callable[[int], int]) -> Callable[[bytes], bytes]:
    """Change a 32-bit field of the first trun (body offset after the 8-byte box header)."""

    def edit(data: bytes) -> bytes:
        at, _, header = find(data, "moof/traf/trun")
        return put32(data, at + header + offset_in_body, new(get32(data, at + header + offset_in_body)))

    return edit


def tfhd_base_offset(data: bytes) -> bytes:
    at, _, header = find(data, "moof/traf/tfhd")
    assert get32(data, at + header) & 1, "this layout writes a base data offset"
    return data[: at + header + 8] + struct.pack(">Q", 10**7) + data[at + header + 16 :]


def resize(path: str, delta: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, size, _ = find(data, path)
        return put32(data, at, size + delta)

    return edit


def retype(path: str, new: bytes) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, _, _ = find(data, path)
        return data[: at + 4] + new + data[at + 8 :]

    return edit


def cut_box(path: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, size, _ = find(data, path)
        return data[:at] + data[at + size :]

    return edit


def cut_at_box(path: str, nth: int = 0, inside: int = 0) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, _, _ = find(data, path, nth)
        return data[: at + inside]

    return edit


def append_moov(data: bytes) -> bytes:
    at, size, _ = find(data, "moov")
    return data + data[at : at + size]


def moov_zero_terminator(data: bytes) -> bytes:
    """QuickTime's 32-bit zero closing moov's list of boxes (moov last, so no offset moves)."""
    at, size, _ = find(data, "moov")
    assert at + size == len(data)
    return put32(data, at, size + 4) + bytes(4)


def mdat_64_bit(data: bytes) -> bytes:
    """free (8 bytes) + mdat header become one 16-byte 64-bit mdat header: the payload stays put."""
    free, free_size, _ = find(data, "free")
    mdat, size, _ = find(data, "mdat")
    assert free_size == 8 and mdat == free + 8
    return data[:free] + struct.pack(">I4sQ", 1, b"mdat", size + 8) + data[mdat + 8 :]


def mdat_size_0(data: bytes) -> bytes:
    at, size, _ = find(data, "mdat")
    assert at + size == len(data)
    return put32(data, at, 0)


def one_box_size(path: str, value: int) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        at, _, _ = find(data, path)
        return put32(data, at, value)

    return edit


def write_webm(folder: Path) -> bytes:
    path = encode(Layout("webm", container="webm", video_codec="libvpx-vp9", seconds=1), folder / "x.webm")
    return path.read_bytes()


HTML = b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>Link expired</body></html>\n"
JSON = b'{"code": 404, "msg": "the video has expired", "data": null}'
XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>'

FASTSTART = "h264_aac_faststart"
MOOV_AT_END = "h264_aac_moov_at_end"
FRAGMENTED = "frag_keyframe_empty_moov"
FRAG_IN_MOOV = "frag_keyframe"
Edit = Callable[[bytes], bytes]

# name -> (base layout, edit, expected verdict); "refused: words" must appear in the reason.
DAMAGED: dict[str, tuple[str, Edit, str]] = {
    **{
        f"truncated_moov_at_end_{int(f * 100)}pct": (MOOV_AT_END, truncate_at(f), "refused: truncated")
        for f in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99)
    },
    **{
        f"truncated_faststart_{int(f * 100)}pct": (FASTSTART, truncate_at(f), "refused: truncated")
        for f in (0.02, 0.05, 0.5, 0.999)
    },
    **{
        f"truncated_fragmented_{int(f * 100)}pct": (FRAGMENTED, truncate_at(f), "refused: truncated")
        for f in (0.01, 0.4, 0.8, 0.995)
    },
    "truncated_inside_second_moof": (FRAGMENTED, cut_at_box("moof", 1, inside=40), "refused: truncated"),
    "truncated_before_moov": (MOOV_AT_END, cut_at_box("moov"), "refused: no moov"),
    "truncated_after_moov_no_mdat": (FASTSTART, cut_at_box("mdat"), "refused: no media data"),
    "cut_at_a_fragment_boundary": (FRAGMENTED, cut_at_box("moof", 3), "accepted"),
    "stco_offset_garbled": (FASTSTART, add_to_stco(10**6), "refused: outside the media data"),
    "stco_offset_into_moov": (MOOV_AT_END, stco_into_moov, "refused: outside the media data"),
    "stco_offset_into_mdat_header": (FASTSTART, stco_into_mdat_header, "refused: outside the media data"),
    "stsz_count_larger": (FASTSTART, stsz_count(lambda n: n + 1000), "refused: declares"),
    "stsz_count_smaller": (MOOV_AT_END, stsz_count(lambda n: n // 2), "refused: more samples"),
    "stsz_entry_huge": (FASTSTART, stsz_entry_huge, "refused: outside the media data"),
    "stsc_samples_per_chunk_garbled": (MOOV_AT_END, stsc_more_per_chunk, "refused"),
    "trun_data_offset_garbled": (
        FRAGMENTED,
        trun_field(8, lambda v: v + 100_000),
        "refused: outside the media data",
    ),
    "trun_sample_count_garbled": (FRAGMENTED, trun_field(4, lambda v: v + 5000), "refused: declares"),
    "tfhd_base_offset_garbled": (FRAG_IN_MOOV, tfhd_base_offset, "refused: outside the media data"),
    "second_moov_appended": (FASTSTART, append_moov, "refused: second moov"),
    "file_joined_to_itself": (FASTSTART, lambda d: d + d, "refused: second ftyp"),
    "fragmented_joined_to_itself": (FRAGMENTED, lambda d: d + d, "refused: second ftyp"),
    "trak_size_past_moov": (FASTSTART, resize("moov/trak", 64), "refused: overruns its parent"),
    "moov_size_shrunk": (FASTSTART, resize("moov", -16), "refused: overruns its parent"),
    "mdat_size_past_the_end": (MOOV_AT_END, resize("mdat", 10**6), "refused: truncated"),
    "mvhd_size_below_8": (FASTSTART, one_box_size("moov/mvhd", 4), "refused: smaller than its 8-byte header"),
    "moov_removed": (MOOV_AT_END, cut_box("moov"), "refused: no moov"),
    "moov_type_garbled": (FASTSTART, retype("moov", b"moox"), "refused: no moov"),
    "mdat_type_garbled": (FASTSTART, retype("mdat", b"mdaX"), "refused"),
    "ftyp_only": (FASTSTART, lambda d: d[: find(d, "ftyp")[1]], "refused: no moov"),
    "html_error_page": (FASTSTART, lambda d: HTML, "refused: not an MP4"),
    "json_error": (FASTSTART, lambda d: JSON, "refused: not an MP4"),
    "xml_error": (FASTSTART, lambda d: XML, "refused: not an MP4"),
    "empty": (FASTSTART, lambda d: b"", "refused: empty stream"),
    "known_box_cut_short_after_the_end": (
        FASTSTART,
        lambda d: d + struct.pack(">I4s", 5000, b"moof") + struct.pack(">I4sII", 16, b"mfhd", 0, 1),
        "refused: truncated",
    ),
    # Tolerated, with a warning: players play these.
    "leading_free_box": (FASTSTART, insert_free_before_ftyp(b"free", b""), "accepted_with_warnings"),
    "leading_wide_box": (MOOV_AT_END, insert_free_before_ftyp(b"wide", b""), "accepted_with_warnings"),
    "leading_skip_box_with_payload": (
        FASTSTART,
        insert_free_before_ftyp(b"skip", bytes(100)),
        "accepted_with_warnings",
    ),
    "appended_3_bytes": (FASTSTART, lambda d: d + b"\n\r\n", "accepted_with_warnings"),
    "appended_zero_padding": (MOOV_AT_END, lambda d: d + bytes(1024), "accepted_with_warnings"),
    "appended_html_page": (FRAGMENTED, lambda d: d + HTML, "accepted_with_warnings"),
    "appended_7_bytes_of_a_header": (
        FASTSTART,
        lambda d: d + b"\x00\x00\x10\x00moo",
        "accepted_with_warnings",
    ),
    # Accepted as they are.
    "moov_zero_terminator": (MOOV_AT_END, moov_zero_terminator, "accepted"),
    "mdat_64_bit_size": (MOOV_AT_END, mdat_64_bit, "accepted"),
    "mdat_size_0_to_the_end": (FASTSTART, mdat_size_0, "accepted"),
    "unknown_top_level_box": (
        FASTSTART,
        lambda d: d + struct.pack(">I4s", 108, b"abcd") + bytes(100),
        "accepted",
    ),
}


@pytest.fixture(scope="session")
def damaged(encoded: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sample]:
    folder = tmp_path_factory.mktemp("mp4_damaged")
    samples = {}
    for name, (base, edit, expected) in DAMAGED.items():
        data = edit(encoded[base].read_bytes())
        ref = None
        if not expected.startswith("refused"):
            path = folder / f"{name}.mp4"
            path.write_bytes(data)
            ref = reference(path)
        samples[name] = Sample(name, data, expected, ref)
    samples["webm"] = Sample("webm", write_webm(folder), "refused: not an MP4", None)
    return samples


DAMAGED_NAMES = [*DAMAGED, "webm"]


@pytest.mark.parametrize("name", DAMAGED_NAMES)
def test_damaged_variant_gets_its_verdict(name: str, damaged: dict[str, Sample]) -> None:
    # GIVEN a byte edit of real encoder output (or a page that is not a video)
    sample = damaged[name]
    # WHEN it is checked
    got = run(sample.data)
    # THEN the verdict is the expected one; a refusal says why in words, and a file that is
    # accepted reads as PyAV reads it
    if sample.expected.startswith("refused"):
        assert isinstance(got, str), got
        assert sample.expected.removeprefix("refused").lstrip(": ") in got, got
        return
    assert isinstance(got, Mp4Info), got
    assert got.verdict == sample.expected, got.warnings
    assert sample.ref is not None and agrees(got, sample.ref), (got, sample.ref)


def test_there_are_enough_damaged_variants() -> None:
    # GIVEN the damaged variants  THEN there are at least 30, most of them refused
    assert len(DAMAGED_NAMES) >= 30
    assert sum(v[2].startswith("refused") for v in DAMAGED.values()) >= 30


# Byte by byte costs about 2 us a byte: one file of each structure rather than all of them.
BYTE_BY_BYTE = {
    "h264_faststart", "h264_bframes_faststart", "frag_every_frame", "frag_dash_global_sidx",
    "rotation_90_fragmented", "mpeg4", "hevc", "audio_only_fragmented", "fps12_movie_timescale_600",
    "truncated_faststart_50pct", "stco_offset_garbled", "leading_wide_box", "appended_html_page",
    "moov_zero_terminator", "mdat_64_bit_size", "mdat_size_0_to_the_end", "appended_7_bytes_of_a_header",
    "trun_data_offset_garbled", "html_error_page", "empty", "known_box_cut_short_after_the_end",
}  # fmt: skip


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_chunk_size_does_not_change_any_verdict(
    chunk_size: int, encoded: dict[str, Path], damaged: dict[str, Sample]
) -> None:
    # GIVEN every corpus file and damaged variant (byte by byte: one of each structure), and its
    # verdict when fed whole
    files = {name: path.read_bytes() for name, path in encoded.items()}
    files.update({name: sample.data for name, sample in damaged.items()})
    if chunk_size == 1:
        files = {name: data for name, data in files.items() if name in BYTE_BY_BYTE}
        assert len(files) == len(BYTE_BY_BYTE)
    # WHEN each is fed in chunks of this size
    # THEN the verdict and what was read are identical
    differing = [name for name, data in files.items() if run(data, chunk_size) != run(data, len(data) or 1)]
    assert differing == []


# --- the table for the issue note -------------------------------------------------------------


def corpus_table(encoded: dict[str, Path], damaged: dict[str, Sample]) -> list[str]:
    """One line per file: name -> verdict, duration and size vs PyAV's reading."""

    def describe(info: Mp4Info | str, ref: Reference | None) -> str:
        if isinstance(info, str):
            return f"| {info[:90]} | | |"
        ours = f"{info.duration_seconds:.3f} s, {info.width}x{info.height} r{info.rotation}"
        theirs = f"{ref.duration_seconds:.3f} s, {ref.width}x{ref.height} r{ref.rotation}" if ref else ""
        verdict = info.verdict + (f" ({'; '.join(info.warnings)})"[:90] if info.warnings else "")
        return f"| {verdict} | {ours} | {theirs} |"

    lines = ["| file | verdict | check: duration, size | PyAV reference |", "|---|---|---|---|"]
    for name, path in encoded.items():
        lines.append(f"| {name} {describe(run(path.read_bytes()), reference(path))}")
    for name, sample in damaged.items():
        lines.append(f"| {name} {describe(run(sample.data), sample.ref)}")
    return lines


if __name__ == "__main__":  # python -m tests.unit.test_mp4_corpus: print the corpus table
    import tempfile

    class _Factory:
        def __init__(self, root: str) -> None:
            self.root = Path(root)

        def mktemp(self, name: str) -> Path:
            path = self.root / name
            path.mkdir()
            return path

    with tempfile.TemporaryDirectory() as root:
        factory = _Factory(root)
        files = encoded.__wrapped__(factory)  # type: ignore[attr-defined]
        variants = damaged.__wrapped__(files, factory)  # type: ignore[attr-defined]
        sys.stdout.write("\n".join(corpus_table(files, variants)) + "\n")
