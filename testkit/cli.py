"""Sample invocations of every `videohook` command (docs/cli.md), for the tests that must try
each one: with no target, against the local stack, against a deployed stack."""

from __future__ import annotations

#: One well-formed call of each command, without a target option.
EVERY_COMMAND: list[list[str]] = [
    ["tasks"],
    ["show", "t1"],
    ["watch", "t1"],
    ["download", "t1"],
    ["send-callback", "t1", "https://cdn.example.com/v.mp4"],
    ["submit", "t1", "a1"],
    ["callback-url"],
    ["redrive"],
]
