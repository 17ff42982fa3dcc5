"""The source policy and the guarded fetcher.

Why a real HTTP server: redirects, status mapping, timeouts and above all the connection
guard live in the socket layer under requests, and only a real socket exercises them.

The no-network rule: nothing here connects outside 127.0.0.0/8. Names resolve through
injected fake resolvers, and an autouse fixture makes any connect to another address fail
the test loudly. "Public" addresses (93.184.215.14) appear only in cases that are refused
before connecting, or whose connect is replaced by a stub.
"""

from __future__ import annotations

import io
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from videohook import source
from videohook.errors import LinkExpired, SourceRefused, SourceUnavailable
from videohook.policy import SourcePolicy, check_url, is_public_address
from videohook.source import SourceSession, check_peer

VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(64))
PUBLIC_IP = "93.184.215.14"  # only ever in cases refused (or stubbed) before any packet leaves
SECRET = "X-Amz-Signature=deadbeefsecret"

DEV = SourcePolicy(allow_private=True)
PROD = SourcePolicy()


# --- a real loopback server --------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Serves the video and a few misbehaving paths; records every request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers.items())))  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        segments = parts.path.strip("/").split("/")
        head = segments[0]
        if head == "video":
            self._video()
        elif head == "hops":
            remaining = int(segments[1])
            if remaining == 0:
                self._video()
            else:
                self._redirect(302, f"/hops/{remaining - 1}")
        elif head == "redirect":
            self._redirect(int(segments[1]), "/video")
        elif head == "to":
            self._redirect(302, parse_qs(parts.query)["loc"][0])
        elif head == "status":
            self._plain(int(segments[1]), b"error page")
        elif head == "noloc":
            self._plain(302, b"")
        elif head == "slow":
            time.sleep(1.5)
            self._video()
        elif head == "endless-redirect":
            # A redirect whose body never ends: the fetcher must not read it.
            self.send_response(302)
            self.send_header("Location", "/video")
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
            self.wfile.flush()
            time.sleep(3)
        else:
            self._plain(404, b"no such path")

    def _video(self) -> None:
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start = int(wanted[len("bytes=") :].split("-")[0])
            if start >= len(VIDEO):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(VIDEO)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = VIDEO[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(VIDEO) - 1}/{len(VIDEO)}")
        else:
            body = VIDEO
            self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients here hang up early on purpose (timeouts, refused redirects)


class LoopbackServer:
    def __init__(self) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def seen(self) -> list[tuple[str, dict[str, str]]]:
        return self.httpd.seen  # type: ignore[attr-defined,no-any-return]

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def server(loopback: LoopbackServer) -> LoopbackServer:
    loopback.seen.clear()
    return loopback


# --- fake resolvers and the network fence ------------------------------------------------


class FakeResolver:
    """getaddrinfo stand-in: each name maps to a list of answers, one list per call in turn."""

    def __init__(self, answers: dict[str, list[list[str]] | list[str]]) -> None:
        self.answers = {
            name: (value if value and isinstance(value[0], list) else [value])  # type: ignore[list-item]
            for name, value in answers.items()
        }
        self.calls: list[str] = []

    def __call__(
        self, host: str, port: int, family: int = 0, type: int = 0, *rest: Any
    ) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        rounds = self.answers[host]
        ips = rounds[min(self.calls.count(host) - 1, len(rounds) - 1)]
        result = []
        for ip in ips:
            if ipaddress.ip_address(ip).version == 6:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return result


_real_open_socket = source._open_socket


@pytest.fixture(autouse=True)
def network_fence(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Fail any test whose code tries to connect outside loopback; record every connect."""
    attempts: list[tuple[Any, ...]] = []

    def fenced(family: int, socktype: int, proto: int, sockaddr: Sequence[Any], *rest: Any) -> socket.socket:
        attempts.append(tuple(sockaddr))
        assert ipaddress.ip_address(sockaddr[0]).is_loopback, f"test tried to connect to {sockaddr[0]}"
        return _real_open_socket(family, socktype, proto, sockaddr, *rest)

    monkeypatch.setattr(source, "_open_socket", fenced)
    return attempts


def dev_session(*names: str, **policy: Any) -> tuple[SourceSession, FakeResolver]:
    """A session for the loopback server: allow_private, given names resolving to 127.0.0.1."""
    resolver = FakeResolver({name: ["127.0.0.1"] for name in names})
    return SourceSession(
        SourcePolicy(allow_private=True, **policy), resolver=resolver, timeout=(2.0, 2.0)
    ), resolver


# --- is_public_address ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC_IP,
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_are_public(address: str) -> None:
    # GIVEN an ordinary internet address (NAT64/6to4 forms embedding a public IPv4 included)
    # WHEN it is judged
    # THEN it may be fetched from
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "198.19.255.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "192.0.0.1",
        "192.88.99.1",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::ffff:8.8.8.8",
        "::127.0.0.1",
        "::8.8.8.8",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "ff0e::1",
        "2001:db8::1",
        "3fff::1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "100::1",
        "fec0::1",
        "5f00::1",
        "::ffff:0:7f00:1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    # GIVEN a loopback/private/link-local/multicast/reserved/metadata/documentation address,
    #       or an IPv6 form that embeds one (mapped, compatible, 6to4, NAT64, Teredo)
    # WHEN it is judged
    # THEN it is not public
    assert not is_public_address(ipaddress.ip_address(address))


def test_link_local_with_zone_is_not_public() -> None:
    assert not is_public_address(ipaddress.IPv6Address("fe80::1%eth0"))


# --- check_url -----------------------------------------------------------------------------

WILD = SourcePolicy(hosts_allowed=("*.example.com", "cdn.provider.net"))

SSRF_CHECK_URL = [
    ("http://cdn.example.com/v.mp4", PROD),
    ("https://127.0.0.1/", PROD),
    ("https://127.0.0.1:8443/v.mp4", PROD),
    ("https://localhost/", PROD),
    ("https://LOCALHOST./", PROD),
    ("https://api.localhost/", PROD),
    ("https://[::1]/", PROD),
    ("https://[::ffff:127.0.0.1]/", PROD),
    ("https://[::ffff:7f00:1]/", PROD),
    ("https://[::ffff:a9fe:a9fe]/", PROD),
    ("https://[::127.0.0.1]/", PROD),
    ("https://2130706433/", PROD),
    ("https://0x7f000001/", PROD),
    ("https://0x7f.0.0.1/", PROD),
    ("https://0177.0.0.1/", PROD),
    ("https://127.1/", PROD),
    ("https://127.0.0.1./", PROD),
    ("https://017700000001/", PROD),
    ("https://0/", PROD),
    ("https://10.0.0.1/", PROD),
    ("https://172.16.0.1/", PROD),
    ("https://192.168.1.1/", PROD),
    ("https://169.254.169.254/latest/meta-data/", PROD),
    ("https://[fd00:ec2::254]/latest/meta-data/", PROD),
    ("https://100.64.0.1/", PROD),
    ("https://0.0.0.0/", PROD),
    ("https://[::]/", PROD),
    ("https://224.0.0.1/", PROD),
    ("https://240.0.0.1/", PROD),
    ("https://255.255.255.255/", PROD),
    ("https://198.18.0.1/", PROD),
    ("https://[fe80::1]/", PROD),
    ("https://[fe80::1%25eth0]/", PROD),
    ("https://[fc00::1]/", PROD),
    ("https://[64:ff9b::7f00:1]/", PROD),
    ("https://[2002:7f00:1::1]/", PROD),
    ("https://user:s3cr3t@example.com/", PROD),
    ("https://user@example.com/", PROD),
    ("https://example.com@127.0.0.1/", PROD),
    ("https://evil.com\\@example.com/", PROD),
    ("https://example.com\t/", PROD),
    ("https://127\u30020\u30020\u30021/", PROD),  # ideographic full stops: IDNA maps them to dots
    ("file:///etc/passwd", PROD),
    ("gopher://127.0.0.1:6379/_INFO", PROD),
    ("ftp://example.com/v.mp4", PROD),
    ("dict://127.0.0.1:11211/stat", PROD),
    ("//example.com/v.mp4", PROD),
    ("/relative/v.mp4", PROD),
    ("https://", PROD),
    ("https:///v.mp4", PROD),
    ("https://:443/v.mp4", PROD),
    ("https://example.com:0/", PROD),
    ("https://example.com:99999/", PROD),
    ("https://[::1/", PROD),
    ("https://999.1.1.1/", PROD),
    ("", PROD),
    ("https://cdn.example.com/" + "a" * 2030, PROD),
    ("https://example.com/v.mp4", WILD),
    ("https://evil.example.com.attacker.net/v.mp4", WILD),
    ("https://evilexample.com/v.mp4", WILD),
    ("https://cdn.provider.net.evil.org/v.mp4", WILD),
    ("https://other.provider.net/v.mp4", WILD),
    ("https://93.184.215.14/v.mp4", WILD),
]


@pytest.mark.parametrize(("url", "policy"), SSRF_CHECK_URL)
def test_ssrf_urls_are_refused_by_check_url(url: str, policy: SourcePolicy) -> None:
    # GIVEN a hostile or malformed video URL
    # WHEN the DNS-free checks run (callback time)
    # THEN it is refused, and the message does not echo the URL
    with pytest.raises(SourceRefused) as caught:
        check_url(url, policy)
    assert caught.value.status == 400
    assert caught.value.code == "video_url_refused"
    assert "s3cr3t" not in caught.value.message


@pytest.mark.parametrize(("url", "policy"), SSRF_CHECK_URL)
def test_ssrf_urls_are_refused_by_open_without_connecting(
    url: str, policy: SourcePolicy, network_fence: list[Any]
) -> None:
    # GIVEN the same hostile URLs handed straight to the fetcher
    # WHEN it opens them
    # THEN they are refused and no connection is even attempted
    resolver = FakeResolver({})
    with SourceSession(policy, resolver=resolver) as session, pytest.raises(SourceRefused):
        session.open(url)
    assert network_fence == []
    assert resolver.calls == []


def test_table_is_large_enough() -> None:
    assert len(SSRF_CHECK_URL) + len(SSRF_BY_DNS) >= 30


@pytest.mark.parametrize(
    ("url", "policy", "host"),
    [
        ("https://cdn.example.com/v.mp4?sig=1", PROD, "cdn.example.com"),
        ("HTTPS://CDN.Example.COM./v.mp4", PROD, "cdn.example.com"),
        ("https://93.184.215.14:8443/v.mp4", PROD, PUBLIC_IP),
        ("https://[2606:4700:4700::1111]/v.mp4", PROD, "2606:4700:4700::1111"),
        ("https://sub.example.com/v.mp4", WILD, "sub.example.com"),
        ("https://a.b.example.com/v.mp4", WILD, "a.b.example.com"),
        ("https://cdn.provider.net/v.mp4", WILD, "cdn.provider.net"),
        (
            "https://example.com/v.mp4",
            SourcePolicy(hosts_allowed=("*.example.com", "example.com")),
            "example.com",
        ),
        ("https://x.test/" + "a" * (2048 - len("https://x.test/")), PROD, "x.test"),
        # An internationalised name is a host name: checked (and allow-listed) in its ASCII form.
        ("https://bücher.example/v.mp4", PROD, "xn--bcher-kva.example"),
        ("https://BÜCHER.example.com/v.mp4", WILD, "xn--bcher-kva.example.com"),
        ("https://xn--bcher-kva.example/v.mp4", PROD, "xn--bcher-kva.example"),
    ],
)
def test_acceptable_urls_pass_check_url(url: str, policy: SourcePolicy, host: str) -> None:
    # GIVEN a plain https URL on an allowed host
    # WHEN checked
    # THEN the normalised host comes back
    assert check_url(url, policy) == host


def test_allow_private_lifts_address_and_scheme_checks_only() -> None:
    # GIVEN the development policy
    # WHEN loopback, private and plain-http URLs are checked
    # THEN they pass
    assert check_url("http://127.0.0.1:8080/v.mp4", DEV) == "127.0.0.1"
    assert check_url("https://[::1]/v.mp4", DEV) == "::1"
    assert check_url("http://localhost/v.mp4", DEV) == "localhost"
    # AND the rules that are not about addresses still hold
    for url in ("ftp://127.0.0.1/", "http://u:p@127.0.0.1/", "http://2130706433/", "file:///etc/passwd"):
        with pytest.raises(SourceRefused):
            check_url(url, DEV)
    with pytest.raises(SourceRefused, match="VIDEO_HOSTS_ALLOWED"):
        check_url("http://127.0.0.1/", SourcePolicy(allow_private=True, hosts_allowed=("video.test",)))


def test_refusal_messages_never_echo_the_query_string() -> None:
    # GIVEN a refused URL carrying a signature in its query
    # WHEN refused
    # THEN the message names the problem but not the secret
    with pytest.raises(SourceRefused) as caught:
        check_url(f"https://10.0.0.1/v.mp4?{SECRET}", PROD)
    assert "not a public address" in caught.value.message
    assert SECRET not in caught.value.message


# --- the connection guard: names that resolve somewhere bad ---------------------------------

SSRF_BY_DNS = [
    ("https://internal.test/v.mp4", {"internal.test": ["10.0.0.5"]}),
    ("https://metadata.test/latest/meta-data/", {"metadata.test": ["169.254.169.254"]}),
    ("https://v6metadata.test/", {"v6metadata.test": ["fd00:ec2::254"]}),
    ("https://127.0.0.1.nip.io/", {"127.0.0.1.nip.io": ["127.0.0.1"]}),
    ("https://loop6.test/", {"loop6.test": ["::1"]}),
    ("https://mapped.test/", {"mapped.test": ["::ffff:127.0.0.1"]}),
    ("https://cgnat.test/", {"cgnat.test": ["100.64.0.1"]}),
    ("https://zero.test/", {"zero.test": ["0.0.0.0"]}),
    ("https://mixed.test/v.mp4", {"mixed.test": [PUBLIC_IP, "127.0.0.1"]}),
    ("https://mixed6.test/v.mp4", {"mixed6.test": ["2606:4700:4700::1111", "fe80::1"]}),
    ("https://nat64.test/", {"nat64.test": ["64:ff9b::a9fe:a9fe"]}),
]


@pytest.mark.parametrize(("url", "answers"), SSRF_BY_DNS)
def test_names_resolving_to_non_public_addresses_are_refused_at_connect(
    url: str, answers: dict[str, list[str]], network_fence: list[Any]
) -> None:
    # GIVEN a URL whose host name passes the DNS-free checks
    # AND a resolver that answers with at least one non-public address
    # WHEN the fetcher opens it
    # THEN the guard refuses before connecting anywhere
    check_url(url, PROD)
    resolver = FakeResolver(answers)
    with SourceSession(PROD, resolver=resolver) as session, pytest.raises(SourceRefused, match="not public"):
        session.open(url)
    assert network_fence == []
    assert len(resolver.calls) == 1


def test_rebinding_after_validation_is_refused_at_connect(network_fence: list[Any]) -> None:
    # GIVEN a rebinding resolver: public on the first call, loopback afterwards
    resolver = FakeResolver({"rebind.test": [[PUBLIC_IP], ["127.0.0.1"]]})
    # AND someone validated the name first and saw a public address
    first = resolver("rebind.test", 443)
    assert first[0][4][0] == PUBLIC_IP
    # WHEN the fetcher opens the URL
    # THEN the guard resolves for itself, sees loopback and refuses without connecting
    with (
        SourceSession(PROD, resolver=resolver) as session,
        pytest.raises(SourceRefused, match=r"127\.0\.0\.1"),
    ):
        session.open("https://rebind.test/v.mp4")
    assert network_fence == []


def test_guard_connects_only_to_the_addresses_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a rebinding resolver: public on the first call, loopback on every later one
    resolver = FakeResolver({"rebind.test": [[PUBLIC_IP], ["127.0.0.1"]]})
    # AND a connect stub that records where it is asked to go and never sends a packet
    asked: list[tuple[Any, ...]] = []

    def refuse(family: int, socktype: int, proto: int, sockaddr: Sequence[Any], *rest: Any) -> socket.socket:
        asked.append(tuple(sockaddr))
        raise ConnectionRefusedError("stubbed: no network in tests")

    monkeypatch.setattr(source, "_open_socket", refuse)
    # WHEN the fetcher opens the URL
    with SourceSession(PROD, resolver=resolver) as session, pytest.raises(SourceUnavailable):
        session.open("https://rebind.test/v.mp4")
    # THEN it resolved exactly once and tried only the address it checked
    assert resolver.calls == ["rebind.test"]
    assert asked == [(PUBLIC_IP, 443)]


def test_guard_tries_each_checked_address_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a host with two public addresses, the first unreachable
    resolver = FakeResolver({"two.test": ["2606:4700:4700::1111", PUBLIC_IP]})
    asked: list[Any] = []

    def refuse(family: int, socktype: int, proto: int, sockaddr: Sequence[Any], *rest: Any) -> socket.socket:
        asked.append(sockaddr[0])
        raise TimeoutError("stubbed timeout")

    monkeypatch.setattr(source, "_open_socket", refuse)
    # WHEN both time out
    # THEN both were tried, in order, and the failure is retryable
    with SourceSession(PROD, resolver=resolver) as session, pytest.raises(SourceUnavailable) as caught:
        session.open("https://two.test/v.mp4")
    assert asked == ["2606:4700:4700::1111", PUBLIC_IP]
    assert caught.value.retryable


def test_connected_peer_is_checked(monkeypatch: pytest.MonkeyPatch, server: LoopbackServer) -> None:
    # GIVEN a resolver that answers with a public address
    resolver = FakeResolver({"cdn.example.com": [PUBLIC_IP]})
    # AND a socket layer that lands the connection on loopback instead (a hostile route)
    asked: list[Any] = []

    def misroute(
        family: int, socktype: int, proto: int, sockaddr: Sequence[Any], *rest: Any
    ) -> socket.socket:
        asked.append(sockaddr[0])
        return socket.create_connection(("127.0.0.1", server.port), timeout=2)

    monkeypatch.setattr(source, "_open_socket", misroute)
    # WHEN the fetcher opens the URL
    # THEN the peer check sees 127.0.0.1 and refuses before any TLS or HTTP is spoken
    with (
        SourceSession(PROD, resolver=resolver) as session,
        pytest.raises(SourceRefused, match="connected to 127"),
    ):
        session.open("https://cdn.example.com/v.mp4")
    assert asked == [PUBLIC_IP]
    assert server.seen == []


def test_check_peer_on_a_real_socket(server: LoopbackServer) -> None:
    # GIVEN a socket really connected to loopback
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    try:
        # WHEN checked under the development policy THEN its peer is reported
        assert check_peer(sock, DEV) == ipaddress.IPv4Address("127.0.0.1")
        # WHEN checked under the production policy THEN refused and the socket closed
        with pytest.raises(SourceRefused):
            check_peer(sock, PROD)
        assert sock.fileno() == -1
    finally:
        sock.close()


def test_check_peer_refuses_an_unconnected_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(SourceRefused):
        check_peer(sock, DEV)
    assert sock.fileno() == -1


def test_guard_refuses_even_when_check_url_is_bypassed(server: LoopbackServer) -> None:
    # GIVEN the production policy and requests driven directly (as a parser differential would)
    resolver = FakeResolver({"video.test": ["127.0.0.1"]})
    # WHEN plain http is attempted THEN the connection layer refuses it
    with SourceSession(PROD, resolver=resolver) as session, pytest.raises(SourceRefused, match="https"):
        session._session.get(server.url("/video", "video.test"), timeout=2)
    # WHEN a host outside the allow-list is reached directly THEN refused at connect too
    allow_list = SourcePolicy(allow_private=True, hosts_allowed=("video.test",))
    with (
        SourceSession(allow_list, resolver=FakeResolver({"other.test": ["127.0.0.1"]})) as session,
        pytest.raises(SourceRefused, match="VIDEO_HOSTS_ALLOWED"),
    ):
        session._session.get(server.url("/video", "other.test"), timeout=2)
    assert server.seen == []


# --- fetching from the loopback server -----------------------------------------------------


def test_dev_policy_fetches_from_loopback(server: LoopbackServer) -> None:
    # GIVEN the development policy and the loopback server
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session:
        # WHEN the video is opened
        response = session.open(server.url("/video"))
        # THEN it streams the bytes
        with response:
            assert response.status_code == 200
            assert b"".join(response.iter_content(16)) == VIDEO
    assert server.seen[0][1]["Accept-Encoding"] == "identity"


def test_named_host_resolves_once_through_the_injected_resolver(server: LoopbackServer) -> None:
    session, resolver = dev_session("video.test")
    with session, session.open(server.url("/video", "video.test")) as response:
        assert response.content == VIDEO
    assert resolver.calls == ["video.test"]
    assert server.seen[0][1]["Host"] == f"video.test:{server.port}"


def test_an_internationalised_host_is_fetched_by_its_ascii_name(server: LoopbackServer) -> None:
    # GIVEN a video URL whose host is an internationalised domain name
    session, resolver = dev_session("xn--bcher-kva.test")
    # WHEN the fetcher opens it
    with session, session.open(server.url("/video", "bücher.test")) as response:
        # THEN the video comes back, the name resolved and sent in its IDNA (ASCII) form
        assert response.content == VIDEO
    assert resolver.calls == ["xn--bcher-kva.test"]
    assert server.seen[0][1]["Host"] == f"xn--bcher-kva.test:{server.port}"


@pytest.mark.parametrize("hops", [1, 3])
def test_redirects_within_the_limit_are_followed(server: LoopbackServer, hops: int) -> None:
    # GIVEN a chain of relative redirects
    with (
        SourceSession(DEV, timeout=(2.0, 2.0)) as session,
        session.open(server.url(f"/hops/{hops}")) as response,
    ):
        # THEN the video at its end is returned
        assert response.content == VIDEO
    assert server.paths() == [f"/hops/{n}" for n in range(hops, -1, -1)]


def test_too_many_redirects_are_refused(server: LoopbackServer) -> None:
    # GIVEN a chain of 4 redirects (the limit is 3)
    # WHEN opened THEN refused, and the 5th URL is never requested
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session, pytest.raises(SourceRefused, match="more than 3"):
        session.open(server.url("/hops/4"))
    assert server.paths() == ["/hops/4", "/hops/3", "/hops/2", "/hops/1"]


def test_max_redirects_comes_from_the_policy(server: LoopbackServer) -> None:
    with (
        SourceSession(SourcePolicy(allow_private=True, max_redirects=0)) as session,
        pytest.raises(SourceRefused),
    ):
        session.open(server.url("/hops/1"))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(server: LoopbackServer, status: int) -> None:
    with (
        SourceSession(DEV, timeout=(2.0, 2.0)) as session,
        session.open(server.url(f"/redirect/{status}")) as r,
    ):
        assert r.status_code == 200
        assert r.content == VIDEO


def test_absolute_redirect_to_an_allowed_host(server: LoopbackServer) -> None:
    # GIVEN two allowed names on the same server
    session, _ = dev_session("video.test", "cdn.video.test", hosts_allowed=("video.test", "*.video.test"))
    target = server.url("/video", "cdn.video.test")
    with session, session.open(server.url(f"/to?loc={target}", "video.test")) as response:
        assert response.content == VIDEO
    assert server.seen[-1][1]["Host"] == f"cdn.video.test:{server.port}"


def test_redirect_to_a_host_outside_the_allow_list_is_refused(server: LoopbackServer) -> None:
    # GIVEN an allow-list of one name, and a redirect to another name on the same server
    session, resolver = dev_session("video.test", "other.test", hosts_allowed=("video.test",))
    target = server.url("/video", "other.test")
    # WHEN opened THEN refused, and the other host is never resolved nor contacted
    with session, pytest.raises(SourceRefused, match="not in VIDEO_HOSTS_ALLOWED"):
        session.open(server.url(f"/to?loc={target}", "video.test"))
    assert resolver.calls == ["video.test"]
    assert len(server.seen) == 1


def test_redirect_to_a_forbidden_scheme_is_refused(server: LoopbackServer) -> None:
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session, pytest.raises(SourceRefused, match="scheme"):
        session.open(server.url("/to?loc=file:///etc/passwd"))


def test_cross_origin_redirect_drops_credentials_but_keeps_range(server: LoopbackServer) -> None:
    session, _ = dev_session("video.test", "other.test")
    target = server.url("/video", "other.test")
    headers = {"Authorization": "Bearer nope", "Range": "bytes=4-"}
    with session, session.open(server.url(f"/to?loc={target}", "video.test"), headers=headers) as response:
        assert response.status_code == 206
        assert response.content == VIDEO[4:]
    first, second = server.seen[0][1], server.seen[1][1]
    assert first["Authorization"] == "Bearer nope"
    assert "Authorization" not in second
    assert second["Range"] == "bytes=4-"


def test_redirect_body_is_never_read(server: LoopbackServer) -> None:
    # GIVEN a redirect whose body claims a terabyte and then stalls
    started = time.monotonic()
    with (
        SourceSession(DEV, timeout=(2.0, 2.0)) as session,
        session.open(server.url("/endless-redirect")) as r,
    ):
        # THEN the next hop is reached at once
        assert r.content == VIDEO
    assert time.monotonic() - started < 1.0


def test_redirect_without_location_is_unavailable(server: LoopbackServer) -> None:
    with (
        SourceSession(DEV, timeout=(2.0, 2.0)) as session,
        pytest.raises(SourceUnavailable, match="Location"),
    ):
        session.open(server.url("/noloc"))


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_link_statuses(server: LoopbackServer, status: int) -> None:
    # GIVEN the source answers 403/404/410 for a signed URL
    # WHEN opened THEN LinkExpired (not retryable), and the signature is not in the message
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session, pytest.raises(LinkExpired) as caught:
        session.open(server.url(f"/status/{status}?{SECRET}"))
    assert not caught.value.retryable
    assert str(status) in caught.value.message
    assert SECRET not in caught.value.message
    assert "/status/" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_retryable_statuses(server: LoopbackServer, status: int) -> None:
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session, pytest.raises(SourceUnavailable) as caught:
        session.open(server.url(f"/status/{status}?{SECRET}"))
    assert caught.value.retryable
    assert SECRET not in caught.value.message


def test_expired_after_a_redirect(server: LoopbackServer) -> None:
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session, pytest.raises(LinkExpired):
        session.open(server.url("/to?loc=/status/410"))


@pytest.mark.parametrize(("range_header", "status"), [("bytes=10-", 206), ("bytes=99999-", 416)])
def test_range_answers_go_back_to_the_caller(server: LoopbackServer, range_header: str, status: int) -> None:
    # GIVEN a resume request
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session:
        response = session.open(server.url("/video"), headers={"Range": range_header})
    # THEN 206 and 416 are the caller's to handle
    with response:
        assert response.status_code == status
        if status == 206:
            assert response.content == VIDEO[10:]


def test_other_client_errors_go_back_to_the_caller(server: LoopbackServer) -> None:
    with (
        SourceSession(DEV, timeout=(2.0, 2.0)) as session,
        session.open(server.url("/status/400")) as response,
    ):
        assert response.status_code == 400


def test_connection_refused_is_unavailable() -> None:
    # GIVEN a loopback port with nothing listening
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    # WHEN opened THEN a retryable SourceUnavailable, with no secret in the message
    with SourceSession(DEV, timeout=(1.0, 1.0)) as session, pytest.raises(SourceUnavailable) as caught:
        session.open(f"http://127.0.0.1:{port}/v.mp4?{SECRET}")
    assert caught.value.retryable
    assert SECRET not in caught.value.message


def test_unknown_name_is_unavailable() -> None:
    session = SourceSession(DEV, resolver=FakeResolver({}))
    with session, pytest.raises(SourceUnavailable):
        session.open("http://nowhere.test/v.mp4")


def test_read_timeout_is_unavailable(server: LoopbackServer) -> None:
    with (
        SourceSession(DEV, timeout=(1.0, 0.3)) as session,
        pytest.raises(SourceUnavailable, match="timed out"),
    ):
        session.open(server.url("/slow"))


def test_environment_proxies_are_ignored(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN proxy variables pointing at a dead port
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    # WHEN the video is opened THEN it goes straight to the source
    with SourceSession(DEV, timeout=(2.0, 2.0)) as session, session.open(server.url("/video")) as response:
        assert response.content == VIDEO


def test_explicit_proxies_are_refused(server: LoopbackServer) -> None:
    with SourceSession(DEV) as session, pytest.raises(SourceRefused, match="proxy"):
        session._session.get(server.url("/video"), proxies={"http": "http://127.0.0.1:9"}, timeout=2)


# --- redirect checks under the production policy (scripted transport) ----------------------


class ScriptedAdapter(HTTPAdapter):
    """Answers from a script instead of the network, to drive redirects under PROD.

    Why: under the production policy the guard (rightly) refuses the loopback server, so the
    per-hop URL checks are exercised with a transport that only returns redirects.
    """

    def __init__(self, script: dict[str, tuple[int, dict[str, str]]]) -> None:
        super().__init__()
        self.script = script
        self.sent: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        self.sent.append(request.url)
        status, headers = self.script[request.url]
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response.raw = io.BytesIO(b"")
        response.url = request.url
        response.request = request
        return response


@pytest.mark.parametrize(
    "location",
    [
        "https://127.0.0.1/v.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/",
        "https://2130706433/",
        "https://localhost/",
        "http://cdn.example.com/v.mp4",
        "https://user:s3cr3t@cdn.example.com/v.mp4",
        "gopher://cdn.example.com/",
    ],
)
def test_redirect_to_a_private_or_bad_target_is_refused_under_prod(location: str) -> None:
    # GIVEN a public-looking source that redirects to a private or disallowed target
    start = "https://cdn.example.com/v.mp4"
    adapter = ScriptedAdapter({start: (302, {"Location": location})})
    with SourceSession(PROD, resolver=FakeResolver({})) as session:
        session._session.mount("https://", adapter)
        session._session.mount("http://", adapter)
        # WHEN opened THEN the hop is refused and never requested
        with pytest.raises(
            SourceRefused, match=re.escape("redirect from https://cdn.example.com/v.mp4 refused")
        ):
            session.open(start)
    assert adapter.sent == [start]


def test_relative_redirect_under_prod_is_followed() -> None:
    start = "https://cdn.example.com/a/v.mp4?sig=1"
    final = "https://cdn.example.com/b/v.mp4"
    adapter = ScriptedAdapter({start: (302, {"Location": "../b/v.mp4"}), final: (200, {})})
    with SourceSession(PROD) as session:
        session._session.mount("https://", adapter)
        with session.open(start) as response:
            assert response.status_code == 200
    assert adapter.sent == [start, final]


def test_context_manager_closes_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    session = SourceSession(DEV)
    monkeypatch.setattr(session._session, "close", lambda: closed.append(True))
    with session:
        pass
    assert closed == [True]
