"""Lambda's context object, for invoking a handler in this process (tests, benches, the local stack)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LambdaContext:
    """The attributes and method of Lambda's context object that handlers and Powertools read.

    The defaults serve tests and benchmarks that invoke a handler directly.
    """

    function_name: str = "videohook"
    memory_limit_in_mb: int = 256
    timeout_seconds: int = 300
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:videohook"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    identity: Any = None
    client_context: Any = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
