"""`make demo`: the main job once, end to end, on the local stack with the bundled video.

Starts `python -m infra.local.serve` on free ports, serves tests/fixtures/faststart.mp4
from a loopback origin, posts the callback exactly as the provider would (JSON body, URL
token, HMAC signature headers), waits for the task to be STORED, and reads the stored
object back from the embedded S3 to prove it is the source, byte for byte. Exit 0 when it
is, 1 otherwise. The origin is http://127.0.0.1, which the source policy refuses unless
VIDEO_SOURCE_ALLOW_PRIVATE=true - set here, for this demo only.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import time
import uuid

import requests

from infra.local.harness import StackProcess, s3_object_digest, wait_for_task
from infra.template import ROOT
from testkit.video_source import Video, VideoServer

SAMPLE = ROOT / "tests" / "fixtures" / "faststart.mp4"
TIMEOUT_SECONDS = 60


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run() -> int:
    token = secrets.token_urlsafe(24)
    hmac_key = secrets.token_urlsafe(32)
    env = {"CALLBACK_TOKEN": token, "WEBHOOK_HMAC_KEYS": hmac_key, "VIDEO_SOURCE_ALLOW_PRIVATE": "true"}
    with VideoServer() as videos, StackProcess(env) as stack:
        try:
            code = demonstrate(stack, videos.serve_file(SAMPLE), token, hmac_key)
        except (RuntimeError, TimeoutError, requests.RequestException) as error:
            say(f"FAILED: {error}")
            code = 1
        # Stopped as a user stops `make serve`: Ctrl-C. It must exit 0 for the demo to pass.
        stopped = stack.stop(signal.SIGINT)
    say(f"stack stopped (exit {stopped})")
    return code if stopped == 0 else 1


def demonstrate(stack: StackProcess, origin: Video, token: str, hmac_key: str) -> int:
    """The main job, once: callback in, video stored, object checked against the source."""
    started = time.monotonic()
    health = stack.wait_healthy()
    say(f"stack healthy in {time.monotonic() - started:.1f} s at {stack.api}")
    task_id = f"demo-{uuid.uuid4().hex[:12]}"
    answer = stack.post_callback(task_id, origin.url, token=token, key=hmac_key)
    say(f"callback for {task_id} answered {answer.status_code} {answer.text}")
    if answer.status_code != 200:
        return 1
    record = wait_for_task(stack.api, task_id, {"STORED", "TRANSFER_FAILED"}, TIMEOUT_SECONDS)
    say("task record:\n" + json.dumps(record, indent=2, sort_keys=True))
    if record["status"] != "STORED":
        say(f"the transfer failed: {record.get('error')}")
        return 1
    size, sha256 = s3_object_digest(stack.aws_endpoint, record["s3_bucket"], record["s3_key"])
    stored, source = f"s3://{record['s3_bucket']}/{record['s3_key']}", f"source {SAMPLE.name}"
    width = max(len(stored), len(source))
    say(f"{stored:<{width}}  {size} bytes, sha256 {sha256}")
    say(f"{source:<{width}}  {len(origin.data)} bytes, sha256 {origin.sha256}")
    if (size, sha256) != (len(origin.data), origin.sha256) or record.get("sha256") != sha256:
        say("MISMATCH: the stored object is not the source video")
        return 1
    say(f"stored object matches the source; bucket {health['outputs'].get('VideosBucketName')}")
    say(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run())
