"""A fetcher for video sources that cannot be steered inside the network.

The connection guard sits below requests, in the urllib3 connection itself: it resolves the
host exactly once, refuses unless *every* address is public, connects only to those checked
addresses and finally checks the socket's real peer address. Checking a name and then
letting the HTTP library resolve it again would leave a DNS-rebinding window (the second
answer may be 127.0.0.1); resolving once and connecting to what was checked leaves none.
TLS still verifies the certificate against the host name, because the connection's host is
never rewritten; only the socket is made by the guard. Every redirect hop is checked again
with the DNS-free rules of `videohook.policy`.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.cookiejar import DefaultCookiePolicy
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import requests
from aws_lambda_powertools import Logger
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from videohook.errors import LinkExpired, SourceRefused, SourceUnavailable
from videohook.policy import IPAddress, SourcePolicy, check_host, check_url, describe_url, is_public_address

logger = Logger(child=True)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
EXPIRED_STATUSES = frozenset({403, 404, 410})
RETRYABLE_STATUSES = frozenset({408, 429})

# socket.getaddrinfo's shape: (host, port, family, type) -> [(family, type, proto, canonname, sockaddr)].
Resolver = Callable[..., Iterable[Sequence[Any]]]


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
                logger.info(
                    "video source redirect",
                    extra={"from_url": describe_url(current), "to_url": describe_url(target)},
                )
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
