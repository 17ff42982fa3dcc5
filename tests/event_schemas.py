"""The JSON Schemas of the task events' details (docs/schemas), and a validator for tests.

Every event a test sees published goes through `check_event`: its envelope is checked
against what docs/events.md promises and its detail against the schema of its type.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
SCHEMA_OF = {
    "Video Stored": "video-stored.json",
    "Video Generation Failed": "video-generation-failed.json",
    "Video Transfer Failed": "video-transfer-failed.json",
}


@cache
def validator(detail_type: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / SCHEMA_OF[detail_type]).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def check_event(envelope: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge event as a target receives it: checked, its detail returned."""
    assert envelope["source"] == "videohook", envelope
    assert envelope["detail-type"] in SCHEMA_OF, envelope
    validator(envelope["detail-type"]).validate(envelope["detail"])
    return envelope["detail"]
