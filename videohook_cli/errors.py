"""The one error the command shows: a single line on stderr and a non-zero exit."""

from __future__ import annotations


class CliError(Exception):
    """What went wrong, in one line a user can act on; `exit_code` 1 unless said otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())
        self.exit_code = exit_code
