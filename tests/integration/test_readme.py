"""The README's Quickstart, run as written, in order (what can run on this machine).

The `sh` blocks under "## Quickstart" are read from README.md itself: a block marked
`sh serve` or `sh origin` is a terminal left running (started in the background, stopped
with Ctrl-C's signal when the next `serve` replaces it or at the end); every other `sh` block
runs in bash, line by line as one script, and must exit 0. Only the ports change: the
stack gets free ports through API_PORT/AWS_PORT (which `make serve` and `videohook --local`
both read), and the addresses in the commands are rewritten to them, so a developer's own
`make serve` on 3000 is left alone. A block that calls the AWS CLI is skipped where `aws`
is not installed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from infra.local.harness import free_port
from infra.template import ROOT
from tests.integration.test_cli import NEEDS_LIST

pytestmark = pytest.mark.integration

FENCE = re.compile(r"^```(sh[^\n]*)\n(.*?)^```", re.S | re.M)


def quickstart_blocks() -> list[tuple[str, str]]:
    """(kind, script) of each `sh` block of the Quickstart section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart\n") :]
    section = section[: section.index("\n## ", 1)]
    return [
        (info.split()[1] if len(info.split()) > 1 else "run", body) for info, body in FENCE.findall(section)
    ]


class Terminal:
    """A block left running, as in its own terminal; Ctrl-C (SIGINT to its group) stops it."""

    def __init__(self, script: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["bash", "-c", script],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_until(check: Callable[[], bool], what: str, terminal: Terminal, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if terminal.process.poll() is not None:
            raise AssertionError(
                f"{what}: exited {terminal.process.returncode}\n{terminal.log.read_text()[-3000:]}"
            )
        try:
            if check():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not ready in {timeout} s\n{terminal.log.read_text()[-3000:]}")


@pytest.fixture
def ports() -> dict[str, int]:
    return {"3000": free_port(), "5000": free_port(), "8000": free_port()}


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    running: list[Terminal] = []
    yield running
    for terminal in running:
        terminal.stop()


@NEEDS_LIST
def test_the_quickstart_runs_as_written(
    ports: dict[str, int], terminals: list[Terminal], tmp_path: Path
) -> None:
    blocks = quickstart_blocks()
    assert [kind for kind, _ in blocks].count("serve") == 2 and any(kind == "origin" for kind, _ in blocks)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VIDEOHOOK_"))}
    env.update(
        API_PORT=str(ports["3000"]),
        AWS_PORT=str(ports["5000"]),
        DEMO_OUTPUT=str(tmp_path / "videohook-demo.mp4"),
        DEMO_LOG=str(tmp_path / "demo-stack.log"),
    )
    env.pop("PYTHONPATH", None)  # as a newcomer's shell: the Makefile and the console script set their own
    created = [ROOT / "quickstart-2.mp4"]
    assert not any(path.exists() for path in created), "a file the Quickstart creates is already there"
    serve: Terminal | None = None
    try:
        for number, (kind, script) in enumerate(blocks):
            script = script.replace("127.0.0.1:3000", f"127.0.0.1:{ports['3000']}")
            script = script.replace("127.0.0.1:5000", f"127.0.0.1:{ports['5000']}")
            script = script.replace("127.0.0.1:8000", f"127.0.0.1:{ports['8000']}")
            script = script.replace("http.server 8000", f"http.server {ports['8000']}")
            if kind == "serve":
                if serve is not None:
                    serve.stop()  # Ctrl-C in the first terminal, then the next command there
                serve = Terminal(script, env, tmp_path / f"serve-{number}.log")
                terminals.append(serve)
                api = f"http://127.0.0.1:{ports['3000']}"
                wait_until(
                    lambda api=api: requests.get(f"{api}/health", timeout=2).status_code == 200,
                    "make serve",
                    serve,
                )
            elif kind == "origin":
                origin = Terminal(script, env, tmp_path / "origin.log")
                terminals.append(origin)
                wait_until(
                    lambda: socket.create_connection(("127.0.0.1", ports["8000"]), 1).close() or True,
                    "origin",
                    origin,
                )
            else:
                if (
                    re.search(r"^aws ", script, re.M)
                    and subprocess.run(["which", "aws"], capture_output=True).returncode
                ):
                    continue  # the AWS CLI is not installed here
                result = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", script],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert result.returncode == 0, f"block {number}:\n{script}\n{result.stdout}\n{result.stderr}"
                check_block(script, result.stdout)
    finally:
        for path in created:
            path.unlink(missing_ok=True)


def check_block(script: str, out: str) -> None:
    """What each kind of block must have printed, beyond exiting 0."""
    if script.startswith("make demo"):
        assert "the archived video is the source video, byte for byte" in out
    if "curl" in script and "/callbacks" in script:
        assert '"status":"received"' in out.replace(" ", "") and "quickstart-1" in out
    if "send-callback" in script:
        assert "HTTP 200" in out
    if "download quickstart-2" in script:
        assert "matches the record" in out and (ROOT / "quickstart-2.mp4").exists()
    if "watch" in script:
        assert " STORED: " in out
    if "aws dynamodb get-item" in script:
        assert '"quickstart-1"' in out and '"STORED"' in out
