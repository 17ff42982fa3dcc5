"""The source policy: which video URLs may be fetched, checked without DNS.

The video URL comes from a callback body, which the provider signature does not cover, so it
is attacker-controlled input that makes this service open a connection: a textbook SSRF
vector (cloud metadata at 169.254.169.254, the VPC, localhost). `check_url` runs the checks
that need no DNS (scheme, credentials, length, allowed hosts, IP-literal hosts in every
spelling); the ingest path uses it to refuse bad callbacks at once. The addresses a name
resolves to are checked where the connection is made (`videohook.source`).

Kept apart from the fetcher so that the callback path does not import an HTTP client.
`VIDEO_SOURCE_ALLOW_PRIVATE` (`SourcePolicy.allow_private`) lifts the address and scheme
checks so that tests and the local stack can fetch from a plain-http server on loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from videohook.errors import SourceRefused

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def is_host_pattern(raw: str) -> bool:
    """True for what VIDEO_HOSTS_ALLOWED may hold: a host name, "*.example.com", or an IP address.

    Why: anything else (a URL, a path, a port, "*cdn.example.com") matches no host, so every
    callback would be refused; the configuration check fails it at start-up instead.
    """
    pattern = raw.strip().lower().rstrip(".")
    if pattern.startswith("[") and pattern.endswith("]"):
        pattern = pattern[1:-1]
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(pattern)
        return True
    if pattern.startswith("*."):
        pattern = pattern[2:]
    return 0 < len(pattern) <= 253 and bool(_HOSTNAME_RE.match(pattern))


def _ascii_host(host: str) -> str:
    """An internationalised host name in its IDNA (ASCII) form, the one that is resolved and sent.

    Why: a player fetches "bücher.example" as "xn--bcher-kva.example", and so does the HTTP
    client (the same IDNA 2008 + UTS 46 mapping), so every check judges the name actually used;
    the mapping also folds look-alike dots ("127。0。0。1") before the IP-literal check.
    """
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        raise SourceRefused("video URL host is not a valid internationalised host name") from None


def check_host(host: str, policy: SourcePolicy) -> str:
    """Check a bare host (no brackets) by the DNS-free rules; return it normalised.

    Shared by `check_url` and the connection guard, so a difference between how this module
    and urllib3 parse a URL cannot smuggle a host past the allow-list: the guard checks the
    host urllib3 actually connects to.
    """
    host = _ascii_host(host).lower()
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
