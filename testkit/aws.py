"""AWS from a test's side: botocore errors, hooks on a client's calls, a local endpoint.

`client_error` is the exception botocore raises for an AWS error answer; `on_call` runs a
function before every call of one operation (to record it, or to raise `client_error`)
for the length of a `with` block; `endpoint_client` and `object_digest` reach an AWS
endpoint on this machine (the local stack's, or a moto server) from the outside.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.exceptions import ClientError

REGION = "us-east-1"
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto's


def client_error(
    operation: str, code: str = "InternalError", message: str = "injected by the test"
) -> ClientError:
    """What botocore raises when `operation` is answered with the error `code`."""
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@contextmanager
def on_call(
    client: Any, operation: str, hook: Callable[..., Any], *, stage: str = "before-call"
) -> Iterator[None]:
    """Call `hook(params=..., **kwargs)` at `stage` of each `operation` call of `client` in the block.

    `operation` is the API name (e.g. "UploadPart"); `stage` a botocore event
    ("before-call", "before-parameter-build", "provide-client-params"). A hook that raises
    makes the call fail with that exception, as an answer from AWS would.
    """
    event = f"{stage}.{client.meta.service_model.endpoint_prefix}.{operation}"
    client.meta.events.register(event, hook)
    try:
        yield
    finally:
        client.meta.events.unregister(event, hook)


def endpoint_client(service: str, endpoint_url: str, session: Any = None) -> Any:
    """A boto3 client for `service` on a local AWS endpoint (moto's dummy credentials)."""
    return (session or boto3.session.Session()).client(
        service, endpoint_url=endpoint_url, region_name=REGION, **LOCAL_CREDENTIALS
    )


def object_digest(
    s3: Any,
    bucket: str,
    key: str,
    version_id: str | None = None,
    *,
    each: Callable[[bytes], Any] | None = None,
) -> tuple[int, str]:
    """Size and sha256 of an object read back in 1 MiB chunks (`each` sees every chunk too)."""
    extra = {"VersionId": version_id} if version_id is not None else {}
    body = s3.get_object(Bucket=bucket, Key=key, **extra)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(1024 * 1024), b""):
        digest.update(chunk)
        size += len(chunk)
        if each is not None:
            each(chunk)
    return size, digest.hexdigest()
