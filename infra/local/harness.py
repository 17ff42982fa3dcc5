"""Driving the local stack from outside: as a subprocess, with a loopback video origin.

Used by `make demo` and the integration tests, which must see the stack exactly as a user
does: `python -m infra.local.serve` in its own process, reached over HTTP only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import requests

from infra.template import ROOT

HOST = "127.0.0.1"


def provider_signature(key: str, task_id: str, timestamp: str) -> str:
    """The provider's signature, from the handler code itself (handler/ is put on the path)."""
    handler = str(ROOT / "handler")
    if handler not in sys.path:
        sys.path.insert(0, handler)
    from videohook.signature import sign

    return sign(key, task_id, timestamp)


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
        body = {
            "code": 200,
            "msg": "All generated successfully.",
            "data": {"task_id": task_id, "video_url": video_url},
        }
        stamp = str(int(time.time()))
        return requests.post(
            callback_url or f"{self.api}/callbacks",
            params={"token": token} if token is not None and callback_url is None else None,
            data=json.dumps(body),
            headers={
                "Content-Type": "application/json",
                "X-Webhook-Timestamp": stamp,
                "X-Webhook-Signature": provider_signature(key, task_id, stamp),
            },
            timeout=15,
        )

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


class FileOrigin:
    """An HTTP origin on the loopback serving one file, as a provider's CDN would.

    Answers GET and HEAD with Content-Length, and single `Range: bytes=a-b` requests with
    206, so a resumed transfer can be exercised. Counts the requests it served.
    """

    def __init__(self, path: Path, content_type: str = "video/mp4", port: int = 0) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.requests = 0
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                origin.requests += 1
                if self.path.split("?", 1)[0] != f"/{origin.path.name}":
                    self._send(404, b"not found", "text/plain")
                    return
                found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if found:
                    start = int(found.group(1))
                    end = int(found.group(2)) if found.group(2) else len(origin.data) - 1
                    part = origin.data[start : end + 1]
                    self._send(
                        206, part, content_type, {"Content-Range": f"bytes {start}-{end}/{len(origin.data)}"}
                    )
                else:
                    self._send(200, origin.data, content_type, {"Accept-Ranges": "bytes"})

            do_HEAD = do_GET

            def _send(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/{path.name}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FileOrigin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy key
    )
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
