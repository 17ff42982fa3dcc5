"""The local stack as the reliability scenarios attack it: from the outside only.

Each stack is `python -m infra.local.serve` in its own process on free ports (the same
`StackProcess` the integration tests and `make demo` use), reached over HTTP for its API
and with boto3 for its embedded AWS endpoint. Named profiles give the scenarios the stacks
they need (development source policy, worker processes, the production source policy);
`Stacks` starts each on first use and stops them all at the end.

After every scenario, `audit` checks what docs/stored-video.md and docs/task-record.md promise
whatever happened: no open multipart upload, every stored object version a valid MP4
(downloaded and checked), one version per key, and every task record in a final state.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from infra.local.harness import StackProcess
from testkit.aws import endpoint_client, object_digest
from testkit.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from videohook.mp4 import Mp4Checker

HMAC_KEYS = ("reliability-key-old", "reliability-key-current")  # a rotation: either may sign
TOKEN = "reliability-callback-token"
PART_BYTES = 5 * 1024 * 1024  # S3's smallest part, so a few MB already makes several parts
FINAL = {"STORED", "TRANSFER_FAILED", "GENERATION_FAILED"}
TOLERANCE_SECONDS = 3  # the guarded stack's signature window, short enough to wait out

_COMMON = {
    "WEBHOOK_HMAC_KEYS": ",".join(HMAC_KEYS),
    "CALLBACK_TOKEN": TOKEN,
    "LOCAL_RETRY_SECONDS": "1",
    "TRANSFER_PART_BYTES": str(PART_BYTES),
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}
PROFILES: dict[str, dict[str, str]] = {
    # Loopback video sources allowed; faults can be injected.
    "main": {
        **_COMMON,
        "VIDEO_SOURCE_ALLOW_PRIVATE": "true",
        "LOCAL_FAULTS": "true",
        "LOCAL_TRANSFER_CONCURRENCY": "8",
    },
    # Transfer workers in two killable processes, a short lease.
    "workers": {
        **_COMMON,
        "VIDEO_SOURCE_ALLOW_PRIVATE": "true",
        "LOCAL_TRANSFER_PROCESSES": "2",
        "LOCAL_TRANSFER_CONCURRENCY": "2",
        "TRANSFER_LEASE_SECONDS": "6",
    },
    # The deployed source policy (no private addresses, https only) and a short signature window.
    "guarded": {
        **_COMMON,
        "SIGNATURE_TOLERANCE_SECONDS": str(TOLERANCE_SECONDS),
    },
}


@dataclass
class Result:
    """One scenario's outcome: the summary row, and what went wrong in words."""

    name: str
    unit: str
    tried: int = 0
    passed: int = 0
    lost: int = 0
    seconds: float = 0.0
    checks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.passed == self.tried

    def expect(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.problems.append(problem)
        return condition


class LocalStack(StackProcess):
    """A started local stack, with the clients and helpers the scenarios use."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-stack.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        super().__init__(env, output=self._log)
        self.health: dict[str, Any] = {}
        self.verified: dict[tuple[str, str], tuple[str, int]] = {}  # (key, version) -> (sha256, size)
        self._local = threading.local()
        self.sent = 0

    def start_healthy(self) -> LocalStack:
        try:
            self.health = self.boot(timeout=60)
        except RuntimeError as error:
            raise RuntimeError(f"{self.name} stack: {error}{self.tail()}") from None
        return self

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        try:
            return super().stop(signum, timeout)
        finally:
            self._log.close()

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"\n--- {self.name} stack log (tail) ---\n" + "\n".join(text)

    # --- AWS, from the outside ------------------------------------------------------------

    def aws(self, service: str) -> Any:
        """A boto3 client on the embedded endpoint (one per thread and service)."""
        clients = self._local.__dict__.setdefault("clients", {})
        if service not in clients:
            clients[service] = endpoint_client(service, self.aws_endpoint)
        return clients[service]

    @property
    def bucket(self) -> str:
        return str(self.health["outputs"]["VideosBucketName"])

    @property
    def table(self) -> str:
        return str(self.health["outputs"]["TasksTableName"])

    def open_uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        answer = self.aws("s3").list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return list(answer.get("Uploads", []))

    def versions(self, prefix: str = "videos/") -> list[dict[str, Any]]:
        s3 = self.aws("s3")
        found: list[dict[str, Any]] = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
            found += page.get("Versions", []) + page.get("DeleteMarkers", [])
        return found

    def records(self) -> dict[str, dict[str, Any]]:
        """Every task record, read straight from the table (a scan: this is a test)."""
        from boto3.dynamodb.types import TypeDeserializer

        plain = TypeDeserializer()
        dynamodb = self.aws("dynamodb")
        found: dict[str, dict[str, Any]] = {}
        for page in dynamodb.get_paginator("scan").paginate(TableName=self.table):
            for item in page.get("Items", []):
                record = {k: plain.deserialize(v) for k, v in item.items()}
                found[str(record["task_id"])] = record
        return found

    def faults(self, method: str = "GET", rule: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = requests.request(method, f"{self.aws_endpoint}/_local/faults", json=rule, timeout=5)
        answer.raise_for_status()
        return dict(answer.json())

    # --- the API, from the outside --------------------------------------------------------

    @property
    def http(self) -> requests.Session:
        """One keep-alive session per thread (a provider's sender reuses its connections)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def post_callback(
        self,
        body: dict[str, Any] | bytes | str,
        *,
        task_id: str | None = None,
        key: str | None = None,
        stamp: str | None = None,
        signature: str | None = None,
        signed: bool = True,
        token: str | None = TOKEN,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """POST /callbacks as the provider does: JSON body, URL token, HMAC signature headers."""
        if isinstance(body, dict):
            task_id = task_id or str(body.get("data", {}).get("task_id", ""))
            data: bytes = json.dumps(body).encode()
        else:
            data = body.encode() if isinstance(body, str) else body
        stamp = stamp if stamp is not None else str(int(time.time()))
        sent = {"Content-Type": content_type} if content_type else {}
        if signed and signature is None and task_id is not None:
            sent.update(signed_headers(random.choice(HMAC_KEYS) if key is None else key, task_id, stamp))
        elif signed and signature is not None:
            sent.update({TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature})
        sent.update(headers or {})
        params = {"token": token} if token is not None else None
        return self.http.post(f"{self.api}/callbacks", params=params, data=data, headers=sent, timeout=30)

    def task(self, task_id: str) -> dict[str, Any] | None:
        answer = self.http.get(f"{self.api}/tasks/{task_id}", timeout=10)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return dict(answer.json())

    def wait_final(self, task_ids: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """The records of `task_ids` once each is in a final state (or the last seen at timeout)."""
        wanted = set(task_ids)
        deadline = time.monotonic() + timeout
        records: dict[str, dict[str, Any]] = {}
        while True:
            records = {k: v for k, v in self.records().items() if k in wanted}
            if all(records.get(t, {}).get("status") in FINAL for t in wanted):
                return records
            if time.monotonic() > deadline:
                return records
            time.sleep(0.5)

    def wait_for(self, task_id: str, predicate: Any, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.task(task_id)
            if record is not None and predicate(record):
                return record
            time.sleep(0.1)
        return None

    def worker_processes(self) -> list[dict[str, Any]]:
        document = requests.get(f"{self.api}/health", timeout=5).json()
        return list(document.get("worker_processes", {}).get("transfer", []))

    # --- the checks after every scenario ------------------------------------------------

    def stored_digest(self, key: str, version_id: str) -> tuple[str, int, str | None]:
        """sha256, size and the MP4 check's verdict (None: valid) of one object version."""
        checker = Mp4Checker()
        verdict: str | None = None

        def check(chunk: bytes) -> None:
            nonlocal verdict
            if verdict is None:
                try:
                    checker.feed(chunk)
                except Exception as error:
                    verdict = str(error)

        size, digest = object_digest(self.aws("s3"), self.bucket, key, version_id, each=check)
        if verdict is None:
            try:
                checker.finish()
            except Exception as error:
                verdict = str(error)
        return digest, size, verdict


def audit(stack: LocalStack, result: Result) -> dict[str, tuple[str, int]]:
    """The documented promises after any scenario; returns key -> (sha256, size) of each stored object."""
    uploads = stack.open_uploads()
    result.checks[f"{stack.name}: open uploads"] = len(uploads)
    result.expect(
        not uploads,
        f"{stack.name}: {len(uploads)} open multipart upload(s): {[u['Key'] for u in uploads][:5]}",
    )
    versions = stack.versions()
    per_key: dict[str, int] = {}
    bad = 0
    stored: dict[str, tuple[str, int]] = {}
    for version in versions:
        key, version_id = version["Key"], version.get("VersionId", "null")
        per_key[key] = per_key.get(key, 0) + 1
        if "Size" not in version:
            result.problems.append(f"{stack.name}: delete marker on {key}")
            continue
        if (key, version_id) not in stack.verified:
            sha, size, verdict = stack.stored_digest(key, version_id)
            if verdict is not None:
                bad += 1
                result.problems.append(f"{stack.name}: {key} ({version_id}) is not a valid MP4: {verdict}")
            stack.verified[(key, version_id)] = (sha, size)
        stored[key] = stack.verified[(key, version_id)]
    result.checks[f"{stack.name}: object versions"] = len(versions)
    result.checks[f"{stack.name}: invalid MP4 objects"] = bad
    doubled = {k: n for k, n in per_key.items() if n > 1}
    result.expect(not doubled, f"{stack.name}: keys with more than one version: {doubled}")
    records = stack.records()
    open_records = {t: r["status"] for t, r in records.items() if r.get("status") not in FINAL}
    result.checks[f"{stack.name}: records not final"] = len(open_records)
    result.expect(
        not open_records,
        f"{stack.name}: records not in a final state: {dict(list(open_records.items())[:5])}",
    )
    for task_id, record in records.items():
        key = f"videos/{task_id}.mp4"
        if record.get("status") == "STORED":
            result.expect(
                stored.get(key, ("", 0))[0] == record.get("sha256"),
                f"{stack.name}: {task_id} is STORED but its object's sha256 differs from the record's",
            )
        else:
            result.expect(
                key not in per_key, f"{stack.name}: {task_id} is {record.get('status')} but has an object"
            )
    return stored


class Stacks:
    """The stacks the scenarios share, each started on first use; stop() ends them all."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="videohook-reliability-"))
        self.started: dict[str, LocalStack] = {}
        self.lock = threading.Lock()

    def __getitem__(self, name: str) -> LocalStack:
        with self.lock:
            if name not in self.started:
                self.started[name] = LocalStack(name, dict(PROFILES[name]), self.log_dir).start_healthy()
            return self.started[name]

    def stop(self) -> None:
        for stack in self.started.values():
            with contextlib.suppress(RuntimeError):  # killed after the timeout: nothing else to do
                stack.stop()
        self.started.clear()

    def __enter__(self) -> Stacks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(5).hex()}"
