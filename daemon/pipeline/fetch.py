"""Download the image behind a user's link without letting the link reach inside our network (SSRF).

A chat user controls the URL, so every step that could touch a private service is checked:

* only ``http``/``https``, no ``user:password@``, no bare-number hosts (``2130706433``, ``0x7f000001``);
* host names resolve through :class:`_CheckedResolver`, which drops every address that is not globally
  routable; aiohttp then connects to exactly the addresses it returned, so there is no gap between the
  address we checked and the one we connect to (no DNS rebinding window);
* IP-literal hosts never reach a resolver in aiohttp, so they are checked here directly;
* redirects are followed by hand, each hop checked again like the first URL;
* the body streams under a byte cap, with connect/read timeouts and one deadline for the whole download.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass

import aiohttp
import aiohttp.resolver
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from daemon.errors import BadUrl

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MIB = 1024 * 1024
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "lora-distillery/0.1 (portrait fetch)"

# NAT64 prefixes: the well-known one embeds an IPv4 address in its last 32 bits (RFC 6052); the local-use
# one (RFC 8215) only exists inside an operator's own network, so it is never a public destination.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")

# WHATWG URL parsing treats a host whose last label is a number as IPv4 and browsers/libc accept odd forms of
# it (2130706433, 0x7f000001, 0177.0.0.1, 127.1). We accept only the canonical dotted quad.
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)", re.IGNORECASE)

PRIVATE_ADDRESS = "That link points to a private network address, which the distillery does not fetch."


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one download; the daemon builds one from its settings."""

    # Same cap as image.ImageLimits.max_bytes: a portrait needs far less, and Telegram's bot download is 20 MB.
    max_bytes: int = 20 * _MIB
    # A server that cannot accept a TCP/TLS connection in 5 s is down or far too slow for a chat reply.
    connect_timeout: float = 5.0
    # Longest silence between two reads of the body before we give up on the server.
    read_timeout: float = 10.0
    # Deadline for the whole download including redirects, so a server trickling a byte every few seconds
    # (which never trips read_timeout) cannot hold a worker.
    total_timeout: float = 30.0
    # Enough for http->https plus a CDN hop or two; long chains are a sign of abuse.
    max_redirects: int = 3
    # Test-only: switches the private-address filter off so tests can serve from 127.0.0.1. Never set in
    # production settings. Every other rule (scheme, userinfo, numeric hosts, caps, timeouts) still applies.
    allow_private: bool = False


def is_public_address(ip: IPAddress) -> bool:
    """True when ``ip`` is a globally routable unicast address that embeds no private IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:a.b.c.d, NAT64 and 6to4 all end up at an IPv4 host: judge that host, since the kernel or a
        # translator on the path will happily deliver ::ffff:127.0.0.1 to our own loopback.
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64_WELL_KNOWN:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL_USE:
            return False
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
        if ip.is_site_local:
            return False
    # is_global alone is not enough on Python 3.11: it calls multicast and some reserved IPv6 ranges global.
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_reserved
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
    )


class _CheckedResolver(AbstractResolver):
    """Wraps a resolver and keeps only public addresses; aiohttp connects to what this returns."""

    def __init__(self, inner: AbstractResolver, *, check: bool, owns_inner: bool) -> None:
        self._inner = inner
        self._check = check
        self._owns_inner = owns_inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._check:
            return results
        kept = [r for r in results if _is_public_text(r["host"])]
        if not kept:
            log.info("refused %s: it resolves only to non-public addresses", host)
            raise BadUrl(PRIVATE_ADDRESS)
        return kept

    async def close(self) -> None:
        if self._owns_inner:
            await self._inner.close()


def _is_public_text(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # a resolver answer we cannot parse is not one we can vouch for
    # Module-level lookup on purpose: tests substitute is_public_address to simulate a public host on loopback.
    return is_public_address(ip)


def _check_url(url: URL, policy: FetchPolicy) -> None:
    """Apply every rule that can be judged from the URL alone (first request and each redirect)."""
    if url.scheme not in ("http", "https"):
        raise BadUrl("The image link must start with http:// or https://.")
    if url.raw_user or url.raw_password:
        raise BadUrl("The image link must not contain a user name or password.")
    try:
        host = url.host  # yarl decodes IDNA lazily: a malformed xn-- label only fails here
    except ValueError as exc:
        raise BadUrl("That is not a valid web link.") from exc
    if not host:
        raise BadUrl("That image link has no host name.")
    bare = host.rstrip(".")
    if ":" not in bare and _NUMERIC_LABEL.fullmatch(bare.rsplit(".", 1)[-1]):
        try:
            canonical = str(ipaddress.IPv4Address(bare)) == bare
        except ValueError:
            canonical = False
        if not canonical:
            raise BadUrl("That link gives its server as a bare number, which the distillery does not fetch.")
    if policy.allow_private:
        return
    try:
        literal = ipaddress.ip_address(bare)
    except ValueError:
        return  # a host name: _CheckedResolver judges the addresses it resolves to
    # aiohttp skips the resolver for IP literals, so this is the only check they get.
    if not is_public_address(literal):
        raise BadUrl(PRIVATE_ADDRESS)


def _size_text(n: int) -> str:
    if n >= _MIB:
        return f"{n / _MIB:.3g} MB"
    return f"{max(1, n // 1024)} KB"


async def fetch_url(url: str, policy: FetchPolicy, resolver: AbstractResolver | None = None) -> bytes:
    """Download ``url`` under ``policy`` and return the body; every refusal or failure is a :class:`BadUrl`.

    ``resolver`` replaces aiohttp's default DNS resolver (tests pass a stub); its answers are still filtered.
    """
    try:
        current = URL(url.strip())
    except (ValueError, TypeError) as exc:
        raise BadUrl("That is not a valid web link.") from exc
    _check_url(current, policy)

    inner = resolver if resolver is not None else aiohttp.resolver.DefaultResolver()
    checked = _CheckedResolver(inner, check=not policy.allow_private, owns_inner=resolver is None)
    deadline = asyncio.timeout(policy.total_timeout)
    try:
        async with deadline:
            # No DNS cache (each hop resolves and is checked afresh) and no keep-alive (a pooled connection
            # could outlive the check that allowed it); trust_env=False so no proxy from the environment.
            connector = aiohttp.TCPConnector(resolver=checked, use_dns_cache=False, force_close=True)
            timeout = aiohttp.ClientTimeout(
                total=None, connect=policy.connect_timeout, sock_read=policy.read_timeout
            )
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, trust_env=False, auto_decompress=False
            ) as session:
                return await _follow(session, current, policy)
    except aiohttp.ConnectionTimeoutError as exc:
        raise BadUrl(f"The image link did not answer within {policy.connect_timeout:g} seconds.") from exc
    except aiohttp.SocketTimeoutError as exc:
        raise BadUrl(f"The image link stopped sending data for {policy.read_timeout:g} seconds.") from exc
    except TimeoutError as exc:
        if deadline.expired():
            raise BadUrl(
                f"The image link took longer than {policy.total_timeout:g} seconds to send the image."
            ) from exc
        raise BadUrl("The image link did not answer in time.") from exc
    except aiohttp.ClientConnectorDNSError as exc:
        raise BadUrl("The image link did not answer: its server name could not be found.") from exc
    except aiohttp.ClientSSLError as exc:
        raise BadUrl("The image link did not answer over a secure connection that could be verified.") from exc
    except aiohttp.ClientConnectorError as exc:
        raise BadUrl("The image link did not answer: its server refused or dropped the connection.") from exc
    except (aiohttp.ClientError, OSError) as exc:
        # Host only: query strings of signed links carry credentials.
        log.info("fetch from %s failed: %r", current.host, exc)
        raise BadUrl("The image link did not answer properly; the download broke off.") from exc
    finally:
        await checked.close()


async def _follow(session: aiohttp.ClientSession, url: URL, policy: FetchPolicy) -> bytes:
    headers = {"User-Agent": _USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}
    for _hop in range(policy.max_redirects + 1):
        async with session.get(url, allow_redirects=False, headers=headers) as resp:
            if resp.status in _REDIRECTS:
                location = resp.headers.get(aiohttp.hdrs.LOCATION)
                if not location:
                    raise BadUrl("The image link redirected without saying where to.")
                try:
                    url = url.join(URL(location))
                except (ValueError, TypeError) as exc:
                    raise BadUrl("The image link redirected to something that is not a web link.") from exc
                _check_url(url, policy)
                continue
            if not 200 <= resp.status < 300:
                raise BadUrl(f"The image link answered HTTP {resp.status}.")
            return await _read_capped(resp, policy.max_bytes)
    raise BadUrl(f"The image link redirected more than {policy.max_redirects} times.")


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    too_big = f"The image is larger than the {_size_text(max_bytes)} limit."
    encoding = resp.headers.get(aiohttp.hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("", "identity"):
        # We asked for identity; unpacking a compressed answer would let a tiny download inflate past the cap.
        raise BadUrl("The image link sent the image compressed, which the distillery does not accept.")
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise BadUrl(too_big)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise BadUrl(too_big)
    return bytes(body)
