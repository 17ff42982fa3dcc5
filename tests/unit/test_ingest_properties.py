"""Property tests: the ingest function never faults on anything a caller can send.

Whatever reaches `POST /callbacks` (random bytes or text, random JSON, callback-shaped
objects with random types in every field, garbage credentials, random content types and
query strings, base64 on or off), the answer is one of docs/api.md's client statuses with a
JSON body of the documented shape, and never a 5xx, a stack trace or a secret.

Each test builds one moto world (the `aws` fixture) and runs hypothesis inside it, so the
task table keeps what earlier examples recorded: later examples meet known tasks in every
state (duplicates, failures after successes, and so on). A failure found this way may need
the earlier examples to replay; hypothesis prints the falsifying one.

Generated strings are valid Unicode (hypothesis' default); lone surrogates, which a JSON
body can carry as `\\udXXX` escapes, are covered by the examples at the end.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains, urls

import ingest
from testkit.lambda_context import LambdaContext
from tests.conftest import HMAC_KEY, AwsWorld, load_event
from videohook.signature import sign

CLIENT_STATUSES = {200, 400, 401, 413, 415}
# Digits str.isdigit() accepts and int() reads: a Unix time in other scripts (never valid).
ARABIC_INDIC_STAMP = "\u0661\u0667" + "\u0660" * 8
FULLWIDTH_STAMP = "\uff11\uff17" + "\uff10" * 8
PROPERTY = settings(  # examples per property: the profile's (tests/conftest.py)
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def world(aws: AwsWorld) -> AwsWorld:
    aws.use_function("IngestFunction")
    return aws


# --- strategies --------------------------------------------------------------------------

HUGE_INTS = st.sampled_from([10**k * s for k in (9, 18, 19, 37, 38, 39, 100, 308) for s in (1, -1)])
INTS = st.integers() | HUGE_INTS | st.sampled_from([0, -1, 200, 400, 401, 451, 500, 501, 2**63])
FLOATS = st.floats() | st.sampled_from([200.0, 1e308, -0.0])
UNICODE = st.text(st.characters(min_codepoint=0x80), max_size=30)
TEXTS = st.text(max_size=40) | UNICODE | st.sampled_from(["", " ", "\x00", "200", "null", "é" * 600])
SCALARS = st.none() | st.booleans() | INTS | FLOATS | TEXTS
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """one_of with weights (one_of picks branches about evenly, and merges repeated ones)."""
    return st.sampled_from([strategy for weight, strategy in options for _ in range(weight)]).flatmap(
        lambda strategy: strategy
    )


# A small pool of ids, so that later examples meet tasks earlier ones recorded.
POOLED_TASK_IDS = st.sampled_from(["task-a", "task-b", "task.c_1", "T", "a" * 128])
TASK_IDS = weighted(
    (3, POOLED_TASK_IDS),
    (2, st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")),
    (1, st.sampled_from(["a" * 129, "-x", ".", "../etc", "a/b", "ta sk", "tâche", "task\n"])),
    (1, TEXTS),
)
HOSTS = weighted(
    (2, st.sampled_from(["cdn.example.com", "media.example.org", "1.1.1.1", "[2606:4700::1111]"])),
    (2, domains()),
    (1, st.ip_addresses(v=4).map(str)),
    (1, st.ip_addresses(v=6).map(lambda ip: f"[{ip}]")),
    (1, UNICODE),
    (
        2,
        st.sampled_from(
            [
                "bücher.example",
                "xn--bcher-kva.example",
                "localhost",
                "a.localhost",
                "0x7f.1",
                "2130706433",
                "0177.0.0.1",
                "[::ffff:127.0.0.1]",
                "[64:ff9b::a9fe:a9fe]",
                "[2002:7f00:1::]",
                "[fe80::1%25eth0]",
                "user:pw@cdn.example.com",
                "cdn.example.com:0",
                "cdn.example.com:99999",
                "cdn.example.com:-1",
                "cdn.example.com.",
                "[::1",
                "",
            ]
        ),
    ),
)
PATHS = st.text(max_size=30) | st.sampled_from(["v.mp4", "a b", "x\\y", "%00", "?sig=1#f", "x" * 2100])
SCHEMES = weighted((4, st.just("https")), (1, st.sampled_from(["http", "HTTPS", "ftp", "file", ""])))
VIDEO_URLS = weighted(
    (4, st.builds(lambda scheme, host, path: f"{scheme}://{host}/{path}", SCHEMES, HOSTS, PATHS)),
    (1, urls()),
    (
        1,
        st.sampled_from(
            ["https://cdn.example.com/v.mp4", "//cdn.example.com/v", "javascript:alert(1)", "https:///v"]
        ),
    ),
    (1, TEXTS),
)
CODES = weighted((3, st.just(200)), (1, st.sampled_from([400, 451, 500, 0, -1])), (1, INTS), (1, JSON_VALUES))
MSGS = weighted((3, TEXTS), (1, st.none()), (1, JSON_VALUES))


def _callback_object(
    fields: dict[str, Any], data: Any, padding: int, extra: dict[str, Any]
) -> dict[str, Any]:
    document = {**extra, **fields}
    if data is not None:
        document["data"] = data
    if padding:
        document["padding"] = "p" * padding
    return document


# Well-typed objects with random values (most reach the table), and objects with a random
# type, or nothing, in every field.
TYPED_DATA = st.fixed_dictionaries(
    {"task_id": TASK_IDS, "video_url": weighted((5, VIDEO_URLS), (1, st.sampled_from([None, ""])))},
    optional={"extra": JSON_VALUES},
)
WILD_DATA = st.fixed_dictionaries(
    {},
    optional={"task_id": TASK_IDS | JSON_VALUES, "video_url": VIDEO_URLS | JSON_VALUES, "extra": JSON_VALUES},
)
TYPED_FIELDS = st.fixed_dictionaries({"code": CODES}, optional={"msg": MSGS})
WILD_FIELDS = st.fixed_dictionaries({}, optional={"code": CODES | JSON_VALUES, "msg": MSGS | JSON_VALUES})
PADDING = weighted((6, st.just(0)), (1, st.sampled_from([100, 64 * 1024 - 200, 64 * 1024, 70_000])))
EXTRA_FIELDS = st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=3)
CALLBACK_OBJECTS = weighted(
    (3, st.builds(_callback_object, TYPED_FIELDS, TYPED_DATA, PADDING, EXTRA_FIELDS)),
    (1, st.builds(_callback_object, WILD_FIELDS, st.none() | WILD_DATA | JSON_VALUES, PADDING, EXTRA_FIELDS)),
)

JSON_CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/cloudevents+json",
    ]
)
CONTENT_TYPES = weighted(
    (4, JSON_CONTENT_TYPES),
    (1, st.none()),
    (1, st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "", ";"])),
    (1, st.text(max_size=30)),
)
# Credentials are drawn as recipes and resolved when the event is built (time moves on).
TIMESTAMPS = weighted(
    (4, st.integers(-290, 290).map(lambda skew: ("skew", skew))),
    (1, st.integers(-(10**6), 10**6).map(lambda skew: ("skew", skew))),
    (1, st.none()),
    (
        1,
        st.sampled_from(
            ["", " ", "-1", "0", "9" * 13, "1e9", "0x10", ARABIC_INDIC_STAMP, FULLWIDTH_STAMP, "²", "①"]
        ).map(lambda raw: ("raw", raw)),
    ),
    (1, st.text(max_size=15).map(lambda raw: ("raw", raw))),
    (1, st.from_regex(r"\A\s*[0-9]{1,14}\s*\Z").map(lambda raw: ("raw", raw))),
)
SIGNATURES = weighted(
    (4, st.just(("good", None))),
    (1, st.sampled_from([("other-key", None), None])),
    (1, st.binary(max_size=40).map(lambda b: ("raw", base64.b64encode(b).decode()))),
    (1, st.text(max_size=50).map(lambda raw: ("raw", raw))),
)
TOKENS = weighted(
    (4, st.just("good")),
    (1, st.sampled_from(["missing", "null-query", "other-name"])),
    (1, st.text(max_size=60)),
)
HEADER_NAMES = {
    "content": st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"]),
    "timestamp": st.sampled_from(["X-Webhook-Timestamp", "x-webhook-timestamp", "X-WEBHOOK-TIMESTAMP"]),
    "signature": st.sampled_from(["X-Webhook-Signature", "x-webhook-signature", "X-WEBHOOK-SIGNATURE"]),
}
EXTRA_HEADERS = st.dictionaries(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    st.text(max_size=40),
    max_size=4,
)


# --- events and answers ------------------------------------------------------------------


def make_event(
    world: AwsWorld,
    body: str | None,
    *,
    task_id: Any = None,
    content_type: str | None = "application/json",
    timestamp: tuple[str, Any] | None = ("skew", 0),
    signature: tuple[str, Any] | None = ("good", None),
    token: str = "good",
    base64_encoded: bool = False,
    names: dict[str, str] | None = None,
    extra_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A REST API (v1) proxy event for POST /callbacks, as API Gateway hands it to Lambda."""
    names = names or {
        "content": "Content-Type",
        "timestamp": "X-Webhook-Timestamp",
        "signature": "X-Webhook-Signature",
    }
    event = load_event("callback_success.json")
    headers = {k: v for k, v in event["headers"].items() if not k.startswith(("Content-", "X-Webhook-"))}
    headers.update(extra_headers or {})
    if content_type is not None:
        headers[names["content"]] = content_type
    stamp = None
    if timestamp is not None:
        kind, value = timestamp
        stamp = str(int(time.time()) + value) if kind == "skew" else value
        headers[names["timestamp"]] = stamp
    if signature is not None:
        kind, value = signature
        # Only ASCII ids can be valid (and encoded to sign); others are refused before the check.
        signed_id = task_id if isinstance(task_id, str) and task_id.isascii() else ""
        if kind == "good":
            value = sign(HMAC_KEY, signed_id, stamp or "")
        elif kind == "other-key":
            value = sign("not-the-key", signed_id, stamp or "")
        headers[names["signature"]] = value
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    query: dict[str, str] | None
    if token == "good":
        query = {"token": world.callback_token}
    elif token == "missing":
        query = {}
    elif token == "null-query":
        query = None
    elif token == "other-name":
        query = {"Token": world.callback_token, "tok": "x"}
    else:
        query = {"token": token}
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = (
        {k: [v] for k, v in query.items()} if query is not None else None
    )
    if base64_encoded and body is not None:
        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    return event


def invoke_and_check(world: AwsWorld, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Run the handler; assert the answer is a client status with the documented body."""
    answer = ingest.lambda_handler(event, LambdaContext())
    status = answer["statusCode"]
    raw = answer["body"]
    if answer.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    assert status in CLIENT_STATUSES, f"{status}: {raw}"
    hypothesis.event(f"{status} {json.loads(raw).get('error', '')}")  # --hypothesis-show-statistics
    assert "Traceback" not in raw and 'File "' not in raw
    assert world.callback_token not in raw and HMAC_KEY not in raw
    body = json.loads(raw)
    if status == 200:
        assert set(body) == {"status", "task_id"} and body["status"] == "received"
        assert isinstance(body["task_id"], str) and body["task_id"]
    else:
        assert set(body) == {"error", "message"}
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]
    return status, body


# --- properties --------------------------------------------------------------------------


def test_arbitrary_bodies_never_fault(world: AwsWorld) -> None:
    # GIVEN any body at all (bytes, text, any JSON value), sent with valid credentials
    bodies = (
        st.binary(max_size=300).map(lambda b: ("bytes", b))
        | st.text(max_size=300).map(lambda t: ("text", t))
        | JSON_VALUES.map(lambda v: ("text", json.dumps(v)))
        | st.sampled_from([("none", None), ("text", ""), ("text", "x" * 70_000)])
    )

    @PROPERTY
    @given(body=bodies, content_type=JSON_CONTENT_TYPES, base64_encoded=st.booleans())
    def run(body: tuple[str, Any], content_type: str, base64_encoded: bool) -> None:
        kind, value = body
        if kind == "bytes":
            if base64_encoded:
                text = base64.b64encode(value).decode()
                event = make_event(world, None, content_type=content_type)
                event["body"], event["isBase64Encoded"] = text, True
            else:
                # API Gateway passes a non-binary body on as text; bad UTF-8 arrives replaced.
                event = make_event(world, value.decode("utf-8", "replace"), content_type=content_type)
        else:
            event = make_event(world, value, content_type=content_type, base64_encoded=base64_encoded)
        # WHEN it is posted THEN the answer is a documented client answer
        invoke_and_check(world, event)

    run()


def test_callback_shaped_objects_never_fault(world: AwsWorld) -> None:
    # GIVEN callback-shaped objects with random types in every field, correctly signed for
    # their task_id, so that the valid ones reach the task table and the queue
    @PROPERTY
    @given(document=CALLBACK_OBJECTS, base64_encoded=st.booleans(), ascii_only=st.booleans())
    def run(document: dict[str, Any], base64_encoded: bool, ascii_only: bool) -> None:
        data = document.get("data")
        task_id = data.get("task_id") if isinstance(data, dict) else None
        event = make_event(
            world,
            json.dumps(document, ensure_ascii=ascii_only),
            task_id=task_id,
            base64_encoded=base64_encoded,
        )
        # WHEN it is posted
        status, body = invoke_and_check(world, event)
        # THEN an accepted callback names its own task
        if status == 200:
            assert body["task_id"] == task_id

    run()


def test_random_credentials_headers_and_queries_never_fault(world: AwsWorld) -> None:
    # GIVEN a plausible or random callback with random headers, credentials and query string
    plausible = st.builds(
        lambda task_id, code: {
            "code": code,
            "msg": "ok",
            "data": {"task_id": task_id, "video_url": "https://cdn.example.com/v.mp4"},
        },
        TASK_IDS,
        st.sampled_from([200, 200, 500]),
    )
    bodies = weighted((2, plausible), (1, CALLBACK_OBJECTS))

    @PROPERTY
    @given(
        document=bodies,
        content_type=CONTENT_TYPES,
        timestamp=TIMESTAMPS,
        signature=SIGNATURES,
        token=TOKENS,
        base64_encoded=st.booleans(),
        names=st.fixed_dictionaries(HEADER_NAMES),
        extra_headers=EXTRA_HEADERS,
    )
    def run(
        document: dict[str, Any],
        content_type: str | None,
        timestamp: tuple[str, Any] | None,
        signature: tuple[str, Any] | None,
        token: str,
        base64_encoded: bool,
        names: dict[str, str],
        extra_headers: dict[str, str],
    ) -> None:
        data = document.get("data")
        event = make_event(
            world,
            json.dumps(document),
            task_id=data.get("task_id") if isinstance(data, dict) else None,
            content_type=content_type,
            timestamp=timestamp,
            signature=signature,
            token=token,
            base64_encoded=base64_encoded,
            names=names,
            extra_headers=extra_headers,
        )
        # WHEN it is posted THEN the answer is a documented client answer
        invoke_and_check(world, event)

    run()


# --- examples the properties above found (each was a 500 before its fix) --------------------


def _answer(event: dict[str, Any]) -> int:
    return ingest.lambda_handler(event, LambdaContext())["statusCode"]


def test_timestamp_of_non_ascii_digits_answers_401(world: AwsWorld) -> None:
    # Superscript, circled and Arabic-Indic digits all pass str.isdigit(); int() reads only the last.
    body = {
        "code": 200,
        "msg": "ok",
        "data": {"task_id": "task-ts", "video_url": "https://cdn.example.com/v"},
    }
    for stamp in ("²", "①", ARABIC_INDIC_STAMP):
        event = make_event(world, json.dumps(body), task_id="task-ts", timestamp=("raw", stamp))
        assert _answer(event) == 401


@pytest.mark.parametrize("code", [10**38, -(10**40), 10**300], ids=["1e38", "-1e40", "1e300"])
def test_code_over_38_digits_is_not_a_fault(world: AwsWorld, code: int) -> None:
    body = {"code": code, "msg": "m", "data": {"task_id": "task-big"}}
    event = make_event(world, json.dumps(body), task_id="task-big")
    assert _answer(event) in {200, 400}  # refused, or recorded some other way


@pytest.mark.parametrize(
    ("msg", "url"),
    [("\ud800", "https://cdn.example.com/v.mp4"), ("ok", "https://cdn.example.com/\udc80")],
    ids=["msg", "url-path"],
)
def test_lone_surrogate_escapes_are_not_a_fault(world: AwsWorld, msg: str, url: str) -> None:
    body = {"code": 200, "msg": msg, "data": {"task_id": "task-sur", "video_url": url}}
    event = make_event(world, json.dumps(body), task_id="task-sur")
    assert "\\ud" in event["body"]  # json.dumps sends the surrogate as an escape
    assert _answer(event) in {200, 400}  # refused, or stored with the surrogate replaced
