"""A capture of every log record the project writes, whatever logger writes it.

Powertools' logger writes to the stdout it found at import time, which pytest's capture
fixtures do not see; this handler sits on the loggers themselves instead. Use as a fixture's body:

    @pytest.fixture
    def log_lines() -> Iterator[list[str]]:
        yield from captured_log_lines()
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from importlib import import_module

from infra.template import Stack


class LogLines(logging.Handler):
    """Every log record of the process, as text with all its fields (message, args, extras)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: repr(v) for k, v in vars(record).items()}
        fields["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # As a log formatter prints it: the exception and every cause or context it chains.
            fields["exception"] = "".join(traceback.format_exception(record.exc_info[1]))
        self.lines.append(json.dumps(fields))


def captured_log_lines() -> Iterator[list[str]]:
    """Every record the project logs, at every level (the AWS SDK's own DEBUG output is not ours).

    The handler sits on the root logger (where the Powertools logger and the core's module
    loggers propagate) and on any logger that does not propagate.
    """
    stack = Stack.from_file()
    for name in stack.functions():  # their loggers exist once the entry modules are imported
        import_module(stack.function_spec(name)["Handler"].rsplit(".", 1)[0])
    capture = LogLines()
    known = [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    hosts = [logging.getLogger()] + [logger for logger in known if not logger.propagate]
    ours = [logger for logger in known if logger.name.split(".", 1)[0] in ("videohook", "infra")]
    levels = [logger.level for logger in ours]
    for logger in hosts:
        logger.addHandler(capture)
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    yield capture.lines
    for logger in hosts:
        logger.removeHandler(capture)
    for logger, level in zip(ours, levels, strict=True):
        logger.setLevel(level)
