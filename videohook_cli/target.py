"""Which videohook a command talks to: the local stack or a deployed stack, never a guess.

* Local (`--local [API_URL]`, `VIDEOHOOK_LOCAL`): everything comes from the local stack's
  own `GET /_local/stack` (its callback token and HMAC key, its template outputs, its
  embedded AWS endpoint and region). AWS calls go to that endpoint with moto's dummy keys,
  whatever credentials the shell holds.
* Deployed (`--stack NAME [--region R]`, `VIDEOHOOK_STACK`, `AWS_REGION`): the stack's
  CloudFormation outputs and its secrets are read with the caller's credentials; calls to the
  `/tasks` routes are signed with SigV4 (service `execute-api`), as their IAM auth requires.

Nothing here touches AWS before a target has been chosen (docs/cli.md).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests

from videohook_cli.errors import CliError

DEFAULT_LOCAL_API = "http://127.0.0.1:3000"


def default_local_api(env: Mapping[str, str]) -> str:
    """The local stack's URL: port `API_PORT` when set (as `make serve` reads it), else 3000."""
    port = env.get("API_PORT", "").strip()
    return f"http://127.0.0.1:{port}" if port.isdigit() else DEFAULT_LOCAL_API


LOCAL_STACK_PATH = "/_local/stack"
LOCAL_KEYS = ("testing", "testing")  # moto's dummy credentials: the embedded endpoint takes any
HTTP_TIMEOUT = (5, 30)  # connect, read (seconds)
NO_TARGET = (
    "no target: pass --local [API_URL] for the local stack (make serve) or --stack NAME [--region R] "
    "for a deployed one (or set VIDEOHOOK_LOCAL / VIDEOHOOK_STACK)"
)


@dataclass(frozen=True)
class Resources:
    """What a stack is made of, by the template's output names (the same locally and deployed)."""

    outputs: dict[str, str]

    def get(self, name: str) -> str:
        value = self.outputs.get(name)
        if not value:
            raise CliError(f"the stack has no {name} output (is it a videohook stack of this version?)")
        return value


def choose(local: str | None, stack: str | None, region: str | None, env: dict[str, str]) -> Target:
    """The one target the options (or, failing them, the environment) name; CliError otherwise."""
    if local is not None and stack is not None:
        raise CliError("choose one target: --local or --stack, not both")
    if local is None and stack is None:
        env_local, env_stack = env.get("VIDEOHOOK_LOCAL", "").strip(), env.get("VIDEOHOOK_STACK", "").strip()
        if env_local and env_stack:
            raise CliError(
                "VIDEOHOOK_LOCAL and VIDEOHOOK_STACK are both set: unset one, or pass --local/--stack"
            )
        if env_local:
            if env_local.lower() in ("1", "true", "yes", "on"):
                return LocalTarget(default_local_api(env))
            return LocalTarget(_check_api_url(env_local, "VIDEOHOOK_LOCAL"))
        if env_stack:
            stack = env_stack
    if local is not None:
        if region:
            raise CliError("--region is for --stack; the local stack has its own region")
        return LocalTarget(_check_api_url(local))
    if stack is not None:
        return DeployedTarget(stack, region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None)
    raise CliError(NO_TARGET)


def _check_api_url(url: str, where: str = "--local") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"{where} takes the local API's URL, like {DEFAULT_LOCAL_API}; got {url!r}")
    return url.rstrip("/")


class Target(ABC):
    """A videohook stack: its HTTP API, its callback secrets and its AWS resources."""

    description: str
    api_url: str

    # --- HTTP API ---------------------------------------------------------------------

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> requests.Response:
        """Call a `/tasks` route (signed where the stack requires it)."""
        url = self.api_url + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        headers = self.sign(method, url, data, headers)
        return self.http(method, url, data=data, headers=headers)

    def sign(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        return headers

    def http(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, url, timeout=HTTP_TIMEOUT, **kwargs)
        except requests.ConnectionError:
            where = "" if self.description.endswith(_origin(url)) else f" ({_origin(url)})"
            raise CliError(f"cannot reach {self.description}{where}{self.unreachable_hint}") from None
        except requests.Timeout:
            raise CliError(f"{self.description} did not answer in time ({_origin(url)})") from None

    unreachable_hint = ""

    @property
    @abstractmethod
    def flags(self) -> str:
        """The target as options, for a command line the user may copy (`--local`, `--stack NAME`)."""

    def json(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        """Call a route and return its JSON; an error answer becomes one CliError line."""
        answer = self.call(method, path, params=params, body=body)
        return answer_json(answer)

    # --- what differs between local and deployed ----------------------------------------

    @property
    @abstractmethod
    def resources(self) -> Resources:
        """The stack's outputs."""

    @abstractmethod
    def callback_token(self) -> str | None:
        """The URL token callbacks must carry, or None when the stack checks none."""

    @abstractmethod
    def hmac_key(self) -> str | None:
        """A provider HMAC key the stack accepts, or None when it checks no signature."""

    @abstractmethod
    def aws_client(self, service: str) -> Any:
        """A boto3 client for the stack's own AWS (embedded endpoint, or the caller's account)."""

    def callback_url(self) -> str:
        """The callBackUrl to give the provider: the API's /callbacks with the token."""
        url = self.resources.get("ApiBaseUrl").rstrip("/") + "/callbacks"
        token = self.callback_token()
        return f"{url}?token={quote(token, safe='')}" if token else url


def answer_json(answer: requests.Response) -> Any:
    try:
        document = answer.json()
    except ValueError:
        document = None
    if answer.ok and document is not None:
        return document
    if isinstance(document, dict) and (document.get("message") or document.get("error")):
        code = f"{document['error']}, " if document.get("error") else ""
        message = document.get("message") or document.get("error")
        raise CliError(f"{message} ({code}HTTP {answer.status_code})")
    text = " ".join(answer.text.split())[:200]
    raise CliError(f"HTTP {answer.status_code} from {_origin(answer.url)}: {text or answer.reason}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class LocalTarget(Target):
    """The local stack (`make serve`) at `api_url`."""

    unreachable_hint = ": is the local stack running? start it with `make serve`"

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.description = f"the local stack at {api_url}"

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> requests.Response:
        """Make sure a videohook local stack answers there first (once), then call the route."""
        self.stack  # noqa: B018 - a server that is not a videohook stack is named as such, in one line
        return super().call(method, path, params=params, body=body)

    @property
    def flags(self) -> str:
        return "--local" if self.api_url == default_local_api(os.environ) else f"--local {self.api_url}"

    @cached_property
    def stack(self) -> dict[str, Any]:
        """The local stack's own description of itself (infra/local: GET /_local/stack)."""
        answer = self.http("GET", self.api_url + LOCAL_STACK_PATH, headers={"Accept": "application/json"})
        if answer.status_code == 404 or not answer.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            raise CliError(f"{self.api_url} is not a videohook local stack (no {LOCAL_STACK_PATH})")
        return answer_json(answer)

    @property
    def resources(self) -> Resources:
        return Resources(dict(self.stack["outputs"]))

    def callback_token(self) -> str | None:
        return self.stack.get("callback_token") or None

    def hmac_key(self) -> str | None:
        return self.stack.get("hmac_key") or None

    def aws_client(self, service: str) -> Any:
        """A client of the embedded endpoint, with its dummy keys (never the shell's credentials)."""
        import boto3

        key, secret = LOCAL_KEYS
        return boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name=self.stack["region"]
        ).client(service, endpoint_url=self.stack["aws_endpoint"])


class DeployedTarget(Target):
    """A stack deployed with `sam deploy`, reached with the caller's AWS credentials."""

    def __init__(self, stack_name: str, region: str | None) -> None:
        self.stack_name = stack_name
        self.region = region
        self.description = f"stack {stack_name}" + (f" in {region}" if region else "")

    @property
    def flags(self) -> str:
        return f"--stack {self.stack_name}" + (f" --region {self.region}" if self.region else "")

    @cached_property
    def session(self) -> Any:
        import boto3

        session = boto3.session.Session(region_name=self.region)
        if not session.region_name:
            raise CliError("no AWS region: pass --region R or set AWS_REGION")
        self.region = session.region_name
        self.description = f"stack {self.stack_name} in {self.region}"
        return session

    def aws_client(self, service: str) -> Any:
        return self.session.client(service)

    @cached_property
    def _resources(self) -> Resources:
        with aws_errors(f"reading {self.description}"):
            stacks = self.aws_client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return Resources(outputs)

    @property
    def resources(self) -> Resources:
        return self._resources

    @property
    def api_url(self) -> str:  # type: ignore[override]
        return self.resources.get("ApiBaseUrl").rstrip("/")

    def _secret(self, output: str) -> str | None:
        arn = self.resources.outputs.get(output)
        if not arn:
            return None
        with aws_errors(f"reading the secret of {output}"):
            return str(self.aws_client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])

    def callback_token(self) -> str | None:
        return self._secret("CallbackTokenSecretArn")

    def hmac_key(self) -> str | None:
        keys = self._secret("WebhookHmacSecretArn")
        # Several keys during rotation, comma-separated: the provider signs with one of them.
        return next((k.strip() for k in (keys or "").split(",") if k.strip()), None)

    def sign(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
        """SigV4 for API Gateway's IAM auth (service `execute-api`), with botocore's signer."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self.session.get_credentials()
        if credentials is None:
            raise CliError(
                "no AWS credentials found: configure a profile or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
            )
        request = AWSRequest(method=method, url=url, data=data or b"", headers=headers)
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        return dict(request.headers.items())


@contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn botocore's exceptions into one CliError line saying what was being done."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    try:
        yield
    except NoCredentialsError:
        raise CliError(
            f"{doing}: no AWS credentials found (configure a profile, or set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        ) from None
    except NoRegionError:
        raise CliError(f"{doing}: no AWS region: pass --region R or set AWS_REGION") from None
    except EndpointConnectionError as exc:
        raise CliError(f"{doing}: cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = " ".join(str(error.get("Message") or "").split())
        raise CliError(f"{doing}: {error.get('Code', 'error')}: {message}".rstrip(": ")) from None
    except BotoCoreError as exc:
        raise CliError(f"{doing}: {exc}") from None
