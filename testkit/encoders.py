"""Real encoder output for the MP4 check: tiny videos written by FFmpeg (through PyAV) in many layouts.

`encode(layout, path)` writes one file; `reference(path)` reads it back with FFmpeg's own
demuxer and returns what a player shows: the duration (ffprobe's "Duration"), the displayed
size (coded size, pixel aspect and rotation applied) and the rotation. The MP4 check's
answers are compared with that reference (docs/stored-video.md). PyAV (`av`) is a test
dependency only: it ships FFmpeg's libraries in its wheel, so no ffmpeg binary is needed.

Files are kept tiny (64x48, a second or three) so that a whole corpus is written in a few
seconds. Pixels and samples are generated, never read from anywhere.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.logging

__all__ = ["Layout", "Reference", "encode", "reference"]

# FFmpeg's encoders (x264, x265) print banners on stderr; errors are raised anyway.
av.logging.set_level(av.logging.ERROR)


@dataclass(frozen=True)
class Layout:
    """One way of writing a file: container, codecs, timing and the muxer's options.

    `movflags` and `options` go to FFmpeg's mov/mp4 muxer (e.g. "frag_keyframe+empty_moov",
    {"frag_duration": "500000"}); `rotation` is a display rotation in degrees counter-clockwise
    (FFmpeg's convention, written as the track header's matrix); `metadata_rotate` writes the
    legacy `rotate` stream tag instead. `video_codec` None makes an audio-only file.
    """

    name: str
    container: str = "mp4"  # FFmpeg muxer name: mp4, mov, ipod (m4v), 3gp
    video_codec: str | None = "libx264"
    audio_codec: str | None = None
    width: int = 64
    height: int = 48
    fps: int | Fraction = 25
    seconds: float = 2.0
    pix_fmt: str = "yuv420p"
    gop: int = 12
    bframes: int = 0
    sample_aspect: Fraction | None = None
    rotation: int = 0
    metadata_rotate: int | None = None
    audio_rate: int = 44100
    movflags: str = ""
    options: dict[str, str] = field(default_factory=dict)
    codec_options: dict[str, str] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return {"mov": ".mov", "ipod": ".m4v", "3gp": ".3gp"}.get(self.container, ".mp4")


@dataclass(frozen=True)
class Reference:
    """What FFmpeg's demuxer reads from a file: what a player shows."""

    duration_seconds: float
    width: int | None
    height: int | None
    rotation: int  # clockwise degrees: 0, 90, 180 or 270


def _video_planes(layout: Layout, index: int) -> list[bytes]:
    """A moving diagonal gradient (so that frames differ and the encoder makes real P-frames)."""
    w, h = layout.width, layout.height
    row = bytes((x * 4) & 0xFF for x in range(w * 2))
    shift = (index * 3) % w
    luma = b"".join(row[(y + shift) % w : (y + shift) % w + w] for y in range(h))
    cw, ch = (w + 1) // 2, (h + 1) // 2
    chroma_u = bytes([(64 + index * 5) & 0xFF]) * (cw * ch)
    chroma_v = bytes([(192 - index * 3) & 0xFF]) * (cw * ch)
    return [luma, chroma_u, chroma_v]


def _fill(frame: av.VideoFrame, planes: list[bytes]) -> None:
    for plane, data in zip(frame.planes, planes, strict=True):
        width = plane.width
        pad = bytes(plane.line_size - width)
        plane.update(b"".join(data[i : i + width] + pad for i in range(0, len(data), width)))


def _add_video(out: Any, layout: Layout) -> Any:
    stream = out.add_stream(layout.video_codec, rate=layout.fps)
    stream.width = layout.width
    stream.height = layout.height
    stream.pix_fmt = layout.pix_fmt
    options = {"g": str(layout.gop), "threads": "1"}  # tiny frames: threads only cost start-up time
    if layout.video_codec in ("libx264", "libx265"):
        options["preset"] = "ultrafast"
        options["bf"] = str(layout.bframes)
        if layout.video_codec == "libx265":
            options["x265-params"] = f"log-level=error:keyint={layout.gop}:bframes={layout.bframes}"
    elif layout.bframes:
        options["bf"] = str(layout.bframes)
    options.update(layout.codec_options)
    stream.codec_context.options = options
    if layout.sample_aspect is not None:
        stream.codec_context.sample_aspect_ratio = layout.sample_aspect
    if layout.rotation:
        stream.set_display_rotation(layout.rotation)
    if layout.metadata_rotate is not None:
        stream.metadata["rotate"] = str(layout.metadata_rotate)
    return stream


def _add_audio(out: Any, layout: Layout) -> Any:
    stream = out.add_stream(layout.audio_codec, rate=layout.audio_rate)
    stream.layout = "mono"
    return stream


def _audio_frames(stream: Any, layout: Layout) -> Any:
    """A 440 Hz tone in frames of the encoder's size (1024 when it takes any)."""
    ctx = stream.codec_context
    fmt = ctx.format.name if ctx.format else "fltp"
    per_frame = ctx.frame_size or 1024
    total = int(layout.seconds * layout.audio_rate)
    done = 0
    while done < total:
        n = min(per_frame, total - done)
        values = [math.sin(2 * math.pi * 440 * (done + i) / layout.audio_rate) * 0.3 for i in range(n)]
        if fmt.startswith("s16"):
            payload = struct.pack(f"<{n}h", *(int(v * 32767) for v in values))
        elif fmt.startswith("s32"):
            payload = struct.pack(f"<{n}i", *(int(v * 2147483647) for v in values))
        else:
            payload = struct.pack(f"<{n}f", *values)
        frame = av.AudioFrame(format=fmt, layout="mono", samples=n)
        frame.planes[0].update(payload + bytes(frame.planes[0].buffer_size - len(payload)))
        frame.sample_rate = layout.audio_rate
        frame.pts = done
        frame.time_base = Fraction(1, layout.audio_rate)
        yield frame
        done += n


def encode(layout: Layout, path: str | Path) -> Path:
    """Write `layout` to `path` with FFmpeg's muxer; returns the path."""
    path = Path(path)
    options = dict(layout.options)
    if layout.movflags:
        options["movflags"] = layout.movflags
    with av.open(str(path), "w", format=layout.container, options=options) as out:
        video = _add_video(out, layout) if layout.video_codec else None
        audio = _add_audio(out, layout) if layout.audio_codec else None
        if video is not None:
            frames = round(layout.seconds * float(layout.fps))
            for i in range(frames):
                frame = av.VideoFrame(layout.width, layout.height, layout.pix_fmt)
                _fill(frame, _video_planes(layout, i))
                frame.pts = i
                frame.time_base = 1 / Fraction(layout.fps)
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        if audio is not None:
            for frame in _audio_frames(audio, layout):
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def reference(path: str | Path) -> Reference:
    """The duration, displayed size and rotation FFmpeg's demuxer reads from `path`."""
    with av.open(str(path)) as container:
        if container.duration is not None:
            duration = container.duration / av.time_base
        else:
            ends = [
                float((s.start_time or 0) + s.duration) * float(s.time_base)
                for s in container.streams
                if s.duration is not None and s.time_base is not None
            ]
            duration = max(ends, default=0.0)
        if not container.streams.video:
            return Reference(duration, None, None, 0)
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        if aspect and aspect != 1:
            width = round(width * aspect)
        frame = next(container.decode(stream), None)
        counter_clockwise = round(frame.rotation) if frame is not None else 0
        rotation = (-counter_clockwise) % 360
        if rotation in (90, 270):
            width, height = height, width
        return Reference(duration, width, height, rotation)
