"""`make reliability`: the reliability scenarios at full size against the local stack.

    PYTHONPATH=handler:. python -m tests.reliability [--size full|ci] [--only 1,3] [--logs DIR]

Starts the local stacks the scenarios need (`python -m infra.local.serve` subprocesses on
free ports; see harness.py beside this file), runs every scenario of scenarios.py, and
prints a summary row per scenario (tried, passed, lost, seconds) with the checks every
scenario ends with, then the hostile-input table. Exit 0
when every scenario passed, 1 otherwise (each problem is printed in words). The stacks'
logs are kept in --logs (default: a new temporary directory, named when the run starts).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tests.reliability.harness import Result, Stacks
from tests.reliability.report import checks, hostile_table, summary
from tests.reliability.scenarios import CI, FULL, SCENARIOS

SIZES = {"full": FULL, "ci": CI}


def run(size: str, only: set[int] | None, log_dir: Path | None) -> int:
    sizes = SIZES[size]
    results: list[Result] = []
    started = time.monotonic()
    with Stacks(log_dir) as stacks:
        print(f"reliability ({size} size); stack logs in {stacks.log_dir}", flush=True)
        for scenario in SCENARIOS:
            if only and scenario.number not in only:
                continue
            print(f"--- scenario {scenario.name} ...", flush=True)
            try:
                result = scenario(stacks, sizes)
            except Exception as error:  # a scenario that crashes still gets its row
                result = Result(
                    scenario.name, scenario.unit, problems=[f"crashed: {type(error).__name__}: {error}"]
                )
            results.append(result)
            print(
                f"    {result.name}: {result.passed}/{result.tried} passed, {result.lost} lost, {result.seconds:.1f} s"
            )
            print(checks(result))
            for problem in result.problems[:40]:
                print(f"    PROBLEM {problem}")
    print()
    print(summary(results))
    hostile = hostile_table(results)
    if hostile:
        print()
        print(hostile)
    ok = all(r.ok for r in results)
    print(
        f"\n{'all scenarios passed' if ok else 'SOME SCENARIOS FAILED'} in {time.monotonic() - started:.0f} s"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--only", help="comma-separated scenario numbers: 1 storm, 2 sources, 3 kill, 4 faults, 6 hostile"
    )
    parser.add_argument("--logs", type=Path, help="directory for the stacks' logs")
    args: Any = parser.parse_args(argv)
    only = {int(n) for n in args.only.split(",")} if args.only else None
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    return run(args.size, only, args.logs)


if __name__ == "__main__":
    sys.exit(main())
