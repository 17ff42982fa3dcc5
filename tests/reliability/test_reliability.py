"""The reliability scenarios at CI size, as part of `make test`.

The same scenarios `make reliability` runs at full size (`python -m tests.reliability`), against
the local stack started as subprocesses and reached only over HTTP and the embedded AWS
endpoint: a storm of duplicated callbacks, misbehaving sources, a worker killed mid-copy,
AWS faults mid-copy, hostile input; each ends with the audit (no open multipart upload,
every stored object a valid MP4 with one version per key, every record final). The
summary table is printed at the end of the module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.reliability.harness import Result, Stacks
from tests.reliability.report import hostile_table, summary
from tests.reliability.scenarios import (
    CI,
    Sizes,
    aws_faults,
    callback_storm,
    flaky_sources,
    hostile_input,
    killed_worker,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> Iterator[list[Result]]:
    collected: list[Result] = []
    yield collected
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not collected:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(f"reliability ({CI.name} size)\n{summary(collected)}")
        hostile = hostile_table(collected)
        if hostile:
            reporter.write_line(f"\n{hostile}")


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    with Stacks(tmp_path_factory.mktemp("reliability")) as started:
        yield started


def run(scenario: Callable[[Stacks, Sizes], Result], stacks: Stacks, results: list[Result]) -> None:
    result = scenario(stacks, CI)
    results.append(result)
    problems = "\n".join(result.problems[:30])
    tails = "".join(stack.tail(15) for stack in stacks.started.values()) if not result.ok else ""
    assert result.ok, (
        f"{result.name}: {result.passed}/{result.tried} passed, {result.lost} lost\n"
        f"{problems}\nchecks: {result.checks}{tails}"
    )


def test_duplicated_interleaved_callbacks_store_each_video_once(
    stacks: Stacks, results: list[Result]
) -> None:
    # GIVEN 10 tasks, WHEN 200 signed callbacks for them arrive shuffled from 20 senders,
    # THEN every one is answered 200 and counted, and each video is stored exactly once
    run(callback_storm, stacks, results)


def test_sources_that_drop_ignore_range_or_trickle_are_stored_intact(
    stacks: Stacks, results: list[Result]
) -> None:
    # GIVEN sources that drop at random offsets, ignore Range, trickle, redirect, or end at close
    # THEN every video is stored with the source's sha256
    run(flaky_sources, stacks, results)


def test_a_worker_killed_mid_copy_is_taken_over_and_leaves_no_upload(
    stacks: Stacks, results: list[Result]
) -> None:
    # GIVEN a copy under way in a worker process, WHEN the process is SIGKILLed,
    # THEN another finishes the task after the lease expires, and the orphan upload is aborted
    run(killed_worker, stacks, results)


def test_aws_faults_mid_copy_are_retried_and_orphan_nothing(stacks: Stacks, results: list[Result]) -> None:
    # GIVEN S3 and DynamoDB errors injected into a copy (and into the callback path)
    # THEN each task is stored, on a second attempt when the fault outlasts the SDK's retries
    run(aws_faults, stacks, results)


def test_hostile_input_is_refused_or_harmless(stacks: Stacks, results: list[Result]) -> None:
    # GIVEN SSRF URLs, oversize and malformed bodies, bad tokens and signatures, replays
    # THEN each is refused with its status, or (a replay within the window) changes nothing
    run(hostile_input, stacks, results)
