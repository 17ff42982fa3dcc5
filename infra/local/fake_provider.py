"""`LOCAL_FAKE_PROVIDER=true`: the local stack talks to the project's fake provider, not the real one.

Local development only, so that `videohook submit` (POST /tasks) goes end to end on one
machine with no provider account: the stack's `PROVIDER_API_BASE` and `PROVIDER_API_KEY`
point at the fake provider (a real HTTP server on 127.0.0.1, the one the tests use), which
behaves as the real one does for a submitted task:

* `generate` answers with the task id and remembers the `callBackUrl`;
* a moment later (`LOCAL_FAKE_PROVIDER_DELAY_SECONDS`, default 1) it posts the success
  callback to that URL, JSON body, signed with the first `WEBHOOK_HMAC_KEYS` key when one is
  set (the token is in the URL already), naming a video it serves itself from 127.0.0.1
  (the bundled sample, tests/fixtures/faststart.mp4);
* `record-info` then reports SUCCESS with that video, so the transfer path's confirmation
  and reconcile agree with the callback.

The video is on the loopback, which the source policy refuses unless
`VIDEO_SOURCE_ALLOW_PRIVATE=true`: the switch sets it (and refuses to start if it was set to
false). Described in docs/local-stack.md.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Mapping
from typing import Any

import requests

from infra.template import ROOT
from testkit.callbacks import callback_body, signed_headers
from testkit.provider import FakeProvider
from testkit.video_source import VideoServer

log = logging.getLogger("infra.local")
SAMPLE = ROOT / "tests" / "fixtures" / "faststart.mp4"
DEFAULT_DELAY_SECONDS = 1.0


class CallingBackProvider(FakeProvider):
    """The fake provider, plus what the real one does after `generate`: the callback."""

    def __init__(self, video_url: str, hmac_key: str | None, delay_seconds: float) -> None:
        super().__init__(api_key=secrets.token_urlsafe(24))
        self.video_url = video_url
        self.hmac_key = hmac_key
        self.delay_seconds = delay_seconds

    def _answer_for(self, req: Any) -> tuple[int, bytes, str]:
        answer = super()._answer_for(req)
        body = req.body if isinstance(req.body, dict) else {}
        task_id = body.get("taskId")
        if answer[0] == 200 and req.path.endswith("/mp4/generate") and task_id in self.callback_urls:
            self.script(task_id, [self.success(self.video_url, audio_id=body.get("audioId"))])
            threading.Thread(
                target=self._call_back, args=(task_id, self.callback_urls[task_id]), daemon=True
            ).start()
        return answer

    def _call_back(self, task_id: str, url: str) -> None:
        if self._closing.wait(self.delay_seconds):
            return
        headers = {"Content-Type": "application/json"}
        if self.hmac_key:
            headers.update(signed_headers(self.hmac_key, task_id))
        body = callback_body(task_id, self.video_url)
        try:
            answer = requests.post(url, data=json.dumps(body), headers=headers, timeout=15)
            log.info("fake provider: callback for %s answered %d", task_id, answer.status_code)
        except requests.RequestException as error:
            log.warning("fake provider: callback for %s failed: %s", task_id, type(error).__name__)


class FakeProviderService:
    """The fake provider and its video origin, started before the stack and stopped after it."""

    def __init__(self, user_env: Mapping[str, str]) -> None:
        allow = user_env.get("VIDEO_SOURCE_ALLOW_PRIVATE", "").strip().lower()
        if allow in ("false", "0", "no", "off"):
            raise ValueError(
                "LOCAL_FAKE_PROVIDER=true serves its video from 127.0.0.1, which needs "
                "VIDEO_SOURCE_ALLOW_PRIVATE=true (it is set to false)"
            )
        raw_delay = user_env.get("LOCAL_FAKE_PROVIDER_DELAY_SECONDS", "").strip()
        try:
            delay = float(raw_delay) if raw_delay else DEFAULT_DELAY_SECONDS
        except ValueError:
            raise ValueError(
                f"LOCAL_FAKE_PROVIDER_DELAY_SECONDS must be a number, got {raw_delay[:40]!r}"
            ) from None
        keys = [k.strip() for k in user_env.get("WEBHOOK_HMAC_KEYS", "").split(",") if k.strip()]
        self.videos = VideoServer()
        self.keys = keys
        self.delay = delay
        self.provider: CallingBackProvider | None = None

    def start(self) -> dict[str, str]:
        """Start both; the variables that point the stack at them."""
        self.videos.__enter__()
        video = self.videos.serve_file(SAMPLE)
        self.provider = CallingBackProvider(video.url, self.keys[0] if self.keys else None, self.delay)
        self.provider.start()
        return {
            "PROVIDER_API_BASE": self.provider.base_url,
            "PROVIDER_API_KEY": self.provider.api_key,
            "VIDEO_SOURCE_ALLOW_PRIVATE": "true",
        }

    def stop(self) -> None:
        if self.provider is not None:
            self.provider.stop()
        self.videos.__exit__()
