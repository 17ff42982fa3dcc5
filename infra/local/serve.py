"""`make serve`: the whole of videohook on one machine, no AWS account, no Docker.

    PYTHONPATH=handler:. python -m infra.local.serve

One process: an embedded moto server holding the resources template.yaml declares (made
by `infra.template.Stack`, never named here), the HTTP API, the SQS workers and the
schedules, each running the template's handlers as Lambda would (see lambdas.py,
api.py, triggers.py). Configured by docs/configuration.md's variables (environment.py) and:

    AWS_PORT                    embedded AWS endpoint port (default 5000)
    API_PORT                    HTTP API port (default 3000)
    LOCAL_RETRY_SECONDS         a failed SQS message is retried after this (default 2)
    LOCAL_STREAM_RETRY_SECONDS  a failed table-stream batch is retried after this (default 1)
    LOCAL_TRANSFER_CONCURRENCY  SQS worker threads, at most the template's cap (default 4)
    LOCAL_RECONCILE_SECONDS     schedule period (default: the template's rate, 60 s)
    LOCAL_TRANSFER_PROCESSES    run the SQS workers in this many supervised child processes
                                instead of threads (default 0: threads; see worker.py)
    LOCAL_VISIBILITY_SECONDS    receive SQS messages with this visibility timeout, extended by
                                a heartbeat while their handler runs (default with processes:
                                2 x TRANSFER_LEASE_SECONDS + 4; otherwise the queue's own)
    LOCAL_FAULTS                true: inject AWS faults on request (POST /_local/faults on the
                                AWS port; see faults.py). Local testing only.
    LOCAL_FAKE_PROVIDER         true: submits go to the project's fake provider, which calls
                                back with a bundled video (fake_provider.py). Local only.

Besides the template's routes the API serves the console at `/` (console.html) and
`GET /_local/stack`, what the `videohook --local` command needs to know (stack_document).

Ctrl-C or SIGTERM stops everything cleanly and exits 0; the same signal arriving again
while it stops (as it does when `make serve` forwards a process-group SIGTERM) is ignored.
Only a second Ctrl-C at least a second after the first abandons the stop and exits 130.
`make serve` itself, when it is the process that got SIGTERM, waits for this clean stop and
then ends by the signal, as GNU make always does (exit status 143 in a shell). The
embedded AWS keeps its state in memory only: tasks and videos are gone when the stack stops.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Any

import boto3

from infra.local import logs
from infra.local.api import ApiServer, LocalApi, routes_of
from infra.local.environment import (
    create_local_bus,
    function_environment,
    names_resource,
    secret_overrides,
    template_parameters,
)
from infra.local.faults import FaultInjector
from infra.local.lambdas import LocalFunction
from infra.local.streams import StreamPoller, filters_of
from infra.local.triggers import Scheduler, SqsPoller, rate_seconds
from infra.local.worker import WorkerPool, default_visibility_seconds, min_visibility_seconds
from infra.template import ROOT, Stack

HOST = "127.0.0.1"
CONSOLE = ROOT / "infra" / "local" / "console.html"
PREFIX = "videohook"
STOP_TIMEOUT_SECONDS = 10
POLL_SECONDS = 0.1  # how often the servers look for a shutdown request
STREAM_POLL_SECONDS = 0.25  # Lambda polls each stream shard four times a second
FORCE_AFTER_SECONDS = 1.0  # a second Ctrl-C this long after the first abandons the clean stop
log = logging.getLogger("infra.local")


class StartError(Exception):
    """A problem that stops the local stack from starting; its text is the one line shown."""


def _bool_env(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise StartError(f"{name} must be true or false, got {raw[:40]!r}")


def _int_env(env: dict[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise StartError(f"{name} must be a whole number of at least {minimum}, got {raw[:40]!r}")
    return int(raw)


@dataclass(frozen=True)
class LocalSettings:
    """The local stack's own knobs (the functions' settings are docs/configuration.md's variables)."""

    aws_port: int = 5000
    api_port: int = 3000
    retry_seconds: int = 2
    transfer_concurrency: int = 4
    schedule_seconds: int | None = None
    stream_retry_seconds: int = 1
    transfer_processes: int = 0
    visibility_seconds: int | None = None
    faults: bool = False
    fake_provider: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str]) -> LocalSettings:
        return cls(
            aws_port=_int_env(env, "AWS_PORT", 5000) or 0,
            api_port=_int_env(env, "API_PORT", 3000) or 0,
            retry_seconds=_int_env(env, "LOCAL_RETRY_SECONDS", 2) or 0,
            transfer_concurrency=_int_env(env, "LOCAL_TRANSFER_CONCURRENCY", 4, minimum=1) or 1,
            schedule_seconds=_int_env(env, "LOCAL_RECONCILE_SECONDS", None, minimum=1),
            stream_retry_seconds=_int_env(env, "LOCAL_STREAM_RETRY_SECONDS", 1) or 0,
            transfer_processes=_int_env(env, "LOCAL_TRANSFER_PROCESSES", 0) or 0,
            visibility_seconds=_int_env(env, "LOCAL_VISIBILITY_SECONDS", None, minimum=1),
            faults=_bool_env(env, "LOCAL_FAULTS"),
            fake_provider=_bool_env(env, "LOCAL_FAKE_PROVIDER"),
        )


def aws_environment(endpoint: str, region: str) -> dict[str, str | None]:
    """Point every AWS SDK use in this process at the embedded endpoint, with dummy keys.

    Anything that could send a call elsewhere or fail on a developer's real AWS set-up
    (a profile, a session token, per-service endpoint overrides) is removed (None).
    """
    env: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
    }
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        env[name] = None
    env["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"] = None
    for name in os.environ:
        if name.startswith("AWS_ENDPOINT_URL_"):
            env[name] = None
    return env


class AtomicDynamoDB:
    """WSGI wrapper that runs moto's DynamoDB requests one at a time.

    DynamoDB applies each request to an item atomically, and the task store relies on it
    (the transfer lease is a conditional update). moto's server is threaded and its
    UpdateItem checks the condition, then sets attributes on the live item one by one,
    with no lock: a concurrent GetItem saw `status: STORED` without `s3_key`, and two
    conditional updates could both pass. Serialising DynamoDB calls restores the
    guarantee; they take milliseconds, and the other services are not held up.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))  # the whole answer, inside the lock


class EmbeddedAws:
    """moto's server in a thread, bound at construction so a busy port fails at once.

    (moto's own ThreadedMotoServer binds inside its thread, and its start() then waits
    forever when the port is taken.)
    """

    def __init__(self, host: str, port: int, faults: bool = False) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        app: Any = AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))
        self.faults: FaultInjector | None = None
        if faults:  # LOCAL_FAULTS=true only: answers chosen calls with errors (faults.py)
            app = self.faults = FaultInjector(app)
        with contextlib.redirect_stderr(io.StringIO()):  # werkzeug's own busy-port note; ours is clearer
            self.server = make_server(host, port, app, threaded=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(POLL_SECONDS,), name="moto", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(STOP_TIMEOUT_SECONDS)


class LocalStack:
    """Everything `make serve` runs, started and stopped in order."""

    def __init__(self, settings: LocalSettings, user_env: dict[str, str]) -> None:
        self.settings = settings
        self.user_env = user_env
        self.stop_event = threading.Event()
        region = user_env.get("AWS_REGION") or user_env.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.stack = Stack.from_file(template_parameters(Stack.from_file(), user_env))
        self.stack.region = region
        for name in self.stack.functions():
            # As Lambda puts the function's code (the template's CodeUri) on its import path.
            code_dir = str((ROOT / self.stack.function_spec(name).get("CodeUri", ".")).resolve())
            if code_dir not in sys.path:
                sys.path.insert(0, code_dir)
        self.functions = [LocalFunction(self.stack, name, PREFIX) for name in self.stack.functions()]
        self.pollers: list[SqsPoller | WorkerPool] = []
        self.visibility_seconds: int | None = settings.visibility_seconds
        self.schedulers: list[Scheduler] = []
        self.stream_pollers: list[StreamPoller] = []
        self.aws: EmbeddedAws | None = None
        self.resources_ready = False
        self.triggers_started = False
        self.outputs: dict[str, str] = {}
        routes, stage = routes_of(self.stack, self.functions)
        pages = {"/": self.console_page, "/_local/stack": self.stack_page}
        self.api = LocalApi(routes, stage, region, self.stack.account, self.health, pages)
        self.http: ApiServer | None = None
        self.function_settings: Any = None
        self.fake_provider_url: str | None = None

    # --- start -------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the API first (so /health answers 503 while the rest starts), then the rest."""
        self.http = self._bind("API_PORT", lambda: ApiServer(HOST, self.settings.api_port, self.api))
        threading.Thread(
            target=self.http.serve_forever, args=(POLL_SECONDS,), name="api", daemon=True
        ).start()
        self.aws = self._bind(
            "AWS_PORT", lambda: EmbeddedAws(HOST, self.settings.aws_port, self.settings.faults)
        )
        self.aws.start()
        endpoint = f"http://{HOST}:{self.aws.port}"
        for name, value in aws_environment(endpoint, self.stack.region).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._create_resources()
        # Powertools warns on every invocation that adds no metric; locally that is noise.
        warnings.filterwarnings("ignore", "No application metrics to publish")
        settings = self.function_settings = self._check_configuration()
        self._check_visibility(settings.lease_seconds)
        for function in self.functions:
            try:
                function.load()
            except Exception as error:
                raise StartError(
                    f"{function.logical_id}: its handler {function.module_name}.{function.attribute} "
                    f"could not be loaded ({type(error).__name__}: {error})"
                ) from error
        logs.isolate_powertools_keys()
        self._start_triggers()
        self.api.ready = True
        self._announce(endpoint, settings)

    def _bind(self, variable: str, make: Any) -> Any:
        port = self.settings.aws_port if variable == "AWS_PORT" else self.settings.api_port
        problem = f"cannot listen on {HOST}:{port}, the {variable}"
        try:
            return make()
        except OSError as error:
            raise StartError(f"{problem} ({error.strerror}); set {variable} to a free port") from None
        except SystemExit:  # werkzeug prints its own note and exits when the port is taken
            raise StartError(f"{problem} (in use); set {variable} to a free port") from None

    def _create_resources(self) -> None:
        session = boto3.session.Session(region_name=self.stack.region)
        self.stack.create(session, prefix=PREFIX)
        # All functions run in this one process and share os.environ: the union of what the
        # template gives each function is set once (environment.function_environment).
        env, notes = function_environment(self.stack, self.user_env)
        for note in notes:
            log.warning("environment: %s", note)
        secrets = session.client("secretsmanager")
        for arn, value in secret_overrides(self.stack, env, self.user_env).items():
            secrets.put_secret_value(SecretId=arn, SecretString=value)
        os.environ.update(env)
        from videohook.errors import ConfigError

        try:
            create_local_bus(session.client("events"), env)
        except ConfigError as error:
            raise StartError(f"bad configuration: {error.message}") from None
        self.outputs = self._outputs()
        self.resources_ready = True

    def _outputs(self) -> dict[str, str]:
        """The template's Outputs, resolved locally (an output naming the API is the local URL)."""
        apis = set(self.stack.of_type("AWS::Serverless::Api"))
        outputs = {}
        for name, spec in self.stack.template.get("Outputs", {}).items():
            value = spec["Value"]
            if names_resource(value, apis):
                outputs[name] = f"http://{HOST}:{self.api_port}/{self.api.stage}"
                continue
            try:
                outputs[name] = str(self.stack.resolve(value))
            except KeyError:
                continue  # refers to something the local stack does not make
        return outputs

    @property
    def api_port(self) -> int:
        return int(self.http.server_address[1]) if self.http else self.settings.api_port

    def _check_configuration(self) -> Any:
        """Read the settings as the functions will: a bad value fails here, in one line."""
        from videohook.config import load_settings
        from videohook.errors import ConfigError

        try:
            return load_settings()
        except ConfigError as error:
            raise StartError(f"bad configuration: {getattr(error, 'message', error)}") from None

    def _check_visibility(self, lease_seconds: int) -> None:
        """With worker processes, a killed worker's message must come back after its lease ends."""
        if self.settings.transfer_processes and self.visibility_seconds is None:
            self.visibility_seconds = default_visibility_seconds(lease_seconds)
        if self.visibility_seconds is not None and self.visibility_seconds < min_visibility_seconds(
            lease_seconds
        ):
            raise StartError(
                f"LOCAL_VISIBILITY_SECONDS must be at least {min_visibility_seconds(lease_seconds)} "
                f"(2 x (TRANSFER_LEASE_SECONDS + 1)), got {self.visibility_seconds}: a killed worker's "
                "message would come back while its lease still holds, and be dropped"
            )

    def _start_triggers(self) -> None:
        for function in self.functions:
            for event_name, event in function.events.items():
                if event["Type"] == "SQS":
                    self.pollers.append(self._poller(function))
                elif event["Type"] == "DynamoDB":
                    self.stream_pollers.append(self._stream_poller(function, event["Properties"]))
                elif event["Type"] == "Schedule":
                    scheduler = self._scheduler(function, event_name, self.stack.resolve(event["Properties"]))
                    if scheduler is not None:
                        self.schedulers.append(scheduler)
                elif event["Type"] != "Api":
                    log.warning("%s: %s events are not emulated locally", function.logical_id, event["Type"])
        for trigger in [*self.pollers, *self.schedulers, *self.stream_pollers]:
            trigger.start()
        for poller in self.pollers:
            if isinstance(poller, WorkerPool) and not poller.wait_ready(STOP_TIMEOUT_SECONDS * 3):
                raise StartError(f"{poller.function.tag}: its worker processes did not start (see above)")
        self.triggers_started = True

    def _poller(self, function: LocalFunction) -> SqsPoller | WorkerPool:
        props = self.stack.sqs_event(function.logical_id)
        arn = props["Queue"]
        logical = next(
            name for (name, attr), value in self.stack.attributes.items() if attr == "Arn" and value == arn
        )
        url = self.stack.physical[logical]
        sqs = boto3.session.Session(region_name=self.stack.region).client("sqs")
        policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
        max_receives = None
        if "RedrivePolicy" in policy:
            max_receives = int(json.loads(policy["RedrivePolicy"])["maxReceiveCount"])
        cap = int(
            props.get("ScalingConfig", {}).get("MaximumConcurrency", self.settings.transfer_concurrency)
        )
        concurrency = max(1, min(self.settings.transfer_concurrency, cap))
        spec: dict[str, Any] = {
            "queue_url": url,
            "queue_arn": arn,
            "batch_size": int(props.get("BatchSize", 10)),
            "reports_failures": "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            "retry_seconds": self.settings.retry_seconds,
            "max_receives": max_receives,
            "visibility_seconds": self.visibility_seconds,
        }
        processes = self.settings.transfer_processes
        if processes:
            # The poller threads are spread over the processes (at least one each).
            spec.update(
                function=function.logical_id,
                prefix=PREFIX,
                region=self.stack.region,
                concurrency=max(1, -(-concurrency // processes)),
            )
            return WorkerPool(function, spec, processes, self.stop_event)
        return SqsPoller(
            function=function,
            sqs=sqs,
            region=self.stack.region,
            concurrency=concurrency,
            stop=self.stop_event,
            **spec,
        )

    def _stream_poller(self, function: LocalFunction, raw: dict[str, Any]) -> StreamPoller:
        """Lambda's DynamoDB event source mapping for a `DynamoDB` event (streams.py)."""
        props = self.stack.resolve(raw)
        session = boto3.session.Session(region_name=self.stack.region)
        on_failure = props.get("DestinationConfig", {}).get("OnFailure", {})
        queue_url = None
        if on_failure:
            if on_failure.get("Type", "SQS") != "SQS":
                raise StartError(f"{function.logical_id}: only an SQS on-failure destination is emulated")
            arn = on_failure["Destination"]
            logical = next(n for (n, attr), v in self.stack.attributes.items() if attr == "Arn" and v == arn)
            queue_url = self.stack.physical[logical]
        try:
            filters = filters_of(props)
        except ValueError as error:
            raise StartError(f"{function.logical_id}: FilterCriteria: {error}") from None
        return StreamPoller(
            function=function,
            streams=session.client("dynamodbstreams"),
            sqs=session.client("sqs"),
            stream_arn=props["Stream"],
            region=self.stack.region,
            batch_size=int(props.get("BatchSize", 100)),
            starting_position=str(props.get("StartingPosition", "LATEST")),
            reports_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            bisect=str(props.get("BisectBatchOnFunctionError", "false")).lower() == "true",
            max_retries=int(props.get("MaximumRetryAttempts", -1)),
            on_failure_queue_url=queue_url,
            filters=filters,
            retry_seconds=self.settings.stream_retry_seconds,
            poll_seconds=STREAM_POLL_SECONDS,
            stop=self.stop_event,
            release=self._forget_shard_iterator,
        )

    def _forget_shard_iterator(self, iterator: str) -> None:
        """Drop a used-up shard iterator from the embedded endpoint (moto keeps them all)."""
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        backend = dynamodbstreams_backends[self.stack.account][self.stack.region]
        backend.shard_iterators.pop(iterator, None)

    def _scheduler(self, function: LocalFunction, event_name: str, props: dict[str, Any]) -> Scheduler | None:
        if props.get("Enabled") is False or str(props.get("Enabled", "true")).lower() == "false":
            return None
        period = self.settings.schedule_seconds or rate_seconds(str(props.get("Schedule", "")))
        if period is None:
            log.warning("%s: schedule %r runs every 60 s locally", function.logical_id, props.get("Schedule"))
            period = 60
        return Scheduler(
            function=function,
            rule_name=f"{PREFIX}-{function.logical_id}{event_name}",
            period=period,
            region=self.stack.region,
            account=self.stack.account,
            stop=self.stop_event,
        )

    def _announce(self, endpoint: str, settings: Any) -> None:
        base = f"http://{HOST}:{self.api_port}"
        token = settings.callback_token
        callback = f"{base}/callbacks" + (f"?token={token}" if token else "")
        rows = [
            ("API", f"{base}  (also under /{self.api.stage}; GET /health)"),
            ("console", f"{base}/  (the tasks, progress and a player; videohook --local {base} ...)"),
            ("callback URL", callback),
            ("AWS endpoint", f"{endpoint}  (aws --endpoint-url {endpoint} ...; dummy keys 'testing')"),
            *((name, value) for name, value in self.outputs.items() if name != "ApiBaseUrl"),
        ]
        for poller in self.pollers:
            if isinstance(poller, WorkerPool):
                spec = poller.spec
                where = (
                    f"{poller.concurrency} worker(s) in {len(poller.slots)} process(es), pids "
                    + ", ".join(str(w["pid"]) for w in poller.describe())
                )
                batch, receives, retry = spec["batch_size"], spec["max_receives"], spec["retry_seconds"]
            else:
                where = f"{poller.concurrency} worker(s)"
                batch, receives, retry = poller.batch_size, poller.max_receives, poller.retry_seconds
            visibility = (
                f", visibility {self.visibility_seconds} s with heartbeat" if self.visibility_seconds else ""
            )
            rows.append(
                (
                    poller.function.tag,
                    f"{where}, batch {batch}, dead-letter after {receives} receives, "
                    f"failed messages retried after {retry} s{visibility}",
                )
            )
        if self.fake_provider_url:
            rows.append(
                ("provider", f"{self.fake_provider_url}  (LOCAL_FAKE_PROVIDER: the fake, calls back)")
            )
        if self.settings.faults:
            rows.append(("faults", f"LOCAL_FAULTS on: POST {endpoint}/_local/faults (local testing only)"))
        rows += [(s.function.tag, f"every {s.period:g} s") for s in self.schedulers]
        rows += [(p.function.tag, p.describe()) for p in self.stream_pollers]
        if self.stream_pollers:
            rows.append(
                (
                    "event bus",
                    f"{os.environ.get('EVENT_BUS_NAME', 'default')} (rules and targets: {endpoint})",
                )
            )
        width = max(len(name) for name, _ in rows)
        lines = ["videohook local stack ready", *(f"  {name:<{width}}  {value}" for name, value in rows)]
        log.info("\n".join(lines))
        if not settings.hmac_keys and token:
            log.warning(
                "no provider HMAC key (WEBHOOK_HMAC_KEYS): callbacks are checked by the URL token only"
            )
        elif not settings.hmac_keys:
            log.warning(
                "NO CALLBACK AUTHENTICATION (CALLBACK_TOKEN empty, no WEBHOOK_HMAC_KEYS): "
                "anyone who can reach the API is believed"
            )

    # --- local-only pages ----------------------------------------------------------------

    def console_page(self) -> tuple[str, bytes]:
        return "text/html; charset=utf-8", CONSOLE.read_bytes()

    def stack_document(self) -> dict[str, Any]:
        """What `videohook --local` needs: the same outputs as a deployed stack, and its secrets.

        Served on 127.0.0.1 only, by a stack whose state and secrets are this machine's own
        (docs/local-stack.md). The callback token and HMAC key are the ones the functions use.
        """
        settings = self.function_settings
        keys = list(getattr(settings, "hmac_keys", None) or [])
        return {
            "api": f"http://{HOST}:{self.api_port}",
            "stage": self.api.stage,
            "aws_endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "region": self.stack.region,
            "outputs": self.outputs,
            "callback_token": getattr(settings, "callback_token", None) or None,
            "hmac_key": keys[0] if keys else None,
            "fake_provider": self.fake_provider_url,
        }

    def stack_page(self) -> tuple[str, bytes]:
        return "application/json", json.dumps(self.stack_document()).encode()

    # --- health and stop ---------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        checks = {
            "aws": bool(self.aws and self.aws.thread.is_alive() and self.resources_ready),
            "api": self.api.ready,
            "workers": self.triggers_started and all(p.alive for p in self.pollers),
            "schedules": self.triggers_started and all(s.alive for s in self.schedulers),
            "streams": self.triggers_started and all(p.alive for p in self.stream_pollers),
        }
        ok = all(checks.values()) and not self.stop_event.is_set()
        if self.stop_event.is_set():
            status = "stopping"
        elif not self.api.ready:
            status = "starting"
        else:
            status = "ok" if ok else "degraded"  # a part has died since start: see checks
        document = {
            "status": status,
            "checks": checks,
            "endpoints": {"api": f"http://{HOST}:{self.api_port}", "aws": os.environ.get("AWS_ENDPOINT_URL")},
            "outputs": self.outputs,
            "functions": {f.tag: vars(f.stats) for f in self.functions},
        }
        if self.stream_pollers:  # batches delivered, records done, retries, batches given up
            document["streams"] = {p.function.tag: dict(p.stats) for p in self.stream_pollers}
        pools = [p for p in self.pollers if isinstance(p, WorkerPool)]
        if pools:
            document["worker_processes"] = {p.function.tag: p.describe() for p in pools}
        return (200 if ok else 503), document

    def stop(self) -> None:
        """Stop taking work, let in-flight work finish briefly, then close the servers."""
        self.stop_event.set()
        self.api.ready = False
        for poller in self.pollers:
            if not poller.drain(STOP_TIMEOUT_SECONDS):
                log.warning(
                    "%s: a batch still running after %d s; abandoned",
                    poller.function.tag,
                    STOP_TIMEOUT_SECONDS,
                )
        for stream in self.stream_pollers:
            if not stream.drain(STOP_TIMEOUT_SECONDS):
                log.warning(
                    "%s: a batch still running after %d s; abandoned",
                    stream.function.tag,
                    STOP_TIMEOUT_SECONDS,
                )
        for scheduler in self.schedulers:
            scheduler.thread.join(STOP_TIMEOUT_SECONDS)
            if scheduler.thread.is_alive():
                log.warning(
                    "%s: still running after %d s; abandoned", scheduler.function.tag, STOP_TIMEOUT_SECONDS
                )
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        if self.aws:
            self.aws.stop()


def main() -> int:
    """Run until Ctrl-C or SIGTERM; 0 on a clean stop, 1 when the stack could not start."""
    logs.install()
    user_env = dict(os.environ)
    stopping = threading.Event()
    first_signal_at = [0.0]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not stopping.is_set():
            log.info("%s: stopping", name)
            first_signal_at[0] = time.monotonic()
            stopping.set()
            return
        # One stop request often arrives twice: `make serve` forwards SIGTERM to this process
        # and a process-group kill (a terminal, a supervisor, `kill -- -PGID`) delivers it too.
        # So a repeated signal never skips the clean stop, which is bounded by
        # STOP_TIMEOUT_SECONDS anyway; only a deliberate second Ctrl-C (SIGINT, a second or
        # more after the first) abandons it and exits 130.
        if signum == signal.SIGINT and time.monotonic() - first_signal_at[0] >= FORCE_AFTER_SECONDS:
            os._exit(130)
        log.info("%s again: already stopping", name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack: LocalStack | None = None
    provider: Any = None
    try:
        settings = LocalSettings.from_env(user_env)
        if settings.fake_provider:
            provider = _start_fake_provider(user_env)
        stack = LocalStack(settings, user_env)
        if provider is not None:
            stack.fake_provider_url = provider.provider.base_url
        stack.start()
    except Exception as error:
        if isinstance(error, StartError):
            log.error("%s", error)
        else:
            log.exception("the local stack could not start")
        if stack is not None:
            stack.stop()
        if provider is not None:
            provider.stop()
        return 1
    while not stopping.wait(0.5):
        pass
    stack.stop()
    if provider is not None:
        provider.stop()
    log.info("stopped")
    return 0


def _start_fake_provider(user_env: dict[str, str]) -> Any:
    """LOCAL_FAKE_PROVIDER=true: start it and point the stack's provider settings at it."""
    from infra.local.fake_provider import FakeProviderService

    try:
        provider = FakeProviderService(user_env)
    except ValueError as error:
        raise StartError(str(error)) from None
    user_env.update(provider.start())
    os.environ["VIDEO_SOURCE_ALLOW_PRIVATE"] = "true"
    log.warning(
        "LOCAL_FAKE_PROVIDER: submits go to the fake provider at %s, which calls back with a bundled "
        "video served from 127.0.0.1 (VIDEO_SOURCE_ALLOW_PRIVATE=true); local development only",
        provider.provider.base_url,
    )
    return provider


if __name__ == "__main__":
    sys.exit(main())
