"""The source policy: which video URLs may be fetched, and a fetcher that cannot be steered inside.

The video URL comes from a callback body, which the provider signature does not cover, so it
is attacker-controlled input that makes this service open a connection: a textbook SSRF
vector (cloud metadata at 169.254.169.254, the VPC, localhost). Two layers stop it:

* `check_url` runs the checks that need no DNS (scheme, credentials, length, allowed hosts,
  IP-literal hosts in every spelling). The ingest path uses it to refuse bad callbacks at once,
  and `SourceSession.open` runs it again on every redirect hop.
* The connection guard sits below requests, in the urllib3 connection itself: it resolves the
  host exactly once, refuses unless *every* address is public, connects only to those checked
  addresses and finally checks the socket's real peer address. Checking a name and then
  letting the HTTP library resolve it again would leave a DNS-rebinding window (the second
  answer may be 127.0.0.1); resolving once and connecting to what was checked leaves none.
  TLS still verifies the certificate against the host name, because the connection's host is
  never rewritten; only the socket is made by the guard.

`VIDEO_SOURCE_ALLOW_PRIVATE` (`SourcePolicy.allow_private`) lifts the address and scheme
checks so that tests and the local stack can fetch from a plain-http server on loopback.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from videohook.errors import LinkExpired, SourceRefused, SourceUnavailable

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
EXPIRED_STATUSES = frozenset({403, 404, 410})
RETRYABLE_STATUSES = frozenset({408, 429})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, canonname, sockaddr)].
Resolver = Callable[..., Iterable[Sequence[Any]]]


@dataclass(frozen=True)
class SourcePolicy:
    """What the service may fetch; built from VIDEO_SOURCE_ALLOW_PRIVATE and VIDEO_HOSTS_ALLOWED."""

    allow_private: bool = False  # lifts the address AND scheme checks: development and tests only
    hosts_allowed: tuple[str, ...] = ()  # exact names or "*.example.com"; empty = any public host
    max_redirects: int = 3


# --- addresses ---------------------------------------------------------------------------

# Listed explicitly instead of trusting `ip.is_global` alone: its tables changed between
# Python patch releases, and it calls multicast and some special ranges "global".
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, includes the 169.254.169.254 metadata service
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes 255.255.255.255
    )
)
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form ::a.b.c.d
        "::ffff:0:0/96",  # IPv4-mapped: DNS has no business returning these
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/32",  # Teredo: the embedded client address is not checkable in general
        "2001:db8::/32",  # documentation
        "2001:10::/28",  # ORCHID
        "3fff::/20",  # documentation (2024)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local, includes fd00:ec2::254 (EC2 metadata over IPv6)
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def is_public_address(ip: IPAddress) -> bool:
    """True only for an address on the public internet that is safe to fetch a video from.

    Why so strict: anything else is how SSRF reaches the host itself, the VPC, or the cloud
    metadata service. IPv6 forms that carry an IPv4 address (6to4, NAT64) are judged by the
    embedded address, since a translator would deliver the packets there.
    """
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not any(ip in net for net in _BLOCKED_V4)
    if ip.scope_id:
        return False  # a zone index only makes sense for link-local targets
    if any(ip in net for net in _BLOCKED_V6):
        return False
    if ip in _NAT64_WELL_KNOWN:
        return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        return is_public_address(ip.sixtofour)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


# --- DNS-free URL checks -------------------------------------------------------------------

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


def describe_url(url: str) -> str:
    """scheme://host[:port]/path of a URL, for messages and logs.

    Why: a provider's temporary link carries its signature in the query string (and may carry
    credentials), which must never reach a log line, a task record or an HTTP answer.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    path = parts.path if len(parts.path) <= 100 else parts.path[:100] + "..."
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{path}"


def _parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host names directly, in any spelling a resolver would accept, else None.

    Why: getaddrinfo (inet_aton) reads "2130706433", "0x7f.0.0.1", "0177.0.0.1" and "127.1"
    as 127.0.0.1 without any DNS, so a name check alone would wave them through.
    """
    if ":" in host:
        if "%" in host:
            raise SourceRefused("video URL host has an IPv6 zone index, which is never allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise SourceRefused("video URL host is not a valid IPv6 address") from None
    if all(_NUMERIC_LABEL_RE.match(label) for label in host.split(".")):
        try:
            packed = socket.inet_aton(host)
        except OSError:
            raise SourceRefused("video URL host looks numeric but is not a valid IPv4 address") from None
        return ipaddress.IPv4Address(packed)
    return None


def _host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Match VIDEO_HOSTS_ALLOWED: exact names, or "*.example.com" for any name below example.com."""
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".").strip("[]")
        if not pattern:
            continue
        if pattern.startswith("*."):
            suffix = pattern[1:]  # ".example.com": the dot keeps "evilexample.com" out
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == pattern:
            return True
    return False


def check_host(host: str, policy: SourcePolicy) -> str:
    """Check a bare host (no brackets) by the DNS-free rules; return it normalised.

    Shared by `check_url` and the connection guard, so a difference between how this module
    and urllib3 parse a URL cannot smuggle a host past the allow-list: the guard checks the
    host urllib3 actually connects to.
    """
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise SourceRefused("video URL has no host")
    ip = _parse_ip_literal(host)
    if ip is not None:
        normalised = str(ip)
        if not policy.allow_private and not is_public_address(ip):
            raise SourceRefused(f"video URL host {normalised} is not a public address")
        if isinstance(ip, ipaddress.IPv4Address) and host != normalised:
            raise SourceRefused("video URL host is an IPv4 address in an unusual spelling")
    else:
        if len(host) > 253 or not _HOSTNAME_RE.match(host):
            raise SourceRefused("video URL host is not a valid host name")
        if not policy.allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise SourceRefused(f"video URL host {host} is a loopback name")
        normalised = host
    if policy.hosts_allowed and not _host_allowed(normalised, policy.hosts_allowed):
        raise SourceRefused(f"video URL host {normalised} is not in VIDEO_HOSTS_ALLOWED")
    return normalised


def check_url(url: str, policy: SourcePolicy) -> str:
    """Run the source-policy checks that need no DNS; return the normalised host.

    Why no DNS here: at callback time an answer must come in milliseconds, and a DNS answer
    then proves nothing about the answer at fetch time; the addresses are checked where the
    connection is made. Raises SourceRefused with a message that never repeats the URL's
    query string.
    """
    if not isinstance(url, str) or not url:
        raise SourceRefused("video URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise SourceRefused(f"video URL is longer than {MAX_URL_LENGTH} characters")
    # Whitespace, control characters and backslashes are where URL parsers disagree
    # (WHATWG reads "\" as "/", urlsplit drops tabs); a real signed link has none of them.
    if any(ch <= " " or ch in "\x7f\\" for ch in url):
        raise SourceRefused("video URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise SourceRefused("video URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise SourceRefused("video URL is not an absolute URL")
    if scheme not in ("https", "http"):
        raise SourceRefused(f"video URL scheme {scheme!r} is not allowed: https only")
    if scheme == "http" and not policy.allow_private:
        raise SourceRefused("video URL must use https")
    if "@" in parts.netloc:
        raise SourceRefused("video URL must not carry credentials (user:password@)")
    if not host:
        raise SourceRefused("video URL has no host")
    if port == 0:
        raise SourceRefused("video URL port 0 is not allowed")
    return check_host(host, policy)


# --- the connection guard ------------------------------------------------------------------


def _address_of(sockaddr: Sequence[Any]) -> IPAddress:
    """The IP address of a socket address tuple (IPv6 scope suffix kept, so it is refused)."""
    return ipaddress.ip_address(str(sockaddr[0]))


def check_peer(sock: socket.socket, policy: SourcePolicy) -> IPAddress:
    """Check the address a socket is really connected to; close it and refuse if not public.

    Why, after checking every resolved address: it is the last word, independent of how the
    address was chosen (a resolver, a socket option, a kernel route), and it is cheap.
    """
    try:
        peer = _address_of(sock.getpeername())
    except (OSError, ValueError) as exc:
        sock.close()
        raise SourceRefused("the video source connection has no checkable peer address") from exc
    if not policy.allow_private and not is_public_address(peer):
        sock.close()
        raise SourceRefused(f"the video source connected to {peer}, which is not a public address")
    return peer


def _open_socket(
    family: int,
    socktype: int,
    proto: int,
    sockaddr: Sequence[Any],
    timeout: Any,
    source_address: tuple[str, int] | None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None,
) -> socket.socket:
    """Create and connect one socket to one checked address (the seam the tests replace)."""
    sock = socket.socket(family, socktype, proto)
    try:
        for option in socket_options or ():
            sock.setsockopt(*option)
        if timeout is None or isinstance(timeout, int | float):
            sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(tuple(sockaddr))
    except BaseException:
        sock.close()
        raise
    return sock


class _ConnectGuard:
    """Makes the socket for a urllib3 connection: resolve once, check all, connect to those."""

    def __init__(self, policy: SourcePolicy, resolver: Resolver) -> None:
        self.policy = policy
        self.resolver = resolver

    def connect(self, conn: HTTPConnection, *, tls: bool) -> socket.socket:
        policy = self.policy
        if getattr(conn, "_tunnel_host", None) or getattr(conn, "proxy", None):
            raise SourceRefused("video sources are never fetched through a proxy")
        if not tls and not policy.allow_private:
            raise SourceRefused("video sources must use https")
        host = conn.host.strip("[]")
        check_host(host, policy)
        port = conn.port or (443 if tls else 80)

        try:
            infos = list(self.resolver(host, port, allowed_gai_family(), socket.SOCK_STREAM))
        except socket.gaierror as exc:
            raise NameResolutionError(host, conn, exc) from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"Failed to resolve the video source: {exc}") from exc
        if not infos:
            raise NewConnectionError(conn, "The video source host resolves to no address")

        checked: list[tuple[int, int, int, Sequence[Any]]] = []
        for family, socktype, proto, _canonname, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise SourceRefused(f"video source host {host} resolves to a non-IP address")
            ip = _address_of(sockaddr)
            if not policy.allow_private and not is_public_address(ip):
                # One bad address refuses the host: a resolver may rotate or be raced, and we
                # will not bet on which answer the next connection gets.
                raise SourceRefused(f"video source host {host} resolves to {ip}, which is not public")
            checked.append((family, socktype or socket.SOCK_STREAM, proto, sockaddr))

        last_error: OSError | None = None
        for family, socktype, proto, sockaddr in checked:
            try:
                sock = _open_socket(
                    family, socktype, proto, sockaddr, conn.timeout, conn.source_address, conn.socket_options
                )
            except OSError as exc:
                last_error = exc
                continue
            check_peer(sock, policy)
            sys.audit("http.client.connect", conn, conn.host, conn.port)
            return sock

        if isinstance(last_error, TimeoutError):
            raise ConnectTimeoutError(
                conn, f"Connection to {host} timed out. (connect timeout={conn.timeout})"
            ) from last_error
        raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}") from last_error


class _GuardedHTTPConnection(HTTPConnection):
    """urllib3 HTTPConnection whose socket comes from the guard."""

    guard: ClassVar[_ConnectGuard]

    def _new_conn(self) -> socket.socket:
        return self.guard.connect(self, tls=False)


class _GuardedHTTPSConnection(HTTPSConnection):
    """urllib3 HTTPSConnection whose socket comes from the guard; TLS (SNI, certificate
    verification against the host name) is urllib3's, unchanged."""

    guard: ClassVar[_ConnectGuard]

    def _new_conn(self) -> socket.socket:
        return self.guard.connect(self, tls=True)


def _guarded_pool_classes(guard: _ConnectGuard) -> dict[str, type[HTTPConnectionPool]]:
    """Pool classes for PoolManager.pool_classes_by_scheme, bound to one guard.

    Why classes built per session: PoolManager instantiates pools itself, and extra pool
    keyword arguments would have to be taught to its pool-key functions; a class attribute
    carries the guard with no such plumbing.
    """
    http_conn = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), {"guard": guard})
    https_conn = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), {"guard": guard})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


class _GuardedAdapter(HTTPAdapter):
    """requests adapter whose pools make every connection through the guard."""

    def __init__(self, guard: _ConnectGuard) -> None:
        self._pool_classes = _guarded_pool_classes(guard)  # before super(): it builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # A proxy's pools would not use the guard, and the guard would check the proxy, not the source.
        raise SourceRefused("video sources are never fetched through a proxy")


class _NoRedirectSession(requests.Session):
    """A Session that never looks at redirects itself.

    Why: even with allow_redirects=False, requests prepares the next hop and reads the whole
    redirect body into memory first; `SourceSession.open` follows redirects itself instead.
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


# --- the fetcher ---------------------------------------------------------------------------

_CROSS_ORIGIN_DROP = ("authorization", "proxy-authorization", "cookie")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or ""), parts.port


class SourceSession:
    """Fetches video sources under a SourcePolicy; owns a guarded requests.Session.

    Use one per transfer (or per warm Lambda) and close it: it holds pooled connections.
    """

    def __init__(
        self,
        policy: SourcePolicy,
        *,
        resolver: Resolver = socket.getaddrinfo,
        timeout: tuple[float, float] = (5.0, 30.0),
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        session = _NoRedirectSession()
        session.trust_env = False  # no proxies, no .netrc credentials from the environment
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # every fetch stands alone
        # identity: the bytes counted and stored are the bytes sent, so Content-Length and Range hold.
        session.headers.update({"Accept-Encoding": "identity", "User-Agent": "videohook"})
        adapter = _GuardedAdapter(_ConnectGuard(policy, resolver))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self._session = session

    def open(self, url: str, *, headers: Mapping[str, str] | None = None) -> requests.Response:
        """GET the video, following up to policy.max_redirects checked redirects.

        Returns the open streaming response (200, 206, 416 or another status the caller
        handles); the caller reads iter_content and closes it. Raises LinkExpired for
        403/404/410, SourceUnavailable for 5xx/408/429 and connection failures (retryable),
        SourceRefused when a hop breaks the policy or there are too many redirects.
        """
        current = url
        send_headers = dict(headers or {})
        check_url(current, self.policy)
        for hop in range(self.policy.max_redirects + 1):
            response = self._get(current, send_headers)
            status = response.status_code
            if status in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                response.close()  # never read a redirect body: it may be endless
                if not location:
                    raise SourceUnavailable(f"{describe_url(current)} answered {status} without a Location")
                if hop == self.policy.max_redirects:
                    raise SourceRefused(
                        f"video URL redirects more than {self.policy.max_redirects} times"
                        f" (last hop {describe_url(current)})"
                    )
                try:
                    target = urljoin(current, location)
                except ValueError:
                    raise SourceRefused(f"{describe_url(current)} redirects to an invalid URL") from None
                try:
                    check_url(target, self.policy)
                except SourceRefused as exc:
                    raise SourceRefused(
                        f"redirect from {describe_url(current)} refused: {exc.message}"
                    ) from None
                if _origin(target) != _origin(current):
                    send_headers = {
                        k: v for k, v in send_headers.items() if k.lower() not in _CROSS_ORIGIN_DROP
                    }
                log.info("video source redirect %s -> %s", describe_url(current), describe_url(target))
                current = target
                continue
            self._raise_for_status(response, current)
            return response
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        """One guarded GET, with requests' exceptions turned into the core's."""
        where = describe_url(url)
        try:
            return self._session.get(
                url, headers=dict(headers), stream=True, allow_redirects=False, timeout=self.timeout
            )
        except SourceRefused:
            raise
        except requests.exceptions.Timeout as exc:
            raise SourceUnavailable(f"{where} timed out ({type(exc).__name__})") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise SourceRefused(f"{where} is not a fetchable URL ({type(exc).__name__})") from None
        except requests.exceptions.RequestException as exc:
            raise SourceUnavailable(f"{where} could not be reached ({type(exc).__name__})") from None

    @staticmethod
    def _raise_for_status(response: requests.Response, url: str) -> None:
        status = response.status_code
        if status in EXPIRED_STATUSES:
            response.close()
            raise LinkExpired(
                f"{describe_url(url)} answered {status}: the temporary link has expired or been removed"
            )
        if status >= 500 or status in RETRYABLE_STATUSES:
            response.close()
            raise SourceUnavailable(f"{describe_url(url)} answered {status}; another attempt may succeed")

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> SourceSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
