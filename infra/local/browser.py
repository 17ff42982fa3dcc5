"""Headless chromium over the DevTools protocol: the console's browser test and its screenshot.

A small driver on websocket-client: start Debian's `chromium` headless with a fresh profile,
open a page, evaluate JavaScript in it, take a screenshot. Nothing is downloaded: it uses the
chromium on the PATH (`CHROMIUM` names another), and `find_chromium()` says whether there is
one (the browser test skips only when there is none; .ci/run installs it).

    python -m infra.local.browser docs/console.png   # boots a local stack, fills it, shoots the console
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def find_chromium() -> str | None:
    """The chromium to drive: $CHROMIUM, else the first of the usual names on the PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless chromium with one page; use as a context manager."""

    def __init__(self, executable: str, width: int = 1280, height: int = 720, timeout: float = 30) -> None:
        self.executable = executable
        self.size = (width, height)
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="videohook-chromium-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.socket: Any = None
        self.ids = itertools.count(1)
        self.console: list[str] = []

    def __enter__(self) -> Chromium:
        import websocket  # websocket-client

        width, height = self.size
        self.process = subprocess.Popen(
            [
                self.executable,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = self._devtools_port()
            pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            page = next(p for p in pages if p.get("type") == "page")
            self.socket = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
            )
            self.send("Runtime.enable")
            self.send("Page.enable")
            # The page gets the whole size asked for (a headless window keeps some for itself).
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def _devtools_port(self) -> int:
        """Chromium writes the port it picked into the profile once it listens."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrowserError(f"{self.executable} exited with {self.process.returncode} while starting")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise BrowserError(f"{self.executable} did not open its DevTools port in {self.timeout} s")

    def __exit__(self, *exc: object) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):  # closing anyway; the process is ended below
                self.send("Browser.close")
            self.socket.close()
            self.socket = None
        if self.process is not None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one DevTools method and wait for its answer (events on the way are kept or dropped)."""
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return dict(message.get("result", {}))

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'", what=f"{url} to load"
        )

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float | None = None) -> Any:
        """Evaluate until truthy; the value. BrowserError naming `what` after the timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"timed out waiting for {what}")

    def screenshot(self, path: Path) -> None:
        """The page as a picture: the window's width, and tall enough for the whole page."""
        width, height = self.size
        content = int(
            self.evaluate("Math.ceil(document.documentElement.getBoundingClientRect().height)") or 0
        )
        if content > height:
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=content,
                deviceScaleFactor=1,
                mobile=False,
            )
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(data))


def video_state(task_id: str) -> str:
    """JavaScript: the console row of `task_id` with its player's readyState (or null)."""
    return f"""(() => {{
        const row = document.querySelector(`tr[data-task-id="{task_id}"]`);
        if (!row) return null;
        const video = row.querySelector("video");
        return {{text: row.innerText, readyState: video ? video.readyState : -1,
                 duration: video ? video.duration : null, width: video ? video.videoWidth : null,
                 networkState: video ? video.networkState : null,
                 src: video ? video.currentSrc : null, loaded: video ? video.dataset.loaded || null : null}};
    }})()"""


def shoot_console(path: Path) -> int:
    """Boot a local stack with a few tasks (stored, failed, submitted) and screenshot its console."""
    from infra.local.harness import StackProcess, wait_for_task
    from infra.template import ROOT
    from testkit.callbacks import callback_body, post_callback
    from testkit.media import streamed_mp4
    from testkit.video_source import VideoServer

    chromium = find_chromium()
    if chromium is None:
        print("no chromium on the PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    fixtures = ROOT / "tests" / "fixtures"
    token, key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {
        "CALLBACK_TOKEN": token,
        "WEBHOOK_HMAC_KEYS": key,
        "VIDEO_SOURCE_ALLOW_PRIVATE": "true",
    }
    with (
        VideoServer() as videos,
        StackProcess(env, output=subprocess.DEVNULL) as stack,  # type: ignore[arg-type]
    ):
        stack.wait_healthy()
        for task_id, name in (("music-video-0001", "faststart.mp4"), ("music-video-0002", "moov_at_end.mp4")):
            stack.post_callback(task_id, videos.serve_file(fixtures / name).url, token=token, key=key)
            wait_for_task(stack.api, task_id, {"STORED"})
        failed = callback_body("music-video-0003", code=451, msg="source audio could not be downloaded")
        post_callback(f"{stack.api}/callbacks", failed, key=key, token=token).raise_for_status()
        # A transfer still running when the picture is taken: 4 MiB from a source that trickles
        # (about 13 s in all), pictured after its first progress write (about every 5 s).
        slow = videos.add("/music-video-0004.mp4", streamed_mp4(4 * 1024 * 1024), trickle=(64 * 1024, 0.2))
        stack.post_callback("music-video-0004", slow, token=token, key=key)
        wait_for_task(stack.api, "music-video-0004", {"TRANSFERRING"})
        time.sleep(7)
        with Chromium(chromium, width=1280, height=700) as browser:
            browser.open(f"{stack.api}/")
            for task_id in ("music-video-0001", "music-video-0002"):
                # a first frame, and the player done loading (no spinner over the picture)
                browser.wait_for(
                    f"(s => s && s.readyState >= 2 && s.networkState !== 2)({video_state(task_id)} || null)",
                    what=f"{task_id}'s player",
                )
            time.sleep(1)
            browser.screenshot(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(shoot_console(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console.png")))
