"""No signed source URL reaches X-Ray: only AWS SDK calls are traced, never the video fetcher.

X-Ray strips the query from a traced request's `http.url`, but not from the message of an
exception it records, and requests' errors quote the whole URL (`Max retries exceeded with
url: /v.mp4?X-Amz-Signature=...`). So the functions patch botocore only. This runs in a fresh
Python process set up as Lambda runs a function with tracing on (`LAMBDA_TASK_ROOT`, a sampled
`_X_AMZN_TRACE_ID`, `AWS_XRAY_DAEMON_ADDRESS`), because patching is process-wide and cannot be
undone: it imports every entry module the template names, then reports aws_xray_sdk's patch
state and every trace document sent to a real UDP "daemon" on 127.0.0.1 while a signed URL
failed to fetch - through the video fetcher and through plain requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra.template import ROOT, Stack

pytestmark = pytest.mark.integration

SECRET = "X-Amz-Signature=0123456789abcdef-must-not-be-traced"

PROBE = r"""
import importlib, json, socket, sys, time

from infra.template import ROOT, Stack

stack = Stack.from_file()
entry_modules = []
for name in stack.functions():
    spec = stack.function_spec(name)
    code_dir = str((ROOT / spec.get("CodeUri", ".")).resolve())
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name = spec["Handler"].rsplit(".", 1)[0]
    entry_modules.append(module_name)
    importlib.import_module(module_name)

import http.client
import botocore.client
import requests
from aws_xray_sdk.core import patcher, xray_recorder

from videohook.errors import SourceUnavailable
from videohook.policy import SourcePolicy
from videohook.source import SourceSession

daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
daemon.bind(("127.0.0.1", int(sys.argv[1])))
daemon.settimeout(0.5)

closed = socket.socket()
closed.bind(("127.0.0.1", 0))
port = closed.getsockname()[1]
closed.close()  # nothing listens there: every fetch fails with the URL in requests' message
signed = f"http://127.0.0.1:{port}/v.mp4?{sys.argv[2]}"

errors = []
with xray_recorder.in_subsegment("fetch-through-requests"):
    try:
        requests.get(signed, timeout=2)
    except requests.RequestException as error:
        errors.append(str(error))
try:
    with xray_recorder.in_subsegment("fetch-through-the-video-fetcher"):
        with SourceSession(SourcePolicy(allow_private=True), timeout=(2, 2)) as source:
            source.open(signed)
except SourceUnavailable as error:
    errors.append(str(error))

documents = []
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    try:
        documents.append(daemon.recv(65536).decode(errors="replace"))
    except TimeoutError:
        if documents:
            break

def wrapped(cls, name):
    return hasattr(vars(cls)[name], "__wrapped__")  # a wrapt wrapper, as aws_xray_sdk patches

print(json.dumps({
    "entry_modules": entry_modules,
    "patched": sorted(patcher._PATCHED_MODULES),
    "wrapped": {
        "requests.Session.request": wrapped(requests.Session, "request"),
        "http.client.HTTPConnection._send_request": wrapped(http.client.HTTPConnection, "_send_request"),
        "botocore.client.BaseClient._make_api_call": wrapped(botocore.client.BaseClient, "_make_api_call"),
    },
    "errors": errors,
    "documents": documents,
}))
"""


def run_probe(udp_port: int) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POWERTOOLS_TRACE", "AWS_SAM", "AWS_CHALICE", "_X_AMZN", "AWS_XRAY"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "handler"), str(ROOT)]),
        LAMBDA_TASK_ROOT=str(ROOT / "handler"),
        AWS_LAMBDA_FUNCTION_NAME="videohook-probe",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{udp_port}",
        AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(udp_port), SECRET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_only_botocore_is_traced_and_no_signed_url_reaches_a_trace() -> None:
    # GIVEN every entry module of the template imported as Lambda imports it, tracing on
    report = run_probe(free_udp_port())
    stack = Stack.from_file()
    assert sorted(report["entry_modules"]) == sorted(
        stack.function_spec(name)["Handler"].rsplit(".", 1)[0] for name in stack.functions()
    )
    # THEN aws_xray_sdk patched botocore and nothing else: not requests, not http.client (urllib3)
    assert report["patched"] == ["botocore"]
    assert report["wrapped"] == {
        "requests.Session.request": False,
        "http.client.HTTPConnection._send_request": False,
        "botocore.client.BaseClient._make_api_call": True,
    }
    # WHEN a signed URL fails to fetch, through requests and through the video fetcher, in traced code
    raw_error, fetcher_error = report["errors"]
    assert SECRET in raw_error  # requests' own message quotes the URL: what must not be recorded
    # THEN the fetcher's error names the URL without its query string
    assert "/v.mp4" in fetcher_error and "?" not in fetcher_error and SECRET not in fetcher_error
    # AND the trace documents sent to the daemon hold the work but never the signed query
    sent = "\n".join(report["documents"])
    assert "fetch-through-the-video-fetcher" in sent, sent[:2000]
    assert SECRET not in sent and "X-Amz-Signature" not in sent, sent[:4000]
