"""A failed fetch of a signed video URL never writes its query string anywhere but `video_url`.

The provider's links are signed in their query string. Whatever goes wrong while the
transfer function fetches one - an error status, an expired link, a refused connection, a
source that drops or lies about its length, an error page instead of a video, too many
redirects - the task's `error`, and every log line of the attempt (exceptions included),
name the source as scheme://host/path only. Driven through the real transfer entry point, on
moto, against a real loopback video server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from testkit.video_source import VideoServer
from tests.conftest import AwsWorld
from tests.log_capture import captured_log_lines
from tests.unit.test_transfer import FIXTURE, Rig, fixture

SIGNATURE = "X-Amz-Signature=5ec7e7519a7u7e0f-never-in-an-error"
SESSION = "X-Amz-Security-Token=FQoGZXIvYXdz-never-in-an-error"
QUERY = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&{SESSION}&{SIGNATURE}"


@pytest.fixture
def server() -> Iterator[VideoServer]:
    with VideoServer() as video_server:
        yield video_server


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    yield from captured_log_lines()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v.mp4"  # nothing listens once the probe is closed


CASES = {
    "server-error": lambda s: s.add("/v.mp4", status=503),
    "expired-link": lambda s: s.add("/v.mp4", status=403),
    "connection-refused": lambda s: closed_port_url(),
    "drops-every-time": lambda s: s.add("/v.mp4", fixture(FIXTURE), drop_at=50_000, drops=None),
    "shorter-than-its-length": lambda s: s.add("/v.mp4", fixture(FIXTURE), length_delta=+500),
    "error-page": lambda s: s.add("/v.mp4", b"<html><body>AccessDenied</body></html>"),
    "too-many-redirects": lambda s: s.redirect_chain("/v.mp4", hops=5),
}


@pytest.mark.parametrize("case", CASES)
def test_a_failed_fetch_never_records_or_logs_the_signed_query(
    aws: AwsWorld, server: VideoServer, log_lines: list[str], case: str
) -> None:
    # GIVEN a task whose signed video URL will fail to fetch in this way
    rig = Rig(aws, server)
    rig.configure()
    url = f"{CASES[case](server)}?{QUERY}"
    rig.receive(url)
    # WHEN the transfer function handles its message
    rig.deliver()
    # THEN the attempt failed with an error in words that names the source without its query
    item = rig.task()
    assert item["status"] in ("RECEIVED", "TRANSFER_FAILED") and item.get("error"), item
    assert item["video_url"] == url  # the record keeps the URL the provider gave (docs/task-record.md)
    recorded = json.dumps({k: v for k, v in item.items() if k != "video_url"}, default=str)
    for secret in (SIGNATURE, SESSION, "X-Amz-"):
        assert secret not in recorded, f"{case}: {item['error']}"
        # AND no log line of the attempt (message, fields or exception chain) holds it either
        for line in log_lines:
            assert secret not in line, f"{case}: {line[:600]}"
    assert any("transfer" in line and "failed" in line for line in log_lines)  # the failure was logged
