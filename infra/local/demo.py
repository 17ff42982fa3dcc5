"""`make demo`: the main job once, end to end, on the local stack with the bundled video.

Starts `python -m infra.local.serve` on free ports with a fresh callback token and HMAC key,
serves tests/fixtures/faststart.mp4 from a loopback origin, and then does what a user does
with the `videohook` command (each command printed as it runs): sends the provider's signed
callback, watches the transfer until STORED, and downloads the archived video back into a
local file (DEMO_OUTPUT, default ./videohook-demo.mp4), checked against the record's sha256
and against the source, byte for byte. Exit 0 when it matches, 1 otherwise.

The origin is http://127.0.0.1, which the source policy refuses unless
VIDEO_SOURCE_ALLOW_PRIVATE=true - set here, for this demo only. The stack keeps its state in
memory and stops at the end: what stays is the file.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from infra.local.harness import StackProcess
from infra.template import ROOT
from testkit.video_source import Video, VideoServer

SAMPLE = ROOT / "tests" / "fixtures" / "faststart.mp4"
TIMEOUT_SECONDS = 60


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def videohook(*args: str, api: str) -> int:
    """Run one `videohook` command against the demo's stack, showing it as a user would type it."""
    say("$ videohook " + " ".join(args) + f" --local {api}")
    command = [sys.executable, "-m", "videohook_cli", *args, "--local", api]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "handler"), str(ROOT)])}
    return subprocess.run(command, env=env, check=False).returncode


def run() -> int:
    token = secrets.token_urlsafe(24)
    hmac_key = secrets.token_urlsafe(32)
    output = Path(os.environ.get("DEMO_OUTPUT") or "videohook-demo.mp4").resolve()
    env = {"CALLBACK_TOKEN": token, "WEBHOOK_HMAC_KEYS": hmac_key, "VIDEO_SOURCE_ALLOW_PRIVATE": "true"}
    log_path = Path(os.environ.get("DEMO_LOG") or (Path(tempfile.gettempdir()) / "videohook-demo-stack.log"))
    with log_path.open("wb") as log, VideoServer() as videos, StackProcess(env, output=log) as stack:
        origin = videos.serve_file(SAMPLE)
        started = time.monotonic()
        try:
            stack.wait_healthy()
        except RuntimeError as error:
            say(f"FAILED: {error} (the stack's log: {log_path})")
            return 1
        say(f"local stack healthy in {time.monotonic() - started:.1f} s; its log: {log_path}")
        say("settings used:")
        for name, value in [
            ("API", stack.api),
            ("AWS endpoint", f"{stack.aws_endpoint} (dummy keys 'testing', region us-east-1)"),
            ("CALLBACK_TOKEN", token),
            ("WEBHOOK_HMAC_KEYS", hmac_key),
            ("VIDEO_SOURCE_ALLOW_PRIVATE", "true (the video is served from 127.0.0.1)"),
            ("video source", f"{origin.url} ({SAMPLE.relative_to(ROOT)}, {len(origin.data)} bytes)"),
            ("output file", str(output)),
        ]:
            say(f"  {name:<27} {value}")
        code = demonstrate(stack, origin, output)
        say(f"done in {time.monotonic() - started:.1f} s")
        # Stopped as a user stops `make serve`: Ctrl-C. It must exit 0 for the demo to pass.
        stopped = stack.stop(signal.SIGINT)
    say(f"stack stopped (exit {stopped}); its state was in memory and is gone")
    if code == 0:
        say(f"watch the archived video: {output} (any player), or run `make serve` and open")
        say(
            "http://127.0.0.1:3000/ after a callback (README, Quickstart): the console lists it with a player"
        )
    return code if stopped == 0 else 1


def demonstrate(stack: StackProcess, origin: Video, output: Path) -> int:
    """Callback in, video stored, downloaded back, checked against the source."""
    task_id = f"demo-{uuid.uuid4().hex[:12]}"
    if videohook("send-callback", task_id, origin.url, api=stack.api) != 0:
        return 1
    if videohook("watch", task_id, "--timeout", str(TIMEOUT_SECONDS), api=stack.api) != 0:
        return 1
    if videohook("show", task_id, api=stack.api) != 0:
        return 1
    if videohook("download", task_id, "-o", str(output), "--force", api=stack.api) != 0:
        return 1
    data = output.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    say(f"{output.name}: {len(data)} bytes, sha256 {digest}")
    say(f"{SAMPLE.name}: {len(origin.data)} bytes, sha256 {origin.sha256}")
    if (len(data), digest) != (len(origin.data), origin.sha256):
        say("MISMATCH: the archived video is not the source video")
        return 1
    say("the archived video is the source video, byte for byte")
    return 0


if __name__ == "__main__":
    sys.exit(run())
