"""The template's functions, run in this process the way Lambda runs them.

Lambda runs one invocation at a time per execution environment ("sandbox") and starts a
new sandbox, with fresh module globals, when all are busy. The handlers rely on that:
Powertools' `APIGatewayRestResolver` keeps the current event on the module's `app`, and
`BatchProcessor` keeps the current batch on the module's `processor`, so two threads in
one module would read each other's requests. Each `LocalFunction` therefore keeps a pool
of sandboxes - private copies of the handler module - and runs each invocation in an idle
one, loading another copy when all are busy (a "cold start"). The shared `videohook`
package (settings, clients, services) is imported once and shared, as within a sandbox.

What is not isolated (all copies share one process): `os.environ`, Powertools' logger
keys and its metric set. Under concurrent invocations a log line may carry another
invocation's keys; the `[function]` tag on each line is always right.

Nor is Powertools' REST resolver: it keeps the current request on a class attribute
shared by every copy of every module (`BaseRouter.current_event`), so two API invocations
at once read each other's requests - the reliability suite's callback storm saw callbacks
counted on the wrong task. Functions with `Api` events are therefore invoked one at a
time (they answer in milliseconds); deployed, each invocation has a process to itself.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from infra.local.logs import log_tag
from infra.template import Stack
from testkit.lambda_context import LambdaContext

log = logging.getLogger("infra.local")
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class Stats:
    invocations: int = 0
    errors: int = 0
    sandboxes: int = 0


class LocalFunction:
    """One `AWS::Serverless::Function` of the template: its handler, limits and sandboxes."""

    def __init__(self, stack: Stack, logical_id: str, prefix: str = "videohook") -> None:
        spec = stack.function_spec(logical_id)
        self.logical_id = logical_id
        self.module_name, _, self.attribute = spec["Handler"].rpartition(".")
        # The module name is what a reader of the template knows the function by.
        self.tag = self.module_name.rsplit(".", 1)[-1]
        self.name = f"{prefix}-{logical_id}"
        self.memory_mb = int(stack.resolve(spec.get("MemorySize", 128)))
        self.timeout_seconds = int(stack.resolve(spec.get("Timeout", 3)))
        self.arn = f"arn:aws:lambda:{stack.region}:{stack.account}:function:{self.name}"
        self.events: dict[str, Any] = spec.get("Events", {})
        self.stats = Stats()
        # One API invocation at a time: Powertools' resolver state is process-wide (see above).
        api = any(event.get("Type") == "Api" for event in self.events.values())
        self._serial: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if api else contextlib.nullcontext()
        )
        self._idle: list[Handler] = []
        self._lock = threading.Lock()
        self._source: str | None = None

    def load(self) -> None:
        """Import the handler once at start-up, so a missing or broken module fails the start."""
        self._idle.append(self._new_sandbox())

    def _new_sandbox(self) -> Handler:
        with self._lock:
            self.stats.sandboxes += 1
            number = self.stats.sandboxes
        with log_tag(self.tag):
            if number == 1:
                module = importlib.import_module(self.module_name)
                self._source = module.__file__
            else:
                module = self._copy(f"{self.module_name}@{number}")
        return getattr(module, self.attribute)

    def _copy(self, name: str) -> ModuleType:
        """A private copy of the handler module (fresh globals), as a new Lambda sandbox has."""
        spec = importlib.util.spec_from_file_location(name, self._source or "")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load another copy of {self.module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and typing look their module up by name
        spec.loader.exec_module(module)
        return module

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run one invocation in an idle sandbox; the handler's exception propagates, logged."""
        with self._serial:
            return self._invoke(event)

    def _invoke(self, event: dict[str, Any]) -> Any:
        with self._lock:
            handler = self._idle.pop() if self._idle else None
        if handler is None:
            handler = self._new_sandbox()
        context = LambdaContext(self.name, self.memory_mb, self.timeout_seconds, self.arn)
        started = time.monotonic()
        try:
            with log_tag(self.tag):
                try:
                    return handler(event, context)
                except Exception:
                    # What Lambda's runtime prints for an unhandled error, in this function's log.
                    print(f"[ERROR] unhandled exception in {self.name}\n{traceback.format_exc().rstrip()}")
                    with self._lock:
                        self.stats.errors += 1
                    raise
        finally:
            seconds = time.monotonic() - started
            with self._lock:
                self.stats.invocations += 1
                self._idle.append(handler)
            if seconds > self.timeout_seconds:
                # Threads cannot be killed; say loudly what Lambda would have done instead.
                log.warning(
                    "%s ran %.1f s, over its %d s timeout: Lambda would have stopped it",
                    self.name,
                    seconds,
                    self.timeout_seconds,
                )
