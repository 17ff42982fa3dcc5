"""The local stack's console page in a real headless browser (Debian's chromium, over DevTools).

GIVEN a local stack with one stored video and one transfer still running (a slow source),
WHEN the console at `/` is opened, THEN it lists the tasks newest first, the running one
with a progress bar whose maximum is the source's length, the stored one with its size,
duration and dimensions, and the stored one's player loads the video's metadata from the
presigned URL on the embedded S3 (readyState >= 1, the duration and width of the file).
Skipped only where no chromium is installed (.ci/run installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.browser import Chromium, find_chromium, video_state
from infra.local.harness import StackProcess, booted_stack, wait_for_task
from infra.template import ROOT
from testkit.video_source import VideoServer
from tests.integration.test_cli import NEEDS_LIST

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_chromium() is None, reason="no chromium on this machine (apt-get install chromium)"
    ),
]

TOKEN, KEY = "console-token", "console-key"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    log_path = tmp_path_factory.mktemp("console") / "stack.log"
    env = {"CALLBACK_TOKEN": TOKEN, "WEBHOOK_HMAC_KEYS": KEY, "VIDEO_SOURCE_ALLOW_PRIVATE": "true"}
    with booted_stack(env, log_path) as running:
        yield running


@NEEDS_LIST
def test_console_lists_tasks_with_progress_and_a_player_that_loads_the_video(
    stack: StackProcess, tmp_path: Path
) -> None:
    with VideoServer() as videos, Chromium(find_chromium() or "chromium") as browser:
        # GIVEN a stored video
        stored = videos.serve_file(FIXTURES / "moov_at_end.mp4")
        assert stack.post_callback("console-stored", stored.url, token=TOKEN, key=KEY).status_code == 200
        wait_for_task(stack.api, "console-stored", {"STORED"})
        # AND a transfer still running: its source sends 1 KiB every 200 ms (about 11 s in all)
        data = (FIXTURES / "faststart.mp4").read_bytes()
        url = videos.add("/slow.mp4", data, trickle=(1024, 0.2))
        assert stack.post_callback("console-running", url, token=TOKEN, key=KEY).status_code == 200
        wait_for_task(stack.api, "console-running", {"TRANSFERRING"})
        # WHEN the console is opened
        browser.open(f"{stack.api}/")
        # THEN the running transfer has a progress bar out of the source's length
        bar = browser.wait_for(
            """(() => { const p = document.querySelector('tr[data-task-id="console-running"] progress.transfer');
                        return p && p.max > 1 ? {max: p.max, value: p.value} : null; })()""",
            what="the running transfer's progress bar",
        )
        assert bar["max"] == len(data) and 0 <= bar["value"] < len(data)
        # AND the stored video's player loads its metadata from the embedded S3
        state = browser.wait_for(
            f"(() => {{ const s = {video_state('console-stored')}; return s && s.readyState >= 1 ? s : null; }})()",
            what="the stored video's metadata in its player",
        )
        assert state["src"].startswith(f"{stack.aws_endpoint}/") and state["loaded"] == "metadata"
        assert abs(state["duration"] - 3.0) < 0.1 and state["width"] == 640
        cells = state["text"].split("\t")
        assert cells[:5] == ["console-stored", "STORED", "271.7 KiB", "3.0 s", "640x360"]
        # AND the tasks are newest first
        order = browser.evaluate("[...document.querySelectorAll('#tasks tr')].map(r => r.dataset.taskId)")
        assert order.index("console-running") < order.index("console-stored")
        browser.screenshot(tmp_path / "console.png")
        assert (tmp_path / "console.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
