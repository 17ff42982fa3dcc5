"""`GET /tasks/{task_id}`: the record, plus a short-lived download link once stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from videohook.errors import NotFound
from videohook.lifecycle import TaskStatus, public_record
from videohook.models import TASK_ID_PATTERN
from videohook.store import TaskStore

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DOWNLOAD_URL_SECONDS = 15 * 60


def task_view(store: TaskStore, s3: S3Client, task_id: str) -> dict[str, Any]:
    """The public record; 404 for an unknown task, an id no task can have included (docs/api.md)."""
    item = store.get(task_id) if TASK_ID_PATTERN.fullmatch(task_id) else None
    if item is None:
        raise NotFound("no task with this id", code="task_not_found")
    record = public_record(item)
    if record.get("status") == TaskStatus.STORED:
        params = {"Bucket": record["s3_bucket"], "Key": record["s3_key"]}
        if record.get("s3_version_id"):
            params["VersionId"] = record["s3_version_id"]
        record["download_url"] = s3.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=DOWNLOAD_URL_SECONDS
        )
    return record
