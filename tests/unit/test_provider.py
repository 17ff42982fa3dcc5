"""The provider client against a real (fake) provider over HTTP.

Why over HTTP: timeouts, headers, query encoding and the HTTP-status-versus-body-code rules
are the client's job, and only a real socket exercises them.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from testkit.provider import COMPLETE_TIME, CREATE_TIME, FakeProvider
from videohook.errors import ConfigError, ProviderError
from videohook.provider import RETRYABLE_CODES, ProviderClient, RecordInfo, SuccessFlag, parse_time
from videohook.provider import logger as provider_logger

KEY = "sk-live-0123456789abcdef0123456789abcdef"
VIDEO = "https://cdn.example.com/videos/video_847715e66259.mp4"
CALLBACK = "https://abc.execute-api.eu-west-1.amazonaws.com/Prod/callbacks?token=tok"


@pytest.fixture
def fake(provider_server: FakeProvider) -> FakeProvider:
    return provider_server.reset(api_key=KEY)


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[ProviderClient]:
    with requests.Session() as session:
        yield ProviderClient(fake.base_url, KEY, session=session, timeout=(1.0, 2.0))


def _fails(call: Callable[[], object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        call()
    return info.value


# --- generate ------------------------------------------------------------------------


def test_generate_sends_exactly_the_documented_body_and_returns_the_task_id(
    fake: FakeProvider, client: ProviderClient
) -> None:
    # GIVEN a provider that accepts submissions
    # WHEN a task is submitted without the optional branding
    task = client.generate(task_id="taskId_774b", audio_id="e231cadc", callback_url=CALLBACK)
    # THEN one POST carried exactly the three documented fields, with the bearer key
    [req] = fake.requests
    assert (req.method, req.path, req.query) == ("POST", "/api/v1/mp4/generate", {})
    assert req.body == {"taskId": "taskId_774b", "audioId": "e231cadc", "callBackUrl": CALLBACK}
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["Content-Type"] == "application/json"
    # AND the answer's data.taskId is returned, the callback URL reached the provider
    assert task == "taskId_774b"
    assert fake.callback_urls == {"taskId_774b": CALLBACK}


def test_generate_adds_branding_only_when_given(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN branding for the video
    # WHEN it is submitted
    client.generate(
        task_id="t1",
        audio_id="a1",
        callback_url=CALLBACK,
        author="Suno Artist",
        domain_name="music.example.com",
    )
    # THEN the optional fields use the provider's names
    assert fake.requests[0].body == {
        "taskId": "t1",
        "audioId": "a1",
        "callBackUrl": CALLBACK,
        "author": "Suno Artist",
        "domainName": "music.example.com",
    }


def test_generate_returns_the_provider_task_id_even_when_it_differs(
    fake: FakeProvider, client: ProviderClient
) -> None:
    # GIVEN a provider that names the task its own way
    fake.script_generate({"taskId": "provider-id-9"})
    # WHEN a task is submitted
    # THEN the id the callback will carry is returned
    assert client.generate(task_id="t1", audio_id="a1", callback_url=CALLBACK) == "provider-id-9"


def test_generate_without_data_returns_the_id_sent(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a provider that accepts (code 200) but answers no data
    fake.script_generate(fake.raw(200, '{"code": 200, "msg": "success", "data": null}', "application/json"))
    # WHEN a task is submitted
    # THEN it counts as accepted under the id sent (an error would invite a duplicate submit)
    assert client.generate(task_id="t1", audio_id="a1", callback_url=CALLBACK) == "t1"


def test_generate_failure_keeps_the_provider_code_and_message(
    fake: FakeProvider, client: ProviderClient
) -> None:
    # GIVEN an account without credits (HTTP 200, body code 429)
    fake.script_generate(fake.error(200, 429, "Insufficient credits"))
    # WHEN a task is submitted
    err = _fails(lambda: client.generate(task_id="t1", audio_id="a1", callback_url=CALLBACK))
    # THEN a retryable ProviderError carries code 429 and the provider's words
    assert (err.provider_code, err.retryable) == (429, True)
    assert "Insufficient credits" in str(err) and "t1" in str(err)


def test_generate_parameter_error_is_final(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a provider refusing the audio
    fake.script_generate(fake.error(400, 400, "unsupported audio format"))
    # WHEN a task is submitted
    err = _fails(lambda: client.generate(task_id="t1", audio_id="a1", callback_url=CALLBACK))
    # THEN retrying is pointless
    assert (err.provider_code, err.retryable) == (400, False)


# --- record-info: both brands, missing fields ------------------------------------------


def test_record_info_reads_the_epoch_ms_brand(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a finished task as the ms brand reports it (audioId and musicId both present)
    fake.script("t1", [fake.success(VIDEO, audio_id="e231", music_id="audioId_0295", time_format="ms")])
    # WHEN it is polled
    info = client.record_info("t1")
    # THEN every field is read, times in UTC, audioId preferred over musicId
    assert info == RecordInfo(
        task_id="t1",
        success_flag="SUCCESS",
        video_url=VIDEO,
        audio_id="e231",
        error_code=None,
        error_message=None,
        create_time=CREATE_TIME,
        complete_time=COMPLETE_TIME,
    )
    assert info.success_flag is SuccessFlag.SUCCESS
    assert info.video_ready and not info.is_failed
    # AND the poll was a GET with the task in the query and the bearer key
    [req] = fake.requests
    assert (req.method, req.path, req.query) == ("GET", "/api/v1/mp4/record-info", {"taskId": "t1"})
    assert req.headers["Authorization"] == f"Bearer {KEY}"


def test_record_info_reads_the_string_time_brand_with_music_id_only(
    fake: FakeProvider, client: ProviderClient
) -> None:
    # GIVEN the brand that sends "YYYY-MM-DD HH:MM:SS" times and only musicId
    fake.script("t1", [fake.success(VIDEO, audio_id=None, music_id="m-77", time_format="string")])
    # WHEN it is polled
    info = client.record_info("t1")
    # THEN the times read as UTC and musicId stands in for the audio id
    assert (info.create_time, info.complete_time) == (CREATE_TIME, COMPLETE_TIME)
    assert info.create_time is not None and info.create_time.tzinfo is UTC
    assert info.audio_id == "m-77"


def test_record_info_reads_numeric_string_times(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN epoch milliseconds sent as strings, and a zero "not completed" time
    fake.script("t1", [{"successFlag": "PENDING", "createTime": "1735661400000", "completeTime": 0}])
    # WHEN it is polled
    info = client.record_info("t1")
    # THEN the string is read as ms and zero as "no time"
    assert info.create_time == datetime(2024, 12, 31, 16, 10, tzinfo=UTC)
    assert info.complete_time is None


def test_record_info_tolerates_missing_and_null_fields(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a data object with almost nothing in it: null response, empty strings, garbage times
    fake.script(
        "t1",
        [
            {
                "successFlag": "CALLBACK_EXCEPTION",
                "response": None,
                "audioId": "",
                "musicId": None,
                "createTime": "yesterday",
                "completeTime": None,
                "errorCode": "abc",
                "errorMessage": None,
            }
        ],
    )
    fake.script("t2", [{"taskId": None}])
    fake.script("t3", [{"successFlag": "SUCCESS", "response": {"videoUrl": ""}}])
    # WHEN they are polled
    t1, t2, t3 = (client.record_info(t) for t in ("t1", "t2", "t3"))
    # THEN missing reads as None, and no flag reads as PENDING
    assert t1 == RecordInfo("t1", "CALLBACK_EXCEPTION", None, None, None, None, None, None)
    assert not t1.video_ready and not t1.is_failed
    assert t2.task_id == "t2" and t2.success_flag is SuccessFlag.PENDING
    # AND a SUCCESS with no URL is not "ready": there is nothing to copy yet
    assert t3.video_url is None and not t3.video_ready


def test_record_info_with_null_data_is_a_retryable_error(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN an answer with code 200 but no data
    fake.script("t1", [fake.raw(200, '{"code": 200, "msg": "success", "data": null}', "application/json")])
    # WHEN it is polled
    err = _fails(lambda: client.record_info("t1"))
    # THEN nothing is concluded about the task: try later
    assert err.retryable and "without a data object" in str(err)


def test_record_info_about_another_task_is_refused(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN an answer naming a different task (a confirmation must not trust it)
    fake.script("t1", [{**fake.success(VIDEO), "taskId": "someone-else"}])
    # WHEN it is polled
    err = _fails(lambda: client.record_info("t1"))
    # THEN it is an error, not another task's video URL
    assert err.retryable and "another task" in str(err)


def test_record_info_encodes_odd_task_ids(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a task id with characters that mean something in a query string
    # WHEN it is polled (unscripted: the fake answers PENDING)
    info = client.record_info("a&b=c d")
    # THEN the provider receives it intact
    assert fake.requests[0].query == {"taskId": "a&b=c d"} and info.task_id == "a&b=c d"


def test_script_answers_are_consumed_in_order_and_the_last_repeats(
    fake: FakeProvider, client: ProviderClient
) -> None:
    # GIVEN a task that is pending, then done
    fake.script("t1", [fake.pending(), fake.success(VIDEO)])
    # WHEN it is polled three times
    flags = [client.record_info("t1").success_flag for _ in range(3)]
    # THEN the answers come in order and the last one stays
    assert flags == ["PENDING", "SUCCESS", "SUCCESS"]
    assert len(fake.requests_to("/api/v1/mp4/record-info", "t1")) == 3


# --- record-info: every successFlag ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "flag", "failed", "ready"),
    [
        (FakeProvider.pending(), SuccessFlag.PENDING, False, False),
        (FakeProvider.success(VIDEO), SuccessFlag.SUCCESS, False, True),
        (
            FakeProvider.failed("CREATE_TASK_FAILED", 451, "audio not downloadable"),
            SuccessFlag.CREATE_TASK_FAILED,
            True,
            False,
        ),
        (
            FakeProvider.failed("GENERATE_MP4_FAILED", 500, "render crashed"),
            SuccessFlag.GENERATE_MP4_FAILED,
            True,
            False,
        ),
        (FakeProvider.callback_exception(VIDEO), SuccessFlag.CALLBACK_EXCEPTION, False, True),
        (FakeProvider.callback_exception(None), SuccessFlag.CALLBACK_EXCEPTION, False, False),
        ({"successFlag": "success", "response": {"videoUrl": VIDEO}}, SuccessFlag.SUCCESS, False, True),
        ({"successFlag": "QUEUED_FOR_GPU"}, "QUEUED_FOR_GPU", False, False),
        ({"successFlag": None}, SuccessFlag.PENDING, False, False),
    ],
    ids=[
        "pending",
        "success",
        "create-failed",
        "mp4-failed",
        "callback-exception-with-url",
        "callback-exception-without-url",
        "lower-case",
        "unknown-kept-verbatim",
        "null",
    ],
)
def test_each_success_flag(
    fake: FakeProvider, client: ProviderClient, data: dict, flag: str, failed: bool, ready: bool
) -> None:
    # GIVEN a task in the given state
    fake.script("t1", [data])
    # WHEN it is polled
    info = client.record_info("t1")
    # THEN the flag is read (unknown ones verbatim) and classified: failed, ready, or wait
    assert info.success_flag == flag and type(info.success_flag) is type(flag)
    assert (info.is_failed, info.video_ready) == (failed, ready)


def test_failure_details_are_kept(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a failed generation
    fake.script("t1", [fake.failed("GENERATE_MP4_FAILED", 451, "source audio could not be downloaded")])
    # WHEN it is polled
    info = client.record_info("t1")
    # THEN the provider's code and message are there to record
    assert (info.error_code, info.error_message) == (451, "source audio could not be downloaded")
    assert info.video_url is None


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_status", "code", "retryable"),
    [
        (405, 405, True),
        (429, 429, True),
        (430, 430, True),
        (455, 455, True),
        (500, 500, True),
        (503, 503, True),
        (400, 400, False),
        (404, 404, False),
        (413, 413, False),
        (451, 451, False),
        (418, 418, False),
        # the body's code wins over the HTTP status
        (200, 430, True),
        (200, 455, True),
        (200, 503, True),
        (200, 400, False),
        (500, 413, False),
    ],
)
def test_error_codes_are_classified(
    fake: FakeProvider, client: ProviderClient, http_status: int, code: int, retryable: bool
) -> None:
    # GIVEN the provider answering an error envelope
    fake.script("t1", [fake.error(http_status, code, f"provider says {code}")])
    # WHEN the task is polled
    err = _fails(lambda: client.record_info("t1"))
    # THEN the body's code is kept and decides whether to retry, and the provider's words are kept
    assert (err.provider_code, err.retryable) == (code, retryable)
    assert f"provider says {code}" in str(err)
    assert code in RETRYABLE_CODES or code >= 500 or not retryable


def test_wrong_key_is_a_final_401(fake: FakeProvider) -> None:
    # GIVEN a client with a key the provider does not know
    bad = ProviderClient(fake.base_url, "sk-wrong-key-00000000000000", timeout=(1.0, 2.0))
    # WHEN it polls
    err = _fails(lambda: bad.record_info("t1"))
    # THEN the error is final and the request did reach the provider with that key
    assert (err.provider_code, err.retryable) == (401, False)
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-wrong-key-00000000000000"


@pytest.mark.parametrize(
    ("answer", "code", "retryable", "words"),
    [
        (FakeProvider.raw(200, "<html>gateway</html>"), None, True, "not JSON"),
        (FakeProvider.raw(200, ""), None, True, "empty body"),
        (FakeProvider.raw(200, "[1, 2]", "application/json"), None, True, "instead of an object"),
        (FakeProvider.raw(200, '{"code": "two hundred"}', "application/json"), None, True, "not a number"),
        # without a JSON code, an error status speaks for itself
        (FakeProvider.raw(503, "<html>Service Unavailable</html>"), 503, True, "code 503"),
        (FakeProvider.raw(404, "<html>Not Found</html>"), 404, False, "code 404"),
        # a body claiming success under an error status is not believed
        (FakeProvider.raw(502, '{"code": 200, "data": {}}', "application/json"), 502, True, "code 502"),
        # redirects are not followed (they would carry the key elsewhere)
        (FakeProvider.raw(302, ""), 302, False, "code 302"),
    ],
    ids=["html", "empty", "list", "code-not-a-number", "html-503", "html-404", "200-under-502", "redirect"],
)
def test_answers_that_are_not_the_api_envelope(
    fake: FakeProvider, client: ProviderClient, answer: object, code: int | None, retryable: bool, words: str
) -> None:
    # GIVEN an answer that is not a proper envelope
    fake.script("t1", [answer])  # type: ignore[list-item]
    # WHEN the task is polled
    err = _fails(lambda: client.record_info("t1"))
    # THEN a ProviderError says so in words
    assert (err.provider_code, err.retryable) == (code, retryable)
    assert words in str(err)


def test_a_slow_provider_times_out_quickly_and_retryably(fake: FakeProvider) -> None:
    # GIVEN a provider that takes 5 s to answer and a client that waits 0.3 s
    fake.script("t1", [fake.delay(5.0)])
    fast = ProviderClient(fake.base_url, KEY, timeout=(0.5, 0.3))
    # WHEN it polls
    started = time.monotonic()
    err = _fails(lambda: fast.record_info("t1"))
    # THEN it gives up at once with a retryable error and no provider code
    assert time.monotonic() - started < 2.0
    assert (err.provider_code, err.retryable) == (None, True)
    assert "timed out" in str(err)


def test_an_unreachable_provider_is_retryable() -> None:
    # GIVEN a port nobody listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ProviderClient(f"http://127.0.0.1:{port}", KEY, timeout=(0.5, 0.5))
    # WHEN the client polls
    err = _fails(lambda: client.record_info("t1"))
    # THEN the error is retryable, without a provider code
    assert (err.provider_code, err.retryable) == (None, True)


def test_long_provider_messages_are_clipped_to_one_line(fake: FakeProvider, client: ProviderClient) -> None:
    # GIVEN a provider message of 5000 characters with line breaks
    fake.script("t1", [fake.error(500, 500, "boom\nline two " + "x" * 5000)])
    # WHEN the task is polled
    err = _fails(lambda: client.record_info("t1"))
    # THEN the message keeps the start of the provider's words, on one line, bounded
    assert "boom line two" in str(err) and "\n" not in str(err)
    assert len(str(err)) < 400


# --- the key never leaks -----------------------------------------------------------------


def test_the_key_never_appears_in_errors_repr_or_logs(
    fake: FakeProvider,
    client: ProviderClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a provider that echoes the key in its error message, and debug logging on
    caplog.set_level(logging.DEBUG)
    # (the client logs through a Powertools child logger: capture it where it writes)
    caplog.set_level(logging.DEBUG, logger=provider_logger.name)
    monkeypatch.setattr(logging.getLogger(provider_logger.name), "handlers", [caplog.handler])
    fake.script("t1", [fake.error(401, 401, f"invalid key {KEY}")])
    fake.script("t2", [fake.delay(5.0)])
    fake.script_generate(fake.error(200, 429, f"no credits left for {KEY}"))
    fast = ProviderClient(fake.base_url, KEY, timeout=(0.5, 0.2))
    # WHEN calls fail in every way
    errors = [
        _fails(lambda: client.record_info("t1")),
        _fails(lambda: fast.record_info("t2")),
        _fails(lambda: client.generate(task_id="t3", audio_id="a", callback_url=CALLBACK)),
    ]
    client.record_info("t4")
    # THEN the key is in no message, no repr and no log line
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [e.message for e in errors]
    texts += [repr(client), str(client), repr(vars(client)), caplog.text]
    for text in texts:
        assert KEY not in text
    assert "provider answered" in caplog.text  # the log lines were looked at
    assert "***" in str(errors[0])
    assert repr(client) == f"ProviderClient(base_url={fake.base_url!r}, timeout=(1.0, 2.0))"


# --- construction and helpers --------------------------------------------------------------


@pytest.mark.parametrize(("base", "key"), [("", KEY), ("ftp://x", KEY), ("https://api.example.com", " ")])
def test_bad_configuration_is_refused(base: str, key: str) -> None:
    # GIVEN a missing base URL or key / WHEN a client is made / THEN it fails at once, without the key
    with pytest.raises(ConfigError) as info:
        ProviderClient(base, key)
    assert KEY not in str(info.value)


def test_a_trailing_slash_in_the_base_is_ignored(fake: FakeProvider) -> None:
    # GIVEN a base URL written with a trailing slash
    client = ProviderClient(fake.base_url + "/", KEY)
    # WHEN it polls / THEN the path is the documented one
    client.record_info("t1")
    assert fake.requests[0].path == "/api/v1/mp4/record-info"


def test_retryable_codes_are_the_documented_ones() -> None:
    assert frozenset({405, 429, 430, 455}) == RETRYABLE_CODES


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_both_time_shapes_read_back_to_the_same_instant(moment: datetime) -> None:
    # GIVEN any instant to the second / WHEN written as ms or as a string / THEN both read back the same
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    ms = int(moment.timestamp()) * 1000
    assert parse_time(ms) == parse_time(str(ms)) == parse_time(moment.strftime("%Y-%m-%d %H:%M:%S")) == moment
