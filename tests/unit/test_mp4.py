"""The streaming MP4 check: fixture verdicts, chunking independence, synthetic edge cases,
robustness on garbage (hypothesis) and bounded memory on a huge mdat."""

from __future__ import annotations

import contextlib
import itertools
import struct
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit.media import box, ftyp, mdat, moov, mvhd, trak
from testkit.media import full_box as full
from videohook.errors import InvalidMp4
from videohook.mp4 import LEAF_PREFIX_CAP, Mp4Checker, Mp4Info, check_file

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# --- helpers --------------------------------------------------------------------------------


def run(chunks: Iterable[bytes | memoryview]) -> Mp4Info:
    """Feed the chunks in order and finish: the way the transfer uses the checker."""
    checker = Mp4Checker()
    for chunk in chunks:
        checker.feed(chunk)
    return checker.finish()


def split(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def verdict(data: bytes, chunk_size: int | None = None) -> Mp4Info | str:
    """The info, or the InvalidMp4 reason, so verdicts can be compared with ==."""
    try:
        return run([data] if chunk_size is None else split(data, chunk_size))
    except InvalidMp4 as exc:
        return f"invalid: {exc.message}"


def simple() -> bytes:
    return ftyp() + moov() + mdat()


def fragmented(*, with_mehd: bool = False) -> bytes:
    """ftyp, moov (duration 0, mvex), three moof/mdat pairs, mfra: a compact fragmented file.

    Video track 1, timescale 12800: fragment 1 uses the trex default duration (25 x 512 = 1 s),
    fragment 2 the tfhd default (10 x 1280 = 1 s), fragment 3 per-sample durations
    (4 x 1600 = 0.5 s): 2.5 s in all.
    """
    mvex = box(b"mvex", full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 512, 0, 0)))
    if with_mehd:
        mvex = box(b"mvex", full(b"mehd", 0, 0, struct.pack(">I", 7000)) + mvex[8:])
    head = ftyp() + box(b"moov", mvhd(1000, 0) + trak(1, b"vide", 12800, width=320, height=240) + mvex)

    def fragment(seq: int, tfhd: bytes, trun: Callable[[int], bytes], media: int) -> bytes:
        """A moof and its mdat; `trun(offset)` gets the data offset of the mdat's payload."""
        mfhd = full(b"mfhd", 0, 0, struct.pack(">I", seq))
        moof_size = len(box(b"moof", mfhd + box(b"traf", tfhd + trun(0))))
        return box(b"moof", mfhd + box(b"traf", tfhd + trun(moof_size + 8))) + mdat(media)

    frag1 = fragment(
        1,
        full(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),
        lambda offset: full(b"trun", 0, 0x201, struct.pack(">Ii", 25, offset) + struct.pack(">I", 10) * 25),
        250,
    )
    frag2 = fragment(
        2,
        full(b"tfhd", 0, 0x020008, struct.pack(">II", 1, 1280)),
        lambda offset: full(b"trun", 0, 0x000, struct.pack(">I", 10)),
        64,
    )
    samples = b"".join(struct.pack(">IIi", 1600, 10, -5) for _ in range(4))
    frag3 = fragment(
        3,
        full(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),
        lambda offset: full(b"trun", 1, 0xB05, struct.pack(">IiI", 4, offset, 0x2000000) + samples),
        64,
    )
    mfra = box(b"mfra", full(b"tfra", 1, 0, bytes(12)) + full(b"mfro", 0, 0, struct.pack(">I", 16 + 20)))
    return head + frag1 + frag2 + frag3 + mfra


def rejected(data: bytes, chunk_size: int | None = None) -> str:
    """Feed and finish, expecting InvalidMp4; return its reason."""
    with pytest.raises(InvalidMp4) as caught:
        run([data] if chunk_size is None else split(data, chunk_size))
    return caught.value.message


def rejected_by_feed(data: bytes) -> str:
    """Expect `feed` itself (not `finish`) to refuse the bytes: an early, streaming rejection."""
    checker = Mp4Checker()
    with pytest.raises(InvalidMp4) as caught:
        checker.feed(data)
    return caught.value.message


# --- fixtures -------------------------------------------------------------------------------

VALID_FIXTURES = [
    ("faststart.mp4", 4.0, 320, 240),
    ("moov_at_end.mp4", 3.0, 640, 360),
    ("fragmented.mp4", 4.08, 320, 240),
]
INVALID_FIXTURES = [
    ("truncated.mp4", "stream ends inside mdat"),
    ("no_moov.mp4", "no moov"),
    ("not_mp4.html", "not an MP4: first box is not ftyp"),
]
ALL_FIXTURES = [name for name, *_ in VALID_FIXTURES] + [name for name, _ in INVALID_FIXTURES]


@pytest.mark.parametrize(("name", "duration", "width", "height"), VALID_FIXTURES)
def test_valid_fixture_is_accepted_with_its_info(name: str, duration: float, width: int, height: int) -> None:
    # GIVEN a real ffmpeg-made MP4 from tests/fixtures
    path = FIXTURES / name
    # WHEN the whole file is checked in 64 KiB chunks
    info = check_file(path)
    # THEN it is valid and the duration and video size are read from it
    assert info.duration_seconds == pytest.approx(duration, abs=0.05)
    assert (info.width, info.height) == (width, height)


@pytest.mark.parametrize(("name", "reason"), INVALID_FIXTURES)
def test_invalid_fixture_is_rejected_with_a_reason_in_words(name: str, reason: str) -> None:
    # GIVEN a broken or foreign file from tests/fixtures
    path = FIXTURES / name
    # WHEN it is checked
    with pytest.raises(InvalidMp4) as caught:
        check_file(path)
    # THEN the reason says what is wrong, and the error is the non-retryable invalid_mp4
    assert reason in caught.value.message
    assert caught.value.code == "invalid_mp4"
    assert caught.value.retryable is False


def test_html_error_page_is_refused_by_the_first_feed() -> None:
    # GIVEN the expired-link HTML page a source sends instead of a video
    data = (FIXTURES / "not_mp4.html").read_bytes()
    # WHEN only its first 8 bytes are fed
    reason = rejected_by_feed(data[:8])
    # THEN the checker refuses at once, before the end of the stream
    assert reason.startswith("not an MP4: first box is not ftyp")


@pytest.mark.parametrize("name", ALL_FIXTURES)
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, None])
def test_chunk_size_does_not_change_the_verdict(name: str, chunk_size: int | None) -> None:
    # GIVEN a fixture and its verdict when fed whole
    data = (FIXTURES / name).read_bytes()
    expected = verdict(data)
    # WHEN it is fed in chunks of 1, 7 or 4096 bytes (None: whole)
    got = verdict(data, chunk_size)
    # THEN the verdict and the info are the same
    assert got == expected


def test_memoryview_chunks_are_accepted_and_bytes_are_counted() -> None:
    # GIVEN a valid file as memoryview slices
    data = (FIXTURES / "faststart.mp4").read_bytes()
    view = memoryview(data)
    checker = Mp4Checker()
    # WHEN it is fed as views
    for i in range(0, len(data), 1000):
        checker.feed(view[i : i + 1000])
    # THEN it is valid and every byte was counted
    assert checker.finish().width == 320
    assert checker.bytes_seen == len(data) == 58000


# --- synthetic files ------------------------------------------------------------------------


def test_synthetic_simple_file_reads_mvhd_duration_and_video_track_size() -> None:
    # GIVEN ftyp, moov (2 s, audio track first, then a 640x360 video track), mdat
    data = simple()
    # WHEN checked
    info = verdict(data)
    # THEN the duration comes from mvhd and the size from the 'vide' track's tkhd
    assert info == Mp4Info(duration_seconds=2.0, width=640, height=360)


def test_mvhd_version_1_is_read() -> None:
    # GIVEN a moov whose mvhd is version 1 (64-bit times)
    data = ftyp() + box(b"moov", mvhd(90000, 90000 * 7, version=1)) + mdat()
    # WHEN checked
    info = verdict(data)
    # THEN the 64-bit duration is used; there is no track so no size
    assert info == Mp4Info(duration_seconds=7.0, width=None, height=None)


def test_64_bit_mdat_size_is_accepted() -> None:
    # GIVEN an mdat written with size field 1 and a 64-bit largesize
    data = ftyp() + moov() + box(b"mdat", bytes(5000), large=True)
    # WHEN checked in odd chunks
    info = verdict(data, 7)
    # THEN it is valid
    assert isinstance(info, Mp4Info)
    assert info.duration_seconds == 2.0


def test_64_bit_size_smaller_than_its_header_is_rejected() -> None:
    # GIVEN a box with size field 1 and a largesize of 12 (< 16-byte header)
    data = ftyp() + struct.pack(">I4sQ", 1, b"mdat", 12) + bytes(100)
    # WHEN fed
    # THEN feed refuses it
    assert "smaller than its 16-byte header" in rejected_by_feed(data)


def test_last_box_with_size_0_runs_to_the_end() -> None:
    # GIVEN a last mdat with size 0 (its payload runs to the end of the stream)
    data = ftyp() + moov() + box(b"mdat", bytes(3000), size=0)
    # WHEN checked, whole and byte by byte
    # THEN it is valid both ways
    assert verdict(data) == verdict(data, 1) == Mp4Info(2.0, 640, 360)


def test_size_0_box_swallows_what_follows() -> None:
    # GIVEN an mdat with size 0 that is not really last: moov follows it
    data = ftyp() + box(b"mdat", bytes(3000), size=0) + moov()
    # WHEN checked
    reason = rejected(data)
    # THEN the moov is part of the mdat's payload, so there is no moov
    assert "no moov" in reason


def test_empty_mdat_with_size_0_is_no_media() -> None:
    # GIVEN a last mdat with size 0 and nothing after its header
    data = ftyp() + moov() + box(b"mdat", size=0)
    # WHEN checked
    # THEN there is no media data
    assert "no media data" in rejected(data)


def test_moov_after_mdat_is_valid() -> None:
    # GIVEN the non-faststart layout: ftyp, free, mdat, moov
    data = ftyp() + box(b"free") + mdat(10_000) + moov(4500)
    # WHEN checked
    info = verdict(data, 4096)
    # THEN it is valid and reads the moov that came last
    assert info == Mp4Info(duration_seconds=4.5, width=640, height=360)


def test_child_box_overrunning_its_parent_is_rejected_while_streaming() -> None:
    # GIVEN a moov whose mvhd declares more bytes than the moov holds
    good_mvhd = mvhd(1000, 2000)
    bad_mvhd = struct.pack(">I", len(good_mvhd) + 50) + good_mvhd[4:]
    data = ftyp() + box(b"moov", bad_mvhd) + mdat()
    # WHEN fed
    reason = rejected_by_feed(data)
    # THEN the overrun is named
    assert "moov/mvhd" in reason
    assert "overruns its parent moov" in reason


@pytest.mark.parametrize("size", [2, 7])
def test_size_below_8_is_rejected(size: int) -> None:
    # GIVEN a box whose size field is below its own 8-byte header (and not 0 or 1)
    data = ftyp() + box(b"free", size=size) + moov() + mdat()
    # WHEN fed
    # THEN it is refused
    assert "smaller than its 8-byte header" in rejected_by_feed(data)


def test_non_printable_box_type_inside_moov_is_rejected() -> None:
    # GIVEN a moov holding a box whose type is binary junk
    data = ftyp() + box(b"moov", struct.pack(">I4s", 16, b"\x00\x01\xff\x02") + bytes(8)) + mdat()
    # WHEN fed
    # THEN it is refused as soon as the header is read
    assert "not four printable characters" in rejected_by_feed(data)


def test_non_printable_box_type_at_top_level_ends_the_boxes() -> None:
    # GIVEN ftyp then a header whose type is binary junk, and no moov before it
    data = ftyp() + struct.pack(">I4s", 16, b"\x00\x01\xff\x02") + bytes(8)
    # WHEN checked
    # THEN the junk is trailing bytes, but the file has no moov: refused for that
    assert "no moov" in rejected(data)


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        (b"\x00\x00\x10\x00free....", "truncated: stream ends inside free"),
        (b"\x00\x00\x10\x00moof" + full(b"mfhd", 0, 0, bytes(4)), "truncated: stream ends inside moof"),
        (
            struct.pack(">I4sQ", 1, b"mdat", 1 << 40)[:12],
            "truncated: stream ends inside the header of a mdat",
        ),
    ],
)
def test_known_top_level_box_cut_short_at_the_end_is_refused(garbage: bytes, expected: str) -> None:
    # GIVEN a valid file followed by the start of a known top-level box that the stream cuts short
    data = simple() + garbage
    # WHEN checked
    reason = rejected(data)
    # THEN the stream is refused as truncated
    assert expected in reason


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        (b"junk", "4 bytes after the last box"),
        (bytes(3), "3 bytes after the last box"),
        (bytes(512), "512 bytes after the last box"),
        (b"\x00\x00\x00\x10\xde\xad\xbe\xef" + bytes(8), "16 bytes after the last box"),
        (b"<!DOCTYPE html><html>gone</html>", "32 bytes after the last box"),
        (b"\x00\x00\x10\x00abcd" + bytes(20), "28 bytes after the last box"),
    ],
)
def test_trailing_bytes_that_cannot_be_a_box_are_accepted_with_a_warning(
    garbage: bytes, expected: str
) -> None:
    # GIVEN a valid file followed by bytes that cannot be the start of a known box cut short
    data = simple() + garbage
    # WHEN checked, whole and byte by byte
    info = verdict(data)
    # THEN it is accepted, with the trailing bytes named in a warning
    assert isinstance(info, Mp4Info) and info.verdict == "accepted_with_warnings"
    assert len(info.warnings) == 1 and expected in info.warnings[0]
    assert verdict(data, 1) == info


def test_stray_bytes_at_the_end_of_a_container_are_rejected() -> None:
    # GIVEN a moov that ends with 3 bytes that cannot hold a child box
    data = ftyp() + box(b"moov", mvhd(1000, 2000) + b"xyz") + mdat()
    # WHEN fed
    # THEN it is refused
    assert "3 stray bytes at the end of moov" in rejected_by_feed(data)


def test_stream_ending_inside_moov_is_truncated() -> None:
    # GIVEN a faststart-like file cut inside its moov
    data = simple()
    cut = data[: len(ftyp()) + 300]
    # WHEN checked
    reason = rejected(cut)
    # THEN the reason names the box the stream ended in
    assert reason.startswith("truncated: stream ends inside moov/trak")
    assert "moov at byte 32 declares" in reason


def test_every_proper_prefix_of_a_valid_file_is_rejected() -> None:
    # GIVEN a valid file whose last box is its mdat
    data = simple()
    # WHEN any proper prefix of it is checked
    # THEN every one is refused (never accepted, never another exception)
    for end in range(len(data)):
        with pytest.raises(InvalidMp4):
            run([data[:end]])


def test_empty_stream_is_rejected() -> None:
    # GIVEN no bytes at all
    # WHEN finished at once (also after an empty chunk)
    # THEN it is refused as empty
    assert "empty stream" in rejected(b"")
    assert "empty stream" in rejected(b"", 1)


def test_a_few_bytes_of_ftyp_are_too_short() -> None:
    # GIVEN 5 bytes, not even a box header
    # WHEN checked
    # THEN refused as too short to be an MP4
    assert "not an MP4" in rejected(ftyp()[:5])


def test_stream_of_only_ftyp_is_rejected() -> None:
    # GIVEN a complete ftyp and nothing else
    # WHEN checked
    # THEN the moov is missing
    assert "no moov" in rejected(ftyp())


def test_moov_without_media_is_rejected() -> None:
    # GIVEN ftyp and moov and an empty mdat
    data = ftyp() + moov() + box(b"mdat")
    # WHEN checked
    # THEN there is no media data
    assert "no media data" in rejected(data)


def test_mdat_nested_below_top_level_does_not_count_as_media() -> None:
    # GIVEN an mdat hidden inside a free box, and none at top level
    data = ftyp() + moov() + box(b"free", mdat(100))
    # WHEN checked
    # THEN there is no media data
    assert "no media data" in rejected(data)


def test_two_moov_boxes_are_rejected() -> None:
    # GIVEN a file with two moov boxes
    data = ftyp() + moov() + mdat() + moov()
    # WHEN fed
    # THEN the second moov is refused
    assert "second moov" in rejected_by_feed(data)


def test_too_short_mvhd_is_rejected() -> None:
    # GIVEN an mvhd with only 10 bytes of content
    data = ftyp() + box(b"moov", full(b"mvhd", 0, 0, bytes(6))) + mdat()
    # WHEN fed
    # THEN it is refused as too short
    assert "moov/mvhd box is too short" in rejected_by_feed(data)


def test_fragmented_duration_is_summed_from_fragments() -> None:
    # GIVEN a fragmented file with mvhd duration 0, no mehd, and sample durations given by
    # trex defaults, tfhd defaults and per-sample trun entries
    data = fragmented()
    # WHEN checked whole and byte by byte
    info = verdict(data)
    # THEN the duration is the track's summed sample durations over its mdhd timescale
    # (the last fragment's samples are shown 5 ticks early: composition offset -5)
    assert isinstance(info, Mp4Info) and (info.width, info.height, info.warnings) == (320, 240, ())
    assert info.duration_seconds == pytest.approx(2.5 - 5 / 12800)
    assert verdict(data, 1) == info


def test_fragmented_duration_comes_from_the_samples_not_from_mehd() -> None:
    # GIVEN a fragmented file whose mvex has a mehd of 7 s (mvhd timescale 1000) for 2.5 s of samples
    data = fragmented(with_mehd=True)
    # WHEN checked
    info = verdict(data)
    # THEN the samples give the duration: a header that disagrees does not win
    assert isinstance(info, Mp4Info) and info.duration_seconds == pytest.approx(2.5, abs=0.001)


def test_trun_declaring_more_samples_than_it_holds_is_rejected() -> None:
    # GIVEN a trun claiming 1000 samples of 8 bytes in a 20-byte box
    trun = full(b"trun", 0, 0x300, struct.pack(">I", 1000) + bytes(8))
    moof = box(b"moof", box(b"traf", full(b"tfhd", 0, 0, struct.pack(">I", 1)) + trun))
    data = ftyp() + moov() + moof + mdat()
    # WHEN fed
    # THEN it is refused
    assert "declares 1000 samples" in rejected_by_feed(data)


def test_error_is_sticky() -> None:
    # GIVEN a checker that has refused a stream
    checker = Mp4Checker()
    with pytest.raises(InvalidMp4):
        checker.feed(b"<!DOCTYPE html>")
    # WHEN it is fed again or finished
    # THEN it keeps raising the same reason
    with pytest.raises(InvalidMp4, match="first box is not ftyp"):
        checker.feed(b"more")
    with pytest.raises(InvalidMp4, match="first box is not ftyp"):
        checker.finish()


# --- robustness -----------------------------------------------------------------------------

ROBUST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_only_invalid_mp4_escapes(data: bytes, chunk_size: int) -> None:
    with contextlib.suppress(InvalidMp4):
        run(split(data, chunk_size))


@ROBUST
@given(data=st.binary(max_size=2000), chunk_size=st.integers(1, 64))
def test_random_bytes_raise_only_invalid_mp4(data: bytes, chunk_size: int) -> None:
    # GIVEN any bytes, fed in any chunk size
    # WHEN checked
    # THEN the only possible exception is InvalidMp4 (no IndexError, struct.error...)
    check_only_invalid_mp4_escapes(data, chunk_size)


@ROBUST
@given(body=st.binary(max_size=2000), chunk_size=st.integers(1, 64))
def test_random_bytes_after_ftyp_raise_only_invalid_mp4(body: bytes, chunk_size: int) -> None:
    # GIVEN a real ftyp followed by any bytes (so the parser gets past the first check)
    # WHEN checked
    # THEN the only possible exception is InvalidMp4
    check_only_invalid_mp4_escapes(ftyp() + body, chunk_size)


SEEDS = {
    "simple": simple(),
    "fragmented": fragmented(),
    "faststart_head": (FIXTURES / "faststart.mp4").read_bytes()[:4718] + box(b"mdat", bytes(64)),
}


@ROBUST
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    mutations=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    chunk_size=st.sampled_from([1, 3, 8, 13, 4096]),
)
def test_mutated_valid_files_raise_only_invalid_mp4(
    seed: str, mutations: list[tuple[float, int]], cut: float | None, chunk_size: int
) -> None:
    # GIVEN a valid file with random bytes overwritten and perhaps cut short
    data = bytearray(SEEDS[seed])
    for where, value in mutations:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    # WHEN checked
    # THEN the result is a verdict: info or InvalidMp4, nothing else
    check_only_invalid_mp4_escapes(bytes(data), chunk_size)


@ROBUST
@given(cuts=st.lists(st.integers(0, len(SEEDS["fragmented"])), max_size=20))
def test_any_split_of_a_valid_file_gives_the_same_info(cuts: list[int]) -> None:
    # GIVEN a valid fragmented file split at arbitrary points
    data = SEEDS["fragmented"]
    points = [0, *sorted(cuts), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    # WHEN fed chunk by chunk
    # THEN the info is the same as fed whole
    assert run(chunks) == verdict(data)


# --- bounded memory -------------------------------------------------------------------------


def test_huge_mdat_keeps_memory_bounded() -> None:
    # GIVEN a 200 MB mdat generated chunk by chunk (one reused 1 MiB block, never the whole file)
    mib = 1024 * 1024
    block = bytes(mib)
    total = 200 * mib
    checker = Mp4Checker()
    checker.feed(ftyp() + moov())
    tracemalloc.start()
    try:
        checker.feed(struct.pack(">I4sQ", 1, b"mdat", 16 + total))
        largest_buffer = 0
        for _ in range(total // mib):
            # WHEN each block is fed
            checker.feed(block)
            largest_buffer = max(largest_buffer, checker.buffered_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    info = checker.finish()
    # THEN the stream is valid, the internal buffers stayed tiny and Python allocated < 1 MiB
    assert info.duration_seconds == 2.0
    assert largest_buffer <= LEAF_PREFIX_CAP
    assert peak < mib
    assert checker.bytes_seen == len(ftyp() + moov()) + 16 + total


def test_a_stream_of_empty_boxes_is_refused_past_the_box_cap() -> None:
    # GIVEN a checker with a small box cap, and a hostile stream: ftyp, then empty boxes only
    hostile = ftyp() + box(b"free", b"") * 50_000
    checker = Mp4Checker(max_boxes_base=10_000, boxes_per_mib=1024)
    # WHEN it is fed THEN it is refused in words once the cap is passed, long before the end
    with pytest.raises(InvalidMp4, match="too many boxes") as refused:
        for chunk in split(hostile, 4096):
            checker.feed(chunk)
    boxes = int(str(refused.value).split("too many boxes: ")[1].split()[0])
    assert 10_000 < boxes < 10_200  # base + 1,024 per MiB of the ~80 KB read: refused at once


def test_the_box_cap_grows_with_the_bytes_so_real_files_pass() -> None:
    # GIVEN the same small cap, and a real file of many boxes whose bytes justify them
    checker = Mp4Checker(max_boxes_base=64, boxes_per_mib=1024)
    data = simple() + box(b"free", b"\0" * 1016) * 1000  # 1,000 more boxes in 1 MB
    # WHEN it is fed THEN it is accepted: the allowance is the base plus boxes_per_mib per MiB
    for chunk in split(data, 4096):
        checker.feed(chunk)
    assert checker.finish().duration_seconds is not None
