"""The top-level folders import each other in one direction only, and unit tests spawn nothing.

handler/ <- testkit/ <- infra/ <- bench/; tests/ may import all of them; nothing imports
tests/ (docs/architecture.md). Every import statement counts, also one inside a function.
Unit tests (`make unit`) run in-process: no subprocess, no local stack.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLER = ROOT / "handler"

# What each layer may import, besides the standard library and third-party packages.
ALLOWED = {
    "handler": {"handler"},
    "testkit": {"handler", "testkit"},
    "infra": {"handler", "testkit", "infra"},
    "bench": {"handler", "testkit", "infra", "bench"},
    "tests": {"handler", "testkit", "infra", "bench", "tests", "videohook_cli"},
    # The `videohook` command: the core it shares with the functions, never the tools around them.
    "videohook_cli": {"handler", "videohook_cli"},
}
# Imports that start processes or the local stack: integration tests only.
SPAWNING = {"subprocess", "multiprocessing", "infra.local.harness", "infra.local.serve", "infra.local.worker"}
INTEGRATION_DIRS = {"integration", "reliability"}


def handler_modules() -> set[str]:
    """The names the Lambda code is imported by: handler/*.py and the packages in handler/."""
    return {
        path.stem if path.suffix == ".py" else path.name
        for path in HANDLER.iterdir()
        if (path.suffix == ".py" or (path / "__init__.py").exists()) and not path.name.startswith("_")
    }


def layer_of(module: str, handler: set[str]) -> str | None:
    """The layer an imported module belongs to; None for the standard library and packages."""
    top = module.split(".", 1)[0]
    if top in handler:
        return "handler"
    return top if top in ALLOWED else None


def imports(source: str, package: str = "") -> Iterator[tuple[int, str]]:
    """(line, module) of every import in `source`, relative ones resolved against `package`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield node.lineno, base
            for alias in node.names:  # `from infra import template` imports infra.template
                yield node.lineno, f"{base}.{alias.name}"


def python_files(layer: str) -> Iterator[Path]:
    folder = HANDLER if layer == "handler" else ROOT / layer
    for path in sorted(folder.rglob("*.py")):
        if not {".venv", "__pycache__", ".aws-sam"} & set(path.parts):
            yield path


def package_of(path: Path, layer: str) -> str:
    base = HANDLER if layer == "handler" else ROOT
    return ".".join(path.relative_to(base).parent.parts)


def violations(layer: str, path: Path, source: str, handler: set[str]) -> list[str]:
    """One problem per import statement that reaches a layer `layer` may not import."""
    found: dict[int, str] = {}
    for line, module in imports(source, package_of(path, layer)):
        target = layer_of(module, handler)
        if target is not None and target not in ALLOWED[layer] and line not in found:
            found[line] = f"{path.relative_to(ROOT)}:{line} ({layer}) imports {module} ({target})"
    return list(found.values())


def test_no_folder_imports_against_the_dependency_direction() -> None:
    # GIVEN every Python file of handler/, testkit/, infra/, bench/ and tests/
    handler = handler_modules()
    assert {"videohook", "ingest", "transfer"} <= handler
    # WHEN each import is mapped to the folder it comes from
    found = [
        problem
        for layer in ALLOWED
        for path in python_files(layer)
        for problem in violations(layer, path, path.read_text(), handler)
    ]
    # THEN none points up the chain, and nothing outside tests/ imports tests/
    assert found == []


@pytest.mark.parametrize(
    ("layer", "source", "culprit"),
    [
        ("infra", "def f():\n    from tests.reliability import harness\n", "tests.reliability"),
        ("testkit", "import infra.template\n", "infra.template"),
        ("handler", "from testkit import media\n", "testkit"),
        ("bench", "from tests.conftest import HMAC_KEY\n", "tests.conftest"),
        ("infra", "from bench import transfer_bench\n", "bench"),
    ],
)
def test_an_import_against_the_direction_is_found(layer: str, source: str, culprit: str) -> None:
    # GIVEN a file of `layer` with one import against the direction (at any depth)
    path = (HANDLER if layer == "handler" else ROOT / layer) / "example.py"
    # WHEN it is checked THEN that import is named
    [problem] = violations(layer, path, source, handler_modules())
    assert f"imports {culprit} " in problem


def test_an_allowed_import_is_not_flagged() -> None:
    source = (
        "from videohook import mp4\nimport testkit.media\nfrom infra.template import Stack\nimport json\n"
    )
    assert violations("bench", ROOT / "bench" / "example.py", source, handler_modules()) == []


def test_unit_tests_start_no_process_and_no_local_stack() -> None:
    # GIVEN every test module outside tests/integration and tests/reliability
    found = []
    for path in python_files("tests"):
        if INTEGRATION_DIRS & set(path.relative_to(ROOT / "tests").parts):
            continue
        # WHEN its imports are read THEN none starts a process or the local stack
        for line, module in imports(path.read_text(), package_of(path, "tests")):
            if any(module == name or module.startswith(name + ".") for name in SPAWNING):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert found == []
