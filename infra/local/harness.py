"""Driving the local stack from outside: as a subprocess, reached over HTTP.

Used by `make demo` and the integration tests, which must see the stack exactly as a user
does: `python -m infra.local.serve` in its own process, reached over HTTP only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import requests

from infra.template import ROOT
from testkit.aws import endpoint_client, object_digest
from testkit.callbacks import callback_body, post_callback

HOST = "127.0.0.1"


def free_port() -> int:
    """A port free right now on the loopback interface (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class StackProcess:
    """`python -m infra.local.serve` on free ports, in its own process group."""

    def __init__(self, env: dict[str, str] | None = None, output: IO[Any] | None = None) -> None:
        self.aws_port = free_port()
        self.api_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "handler"), str(ROOT)]),
            "PYTHONUNBUFFERED": "1",
            "AWS_PORT": str(self.aws_port),
            "API_PORT": str(self.api_port),
            **(env or {}),
        }
        self.output = output
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def aws_endpoint(self) -> str:
        return f"http://{HOST}:{self.aws_port}"

    def start(self) -> StackProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.serve"],
            cwd=ROOT,
            env=self.env,
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
            start_new_session=True,  # its own process group: nothing it starts can escape cleanup
        )
        return self

    def wait_healthy(self, timeout: float = 30) -> dict[str, Any]:
        """The /health document once it says ok; RuntimeError if the stack exits or never is."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the local stack exited with {self.process.returncode} while starting")
            try:
                answer = requests.get(f"{self.api}/health", timeout=2)
                if answer.status_code == 200:
                    return answer.json()
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the local stack was not healthy after {timeout} s")

    def boot(self, timeout: float = 30) -> dict[str, Any]:
        """Start and wait for /health; a stack that never gets healthy is killed, then raised."""
        self.start()
        try:
            return self.wait_healthy(timeout)
        except RuntimeError:
            self.stop(signal.SIGKILL)
            raise

    def post_callback(
        self,
        task_id: str,
        video_url: str,
        *,
        token: str | None,
        key: str,
        callback_url: str | None = None,
    ) -> requests.Response:
        """POST the provider's success callback as the provider sends it: JSON, token, signature.

        `callback_url` (a full URL, token included) replaces this stack's /callbacks?token=.
        """
        url = callback_url or f"{self.api}/callbacks"
        body = callback_body(task_id, video_url)
        return post_callback(url, body, key=key, token=token if callback_url is None else None)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the stack and wait; kill its whole group if it does not stop in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise RuntimeError(f"the local stack did not stop within {timeout} s; killed") from None

    def __enter__(self) -> StackProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def booted_stack(
    env: dict[str, str],
    log_path: Path,
    *,
    timeout: float = 30,
    factory: type[StackProcess] = StackProcess,
) -> Iterator[StackProcess]:
    """A local stack booted with `env`, its output in `log_path`, stopped with SIGTERM after.

    A stack that never gets healthy raises with the tail of its log, where the reason is.
    """
    with open(log_path, "wb") as log:
        stack = factory(env, output=log)
        try:
            stack.boot(timeout=timeout)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{log_path.read_text(errors='replace')[-3000:]}") from None
        try:
            yield stack
        finally:
            stack.stop(signal.SIGTERM)


def wait_for_task(api: str, task_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    """Poll GET /tasks/{id} until its status is one of `statuses`; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = requests.get(f"{api}/tasks/{task_id}", timeout=5)
        if answer.status_code == 200:
            record = answer.json()
            if record.get("status") in statuses:
                return record
        time.sleep(0.2)
    raise TimeoutError(f"task {task_id} did not reach {sorted(statuses)} in {timeout} s (last: {record})")


def s3_object_digest(endpoint: str, bucket: str, key: str) -> tuple[int, str]:
    """Size and sha256 of an object read back from S3 at `endpoint`, streamed."""
    return object_digest(endpoint_client("s3", endpoint), bucket, key)
