"""SQS workers in their own processes: `LOCAL_TRANSFER_PROCESSES=N make serve`.

By default the local stack runs each SQS event source (the transfer function's) as threads
of the serve process. With `LOCAL_TRANSFER_PROCESSES=N`, serve starts N child processes
instead, `python -m infra.local.worker`, each running the same `SqsPoller` over its own
`LocalFunction`; `LOCAL_TRANSFER_CONCURRENCY` poller threads are spread over them. A
supervisor thread in serve starts a new one when one dies, and `GET /health` lists them
(`worker_processes`: pid, the tasks each is working on, restarts). They exist so that a
worker can be killed - SIGKILL, the OOM killer - in the middle of a copy, which is how a
Lambda invocation ends when it reaches its timeout or its container is lost, and so that
what follows can be tested: the lease expires and another worker finishes the task.

Why the visibility timeout differs from Lambda's here. Deployed, an invocation can never
outlive its message's visibility timeout: the queue's 5400 s is six times the transfer
function's 900 s timeout, so a message comes back only once its invocation is over
(finished, failed or killed), and by then the task's lease (`TRANSFER_LEASE_SECONDS`,
default 120 s, renewed every 5 s of progress) has long expired, so the next delivery takes
the task over. A local worker has no timeout and can be killed at any moment; with the
queue's 5400 s its message would come back after an hour and a half. So the workers
receive with `LOCAL_VISIBILITY_SECONDS` (default 2 x lease + 4 s) and a heartbeat extends
the visibility of the messages whose handler is still running, every quarter of it
(triggers.py): a live copy, however long, is never delivered twice, and a killed worker's
message comes back within `LOCAL_VISIBILITY_SECONDS`. It must not come back before the
killed worker's lease has expired: a delivery that finds its task TRANSFERRING under a
live lease is acknowledged and dropped (the holder will finish it), so an early one would
leave the task stuck. The last heartbeat may be a quarter of the timeout old when the
worker dies, and the lease may have been renewed just before, so serve refuses to start
unless the timeout is at least 2 x (lease + 1) s.

A worker exits on SIGTERM or SIGINT after its running batches (serve sends SIGTERM when it
stops), and at once when serve itself is gone (it checks its parent twice a second), so a
killed serve leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from infra.local.lambdas import LocalFunction
from infra.template import ROOT

SPEC_VARIABLE = "LOCAL_WORKER_SPEC"
STATUS_FD_VARIABLE = "LOCAL_WORKER_STATUS_FD"
SUPERVISE_SECONDS = 0.2
PARENT_CHECK_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 10
log = logging.getLogger("infra.local")


def min_visibility_seconds(lease_seconds: int) -> int:
    """The shortest local visibility timeout that never redelivers before a lease expires."""
    return 2 * (lease_seconds + 1)


def default_visibility_seconds(lease_seconds: int) -> int:
    return 2 * lease_seconds + 4


# --- the parent's side: serve starts, watches and restarts the workers --------------------


@dataclass
class _Slot:
    """One worker position: the process filling it now, and its history."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    busy: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    invocations: int = 0
    errors: int = 0


class WorkerPool:
    """N `python -m infra.local.worker` processes for one SQS event source, kept at N."""

    def __init__(
        self, function: LocalFunction, spec: dict[str, Any], processes: int, stop: threading.Event
    ) -> None:
        self.function = function
        self.spec = spec
        self.stop = stop
        self.slots = [_Slot(n) for n in range(processes)]
        self.lock = threading.Lock()
        self.supervisor = threading.Thread(
            target=self._supervise, name=f"{function.tag}-supervisor", daemon=True
        )
        self.stopping = False

    # summaries serve's /health and start-up banner read
    @property
    def concurrency(self) -> int:
        return int(self.spec["concurrency"]) * len(self.slots)

    @property
    def alive(self) -> bool:
        with self.lock:
            running = all(s.process is not None and s.process.poll() is None for s in self.slots)
        return self.supervisor.is_alive() and running

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "pid": s.process.pid if s.process else None,
                    "alive": bool(s.process and s.process.poll() is None),
                    "ready": s.ready,
                    "busy": sorted(set(s.busy.values())),
                    "restarts": s.restarts,
                    "invocations": s.invocations,
                    "errors": s.errors,
                }
                for s in self.slots
            ]

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        self.supervisor.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(s.ready for s in self.slots):
                    return True
                dead = [s for s in self.slots if s.process is not None and s.process.poll() is not None]
            if dead:
                return False
            time.sleep(0.05)
        return False

    def _spawn(self, slot: _Slot) -> None:
        read_fd, write_fd = os.pipe()
        paths = [str(ROOT / "handler"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "PYTHONUNBUFFERED": "1",
            SPEC_VARIABLE: json.dumps({**self.spec, "parent": os.getpid(), "slot": slot.number}),
            STATUS_FD_VARIABLE: str(write_fd),
        }
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "infra.local.worker"], cwd=ROOT, env=env, pass_fds=(write_fd,)
            )
        finally:
            os.close(write_fd)
        with self.lock:
            slot.process, slot.started, slot.busy, slot.ready = process, time.monotonic(), {}, False
        threading.Thread(
            target=self._read_status,
            args=(slot, process, read_fd),
            name=f"{self.function.tag}-status",
            daemon=True,
        ).start()
        log.info("%s: worker process %d started (slot %d)", self.function.tag, process.pid, slot.number)

    def _read_status(self, slot: _Slot, process: subprocess.Popen[bytes], read_fd: int) -> None:
        """Follow one worker's status lines (JSON) until it exits."""
        with os.fdopen(read_fd, "rb") as stream:
            for line in stream:
                try:
                    status = json.loads(line)
                except ValueError:
                    continue
                with self.lock:
                    if slot.process is not process:
                        return  # a replaced worker's last words
                    slot.ready = slot.ready or bool(status.get("ready"))
                    slot.busy = dict(status.get("busy", slot.busy))
                    slot.invocations = int(status.get("invocations", slot.invocations))
                    slot.errors = int(status.get("errors", slot.errors))

    def _supervise(self) -> None:
        while not self.stop.wait(SUPERVISE_SECONDS):
            for slot in self.slots:
                process = slot.process
                if process is None or process.poll() is None or self.stopping:
                    continue
                code = process.returncode
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
                with self.lock:
                    held = sorted(set(slot.busy.values()))
                    slot.restarts += 1
                log.warning(
                    "%s: worker process %d %s%s; starting another",
                    self.function.tag,
                    process.pid,
                    how,
                    f" while handling {', '.join(held)}" if held else "",
                )
                self._spawn(slot)

    def drain(self, timeout: float) -> bool:
        """Stop every worker: SIGTERM, wait for their batches, SIGKILL what is left."""
        self.stopping = True
        processes = [s.process for s in self.slots if s.process is not None]
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + timeout
        clean = True
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                clean = False
                process.kill()
                process.wait()
        return clean


# --- the child's side: one worker process ---------------------------------------------------


class _Status:
    """Status lines to serve over the inherited pipe; a parent gone means exit."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, **fields: Any) -> None:
        line = (json.dumps(fields) + "\n").encode()
        with self.lock:
            try:
                os.write(self.fd, line)
            except OSError:
                os._exit(1)  # serve is gone: so are the queue and the endpoint


def main() -> int:
    from infra.local import logs

    logs.install()
    spec = json.loads(os.environ[SPEC_VARIABLE])
    status = _Status(int(os.environ[STATUS_FD_VARIABLE]))
    parent = int(spec["parent"])
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    import boto3

    from infra.local.environment import template_parameters
    from infra.local.triggers import SqsPoller
    from infra.template import Stack

    stack = Stack.from_file(template_parameters(Stack.from_file(), os.environ))
    stack.region = spec["region"]
    code_dir = str((ROOT / stack.function_spec(spec["function"]).get("CodeUri", ".")).resolve())
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    function = LocalFunction(stack, spec["function"], spec["prefix"])
    warnings.filterwarnings("ignore", "No application metrics to publish")
    function.load()
    logs.isolate_powertools_keys()

    def report(in_flight: dict[str, str]) -> None:
        status.send(busy=in_flight, invocations=function.stats.invocations, errors=function.stats.errors)

    poller = SqsPoller(
        function=function,
        sqs=boto3.session.Session(region_name=stack.region).client("sqs"),
        queue_url=spec["queue_url"],
        queue_arn=spec["queue_arn"],
        region=stack.region,
        batch_size=int(spec["batch_size"]),
        reports_failures=bool(spec["reports_failures"]),
        concurrency=int(spec["concurrency"]),
        retry_seconds=int(spec["retry_seconds"]),
        max_receives=spec["max_receives"],
        stop=stop,
        visibility_seconds=spec["visibility_seconds"],
        on_change=report,
    )
    poller.start()
    status.send(ready=True, busy={})
    log.info(
        "%s: worker process %d ready (%d poller thread(s), visibility %s s with heartbeat)",
        function.tag,
        os.getpid(),
        poller.concurrency,
        poller.visibility_seconds,
    )
    while not stop.wait(PARENT_CHECK_SECONDS):
        if os.getppid() != parent:
            os._exit(1)  # serve died without stopping us (SIGKILL): nothing left to work for
    if not poller.drain(STOP_TIMEOUT_SECONDS):
        log.warning("%s: worker %d abandoned a running batch", function.tag, os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
