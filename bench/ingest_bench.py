"""How long the ingest function takes: cold import, and its own work per callback.

    PYTHONPATH=handler:. .venv/bin/python bench/ingest_bench.py
        [--callbacks 2000] [--warmup 20] [--imports 7] [--source-imports 3]

(a) Cold import: `import ingest` timed inside fresh interpreters (the part of a Lambda cold
    start that is ours), with the template's Powertools environment; once with a warm .pyc
    cache, and once compiling every module from source (a package shipped without .pyc).
    Both use a private temporary bytecode cache, so nothing is written into the tree.
(b) Per callback: the real `ingest.lambda_handler` on signed API Gateway events, against the
    template's resources made on moto in this process, over a mix of new tasks, duplicates
    and failure callbacks. Every AWS client call is timed by botocore event hooks on the
    function's own clients, from `provide-client-params` (the first event of a client call)
    to `after-call`/`after-call-error` (the last), so "AWS calls" covers parameter
    validation, serialization, endpoint resolution, moto's in-process backend (standing in
    for the network round trip) and response parsing; "own work" is the rest of the
    handler's wall time: routing, validation, signatures, plans, logging and metrics.
    Logs and metrics are written as in Lambda (to a /dev/null stdout); X-Ray is off, as
    Powertools' Tracer disables itself outside Lambda.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "handler")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

HMAC_KEY = "bench-hmac-key"
IMPORT_SNIPPET = "import time; t=time.perf_counter(); import ingest; print(time.perf_counter()-t)"


def template_environment() -> dict[str, str]:
    """The Powertools variables every function gets from template.yaml's Globals."""
    from infra.template import load_template

    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    return {k: str(v) for k, v in variables.items() if k.startswith("POWERTOOLS_")}


# --- (a) cold import ------------------------------------------------------------------------


def cold_imports(runs: int, *, bytecode_cache: bool) -> list[float]:
    """`import ingest` in fresh interpreters, its .pyc files in a private temporary cache.

    With `bytecode_cache`, one untimed run fills the cache and the timed runs read it (a
    warm container image); without, nothing is cached and every module is compiled from
    source each time (a deployment package shipped without .pyc files).
    """
    with tempfile.TemporaryDirectory(prefix="ingest-bench-pyc-") as cache:
        env = dict(os.environ)
        env.update(template_environment())
        env.update(
            PYTHONPATH=os.pathsep.join([str(ROOT / "handler"), str(ROOT)]),
            PYTHONPYCACHEPREFIX=cache,
            AWS_DEFAULT_REGION="us-east-1",
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if not bytecode_cache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        times = []
        for i in range(runs + 1):
            out = subprocess.run(
                [sys.executable, "-c", IMPORT_SNIPPET],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            if i:  # the first run fills the cache (or warms the page cache)
                times.append(float(out.stdout.strip().splitlines()[-1]))
        return times


# --- (b) per callback ------------------------------------------------------------------------


class AwsClock:
    """Sums the wall and CPU time of client calls, fed by botocore's event hooks."""

    def __init__(self) -> None:
        self.wall_ns = 0
        self.cpu_ns = 0
        self.calls = 0
        self._started: tuple[int, int] | None = None

    def start(self, **_: Any) -> None:
        self._started = (time.perf_counter_ns(), time.thread_time_ns())

    def stop(self, **_: Any) -> None:
        if self._started is not None:
            wall, cpu = self._started
            self.wall_ns += time.perf_counter_ns() - wall
            self.cpu_ns += time.thread_time_ns() - cpu
            self.calls += 1
            self._started = None

    def take(self) -> tuple[int, int, int]:
        taken = (self.wall_ns, self.cpu_ns, self.calls)
        self.wall_ns, self.cpu_ns, self.calls = 0, 0, 0
        return taken

    def attach(self, session: Any) -> None:
        """Hook the session the function's clients are made from (each copies its events)."""
        events = session.events
        events.register("provide-client-params", self.start, unique_id="bench-aws-start")
        events.register("after-call", self.stop, unique_id="bench-aws-stop")
        events.register("after-call-error", self.stop, unique_id="bench-aws-stop-error")


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send fd 1 to /dev/null: the handler still formats and writes its logs and metrics."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def callback_events(
    token: str, count: int, seed: int = 7
) -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    """(kind, event factory): 50% new tasks, 40% duplicates of earlier ones, 10% failures."""
    from testkit.callbacks import callback_body, load_event, signed_event

    template = load_event("callback_success.json")
    rng = random.Random(seed)
    known: list[str] = []

    def make(body: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: signed_event(template, key=HMAC_KEY, token=token, body=body)

    for i in range(count):
        roll = rng.random()
        if roll < 0.4 and known:
            kind, task_id = "duplicate", rng.choice(known)
            body = callback_body(task_id, _url(task_id), msg="success")
        elif roll < 0.5:
            kind, task_id = "failure", f"bench-fail-{i:05d}"
            body = callback_body(task_id, None, code=501)
        else:
            kind, task_id = "new", f"bench-task-{i:05d}"
            known.append(task_id)
            body = callback_body(task_id, _url(task_id), msg="success")
        yield kind, make(body)


def _url(task_id: str) -> str:
    return f"https://cdn.example.com/videos/{task_id}.mp4?Expires=1795615200&Signature=abc"


@dataclass
class Sample:
    kind: str
    total_ns: int
    aws_ns: int
    aws_calls: int
    total_cpu_ns: int
    aws_cpu_ns: int

    @property
    def own_ns(self) -> int:
        return self.total_ns - self.aws_ns

    @property
    def own_cpu_ns(self) -> int:
        return self.total_cpu_ns - self.aws_cpu_ns


def run_callbacks(count: int, warmup: int) -> tuple[Sample, list[Sample]]:
    os.environ.update(template_environment())
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_DEV="false",
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import boto3
    from moto import mock_aws

    with mock_aws():
        from infra.template import Stack

        session = boto3.session.Session()
        stack = Stack.from_file({"ProviderHmacKey": HMAC_KEY}).create(session)
        os.environ.update(stack.function_environment("IngestFunction"))
        token = session.client("secretsmanager").get_secret_value(
            SecretId=stack.physical["CallbackTokenSecret"]
        )["SecretString"]

        import ingest
        from testkit.lambda_context import LambdaContext
        from videohook import aws, services

        services.reset()
        clock = AwsClock()
        clock.attach(aws._session())  # before the first invocation makes its clients
        context = LambdaContext(function_name="videohook-bench", timeout_seconds=15)
        samples: list[Sample] = []
        statuses: dict[int, int] = defaultdict(int)
        events = callback_events(token, 1 + warmup + count)
        with quiet_stdout():
            for i, (kind, build) in enumerate(events):
                event = build()
                clock.take()
                started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
                answer = ingest.lambda_handler(event, context)
                total, total_cpu = time.perf_counter_ns() - started, time.thread_time_ns() - started_cpu
                aws_ns, aws_cpu_ns, calls = clock.take()
                statuses[answer["statusCode"]] += 1
                kind = kind if i else "first"
                samples.append(Sample(kind, total, aws_ns, calls, total_cpu, aws_cpu_ns))
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected answers: {dict(statuses)}")
    return samples[0], samples[1 + warmup :]


# --- report ------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(ns: float) -> float:
    return ns / 1e6


def report(imports: dict[str, list[float]], first: Sample, samples: list[Sample], warmup: int) -> None:
    kinds = defaultdict(int)
    for s in samples:
        kinds[s.kind] += 1
    print(f"python {sys.version.split()[0]}, moto in-process, {len(samples)} callbacks measured")
    print()
    print("(a) cold `import ingest` in fresh interpreters (each variant after 1 untimed run)")
    for label, key in (("with a warm .pyc cache", "cached"), ("compiling from source (no .pyc)", "source")):
        values = imports.get(key)
        if not values:
            continue
        print(
            f"    {label:<32}{len(values):>2} runs: median {1000 * statistics.median(values):7.1f} ms"
            f"   min {1000 * min(values):7.1f} ms   max {1000 * max(values):7.1f} ms"
        )
    print()
    print(
        f"(b) first invocation (settings, secrets, clients): total {ms(first.total_ns):.1f} ms,"
        f" AWS {ms(first.aws_ns):.1f} ms in {first.aws_calls} calls, own {ms(first.own_ns):.1f} ms"
    )
    print(f"    then {warmup} untimed warm-up callbacks, then {len(samples)} measured: ", end="")
    print(", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    print()
    header = f"    {'per callback (ms)':<34}{'p50':>8}{'p99':>8}{'mean':>8}{'max':>8}"
    print(header)
    print("    " + "-" * (len(header) - 4))

    def row(label: str, values: list[float]) -> None:
        print(
            f"    {label:<34}{percentile(values, 50):8.2f}{percentile(values, 99):8.2f}"
            f"{statistics.fmean(values):8.2f}{max(values):8.2f}"
        )

    row("handler total (wall)", [ms(s.total_ns) for s in samples])
    row("AWS calls", [ms(s.aws_ns) for s in samples])
    row("handler's own work = total - AWS", [ms(s.own_ns) for s in samples])
    row("  in CPU time (this thread)", [ms(s.own_cpu_ns) for s in samples])
    for kind in sorted(kinds):
        group = [s for s in samples if s.kind == kind]
        calls = statistics.fmean(s.aws_calls for s in group)
        print(f"    {kind} ({len(group)}, {calls:.1f} AWS calls each)")
        row("  total", [ms(s.total_ns) for s in group])
        row("  own work", [ms(s.own_ns) for s in group])
        row("  own work, CPU time", [ms(s.own_cpu_ns) for s in group])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--imports", type=int, default=7, help="timed imports with a .pyc cache")
    parser.add_argument("--source-imports", type=int, default=3, help="timed imports without (0: skip)")
    args = parser.parse_args()
    imports = {
        "cached": cold_imports(args.imports, bytecode_cache=True),
    }
    if args.source_imports:
        imports["source"] = cold_imports(args.source_imports, bytecode_cache=False)
    first, samples = run_callbacks(args.callbacks, args.warmup)
    report(imports, first, samples, args.warmup)


if __name__ == "__main__":
    main()
