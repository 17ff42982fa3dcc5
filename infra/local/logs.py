"""One log stream for the whole local stack, every line tagged with who wrote it.

Deployed, each function has its own CloudWatch log group; locally all of them run as
threads of one process and write to the same stdout (Powertools logs JSON lines there).
A tiny stdout wrapper prefixes each complete line with the tag of the thread that wrote
it (`[ingest]`, `[transfer]`, `[reconcile]`, or `[stack]` for everything else), so the
function's own output stays byte-for-byte what it would log in Lambda. stderr goes to
the same stream (one ordered stream: tracebacks land next to the lines they explain).
Partial lines are buffered per thread so two threads never splice into one line.

Deployed, each invocation also has its sandbox's Powertools logger to itself; here all
sandboxes share one `logging.Logger` per service, whose formatter keeps the appended keys
(`function_name`, `task_id`, ...) in one dict, so one invocation's lines would carry
another's keys. `isolate_powertools_keys` gives each thread its own keys instead. A
thread started during an invocation (the upload's part pool) starts with a copy of its
creator's tag and keys, as it would share them inside a Lambda sandbox.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

DEFAULT_TAG = "stack"
_local = threading.local()
_write_lock = threading.Lock()
_thread_init = threading.Thread.__init__


def current_tag() -> str:
    tag = getattr(_local, "tag", None)
    if tag is None:
        tag = getattr(threading.current_thread(), "_local_tag", DEFAULT_TAG)
    return tag


def _inheriting_init(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
    """Thread.__init__ that remembers its creator's tag and logger keys."""
    _thread_init(self, *args, **kwargs)
    self._local_tag = current_tag()  # type: ignore[attr-defined]
    keys = getattr(_local, "keys", {})
    self._local_keys = {formatter: dict(k) for formatter, k in keys.items()}  # type: ignore[attr-defined]


@contextmanager
def log_tag(tag: str) -> Iterator[None]:
    """Tag every line this thread writes inside the block (nests; restores the outer tag)."""
    previous = current_tag()
    _local.tag = tag
    try:
        yield
    finally:
        _local.tag = previous


class TaggedStream(io.TextIOBase):
    """A text stream that writes `[tag] line` to `target`, one complete line at a time."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._pending = threading.local()

    def write(self, text: str) -> int:
        buffered = getattr(self._pending, "text", "") + text
        head, newline, tail = buffered.rpartition("\n")
        self._pending.text = tail
        if newline:
            tag = current_tag()
            lines = "".join(f"[{tag}] {line}\n" for line in head.split("\n"))
            with _write_lock:
                self._target.write(lines)
                self._target.flush()  # stdout is block-buffered when piped; logs must not lag
        return len(text)

    def flush(self) -> None:
        with _write_lock:
            self._target.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._target.fileno()

    def isatty(self) -> bool:
        return self._target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")


def install() -> logging.Logger:
    """Route stdout and stderr through the tagger; return the local stack's own logger.

    Must run before any handler module is imported: Powertools binds its log handler to
    whatever `sys.stdout` is when the first `Logger()` is created.
    """
    if not isinstance(sys.stdout, TaggedStream):
        real = sys.stdout
        sys.stdout = TaggedStream(real)
        sys.stderr = TaggedStream(real)
    log = logging.getLogger("infra.local")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%H:%M:%S")
        )
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    threading.Thread.__init__ = _inheriting_init  # type: ignore[method-assign]
    # moto's embedded server logs every AWS call through werkzeug; only problems matter here.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return log


def isolate_powertools_keys() -> int:
    """Give every Powertools log formatter per-thread keys; returns how many were changed.

    The formatter reads and replaces its keys through the `log_format` attribute only
    (append, remove, clear_state), so a per-thread property in its place is enough.
    """
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    changed = 0
    # Only loggers that exist: getLogger() on a placeholder name would create a logger there
    # and become the parent of Powertools' child loggers, orphaning them.
    loggers = [
        lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
    ]
    for handler in [h for lg in loggers for h in lg.handlers]:
        formatter = handler.formatter
        if not isinstance(formatter, LambdaPowertoolsFormatter) or "log_format" not in vars(formatter):
            continue
        base = vars(formatter).pop("log_format")

        def get(self: Any, base: dict[str, Any] = base) -> dict[str, Any]:
            if not hasattr(_local, "keys"):
                _local.keys = getattr(threading.current_thread(), "_local_keys", {})
            if id(self) not in _local.keys:
                _local.keys[id(self)] = dict(base)
            return _local.keys[id(self)]

        def put(self: Any, value: dict[str, Any]) -> None:
            get(self)
            _local.keys[id(self)] = value

        cls = type(formatter)
        formatter.__class__ = type(f"PerThread{cls.__name__}", (cls,), {"log_format": property(get, put)})
        changed += 1
    return changed
