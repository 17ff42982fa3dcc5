"""The reliability run's tables: a summary row per scenario, its checks, the hostile-input table."""

from __future__ import annotations

from tests.reliability.harness import Result

NUMERIC = {"tried", "passed", "lost", "seconds", "as expected"}


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table; the count columns are right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = [name in NUMERIC for name in header]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])


def summary(results: list[Result]) -> str:
    rows = [
        [
            r.name,
            r.unit,
            str(r.tried),
            str(r.passed),
            str(r.lost),
            f"{r.seconds:.1f}",
            "ok" if r.ok else "FAILED",
        ]
        for r in results
    ]
    return table(rows, ["scenario", "unit", "tried", "passed", "lost", "seconds", "result"])


def checks(result: Result) -> str:
    lines = []
    for name, value in result.checks.items():
        if name == "categories":
            continue
        lines.append(f"    {name}: {value}")
    return "\n".join(lines)


def hostile_table(results: list[Result]) -> str:
    rows: list[list[str]] = []
    for result in results:
        for name, expected, tried, passed, example in result.checks.get("categories", []):
            rows.append([name, expected, str(tried), str(passed), example[:50]])
    return table(rows, ["hostile input", "expected", "tried", "as expected", "e.g."]) if rows else ""
