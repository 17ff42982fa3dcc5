"""AWS clients, made once per container and shared by every invocation.

Timeouts are short and retries few: the ingest function must answer the provider within
its 15 s wait, and a fault answered with 500 is retried by the provider anyway.
`AWS_ENDPOINT_URL` (honoured by boto3 itself) points them at the local stack.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import TYPE_CHECKING, Literal, overload

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

    AnyClient = DynamoDBClient | S3Client | SQSClient | SecretsManagerClient

Service = Literal["dynamodb", "s3", "sqs", "secretsmanager"]

# DynamoDB and SQS answer in milliseconds; the worst case here (2 tries x 5 s) stays well
# inside the provider's 15 s wait, so a fault is answered 500 (retried), never timed out.
CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=3,
    retries={"max_attempts": 2, "mode": "standard"},
)
# S3 is used by the transfer, which has minutes: more tries, longer reads (completing a
# large multipart upload takes a while), SigV4 presigned URLs, and no SHA-256 of every part
# for the signature: each part already carries a CRC32 that S3 verifies, and the connection
# is TLS; hashing 16 MiB twice cost ~15% of a copy's CPU.
S3_CONFIG = CLIENT_CONFIG.merge(
    Config(
        connect_timeout=3,
        read_timeout=120,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        signature_version="s3v4",
    )
)


@lru_cache(maxsize=1)
def _session() -> boto3.session.Session:
    """One session per container: its loader caches the service models clients are built from."""
    return boto3.session.Session()


@overload
def client(service: Literal["dynamodb"]) -> DynamoDBClient: ...
@overload
def client(service: Literal["s3"]) -> S3Client: ...
@overload
def client(service: Literal["sqs"]) -> SQSClient: ...
@overload
def client(service: Literal["secretsmanager"]) -> SecretsManagerClient: ...
def client(service: Service) -> AnyClient:
    """The container's one client for `service`, typed as that service's client."""
    return _client(service)


@cache
def _client(service: Service) -> AnyClient:
    session = _session()
    if service == "s3":
        return session.client("s3", config=S3_CONFIG)
    if service == "dynamodb":
        return session.client("dynamodb", config=CLIENT_CONFIG)
    if service == "sqs":
        return session.client("sqs", config=CLIENT_CONFIG)
    return session.client("secretsmanager", config=CLIENT_CONFIG)


def reset() -> None:
    """Forget every client (tests switch between mocked and real endpoints)."""
    _client.cache_clear()
