"""Settings read once per cold start from the environment (same names deployed and local).

Every value is parsed and checked here so that a bad deployment fails at start-up with one
line naming the variable, instead of failing on the first callback. Secrets given as
`*_SECRET_ARN` are fetched through Powertools Parameters, which caches them between
invocations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from videohook.errors import ConfigError
from videohook.policy import SourcePolicy, is_host_pattern

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

MIB = 1024 * 1024
SECRET_CACHE_SECONDS = 300


@dataclass(frozen=True)
class Settings:
    """Everything a function needs to know about its deployment."""

    videos_bucket: str = ""
    tasks_table: str = ""
    transfer_queue_url: str = ""
    hmac_keys: tuple[str, ...] = field(default=(), repr=False)
    callback_token: str | None = field(default=None, repr=False)
    signature_tolerance_seconds: int = 300
    source_policy: SourcePolicy = field(default_factory=SourcePolicy)
    max_video_bytes: int = 2 * 1024 * MIB
    transfer_part_bytes: int = 16 * MIB
    transfer_concurrency: int = 4
    transfer_max_attempts: int = 5
    lease_seconds: int = 120
    provider_api_base: str = "https://api.sunoapi.org"
    provider_api_key: str | None = field(default=None, repr=False)
    reconcile_after_seconds: int = 300
    callback_base_url: str | None = None
    accept_unknown_tasks: bool = True

    @property
    def authenticates_callbacks(self) -> bool:
        return bool(self.hmac_keys) or self.callback_token is not None


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name} must be at least {minimum}{upper}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw[:40]!r}")


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@lru_cache(maxsize=1)
def _secrets_provider() -> SecretsProvider:
    """Powertools' provider over our shared client (its own would rebuild a boto3 session)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from videohook import aws

    return SecretsProvider(boto3_client=aws.client("secretsmanager"))


def _hosts_allowed(env: Mapping[str, str]) -> tuple[str, ...]:
    """VIDEO_HOSTS_ALLOWED: host names, `*.example.com` patterns or IP addresses, checked."""
    hosts = _list(env.get("VIDEO_HOSTS_ALLOWED", ""))
    for host in hosts:
        if not is_host_pattern(host):
            raise ConfigError(
                f"VIDEO_HOSTS_ALLOWED must list host names or *.example.com patterns, got {host[:60]!r}"
            )
    return tuple(h.lower() for h in hosts)


def _secret(arn: str, name: str) -> str:
    """Fetch a Secrets Manager value through Powertools Parameters (cached per container)."""
    try:
        value = _secrets_provider().get(arn, max_age=SECRET_CACHE_SECONDS)
    except Exception as exc:  # the parameters utility wraps every AWS error differently
        raise ConfigError(f"{name}: secret could not be read ({type(exc).__name__})") from None
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


def _secret_or_plain(env: Mapping[str, str], name: str) -> str | None:
    arn = env.get(f"{name}_SECRET_ARN", "").strip()
    if arn:
        return _secret(arn, f"{name}_SECRET_ARN") or None
    return env.get(name, "").strip() or None


def _hmac_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    """Keys come as a comma list (local) or a secret holding a comma list or a JSON array."""
    arn = env.get("WEBHOOK_HMAC_SECRET_ARN", "").strip()
    raw = _secret(arn, "WEBHOOK_HMAC_SECRET_ARN") if arn else env.get("WEBHOOK_HMAC_KEYS", "")
    if raw.startswith("["):
        source = "WEBHOOK_HMAC_SECRET_ARN" if arn else "WEBHOOK_HMAC_KEYS"
        try:
            items = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{source} must hold a JSON array or a comma list") from None
        return tuple(str(item).strip() for item in items if str(item).strip())
    return _list(raw)


def _url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name, "").strip() or default
    if raw is None:
        return None
    if not raw.startswith(("https://", "http://")) or len(raw) < 10:
        raise ConfigError(f"{name} must be an absolute http(s) URL")
    return raw.rstrip("/")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse and check the environment; raise ConfigError naming the first bad variable."""
    env = os.environ if env is None else env
    part_bytes = _int(env, "TRANSFER_PART_BYTES", 16 * MIB, minimum=5 * MIB, maximum=5 * 1024 * MIB)
    return Settings(
        videos_bucket=env.get("VIDEOS_BUCKET", ""),
        tasks_table=env.get("TASKS_TABLE", ""),
        transfer_queue_url=env.get("TRANSFER_QUEUE_URL", ""),
        hmac_keys=_hmac_keys(env),
        callback_token=_secret_or_plain(env, "CALLBACK_TOKEN"),
        signature_tolerance_seconds=_int(env, "SIGNATURE_TOLERANCE_SECONDS", 300, minimum=1),
        source_policy=SourcePolicy(
            allow_private=_bool(env, "VIDEO_SOURCE_ALLOW_PRIVATE", False),
            hosts_allowed=_hosts_allowed(env),
        ),
        max_video_bytes=_int(env, "MAX_VIDEO_BYTES", 2 * 1024 * MIB, minimum=1),
        transfer_part_bytes=part_bytes,
        transfer_concurrency=_int(env, "TRANSFER_CONCURRENCY", 4, minimum=1, maximum=64),
        transfer_max_attempts=_int(env, "TRANSFER_MAX_ATTEMPTS", 5, minimum=1),
        lease_seconds=_int(env, "TRANSFER_LEASE_SECONDS", 120, minimum=5),
        provider_api_base=_url(env, "PROVIDER_API_BASE", "https://api.sunoapi.org") or "",
        provider_api_key=_secret_or_plain(env, "PROVIDER_API_KEY"),
        reconcile_after_seconds=_int(env, "RECONCILE_AFTER_SECONDS", 300, minimum=0),
        callback_base_url=_url(env, "CALLBACK_BASE_URL", None),
        accept_unknown_tasks=_bool(env, "ACCEPT_UNKNOWN_TASKS", True),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this container, read on first use (cold start) and kept."""
    return load_settings()


def reset() -> None:
    """Forget the settings and cached secrets (tests change the environment between cases)."""
    get_settings.cache_clear()
    _secrets_provider.cache_clear()
