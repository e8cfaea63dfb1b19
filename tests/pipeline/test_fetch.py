"""fetch_url against a real aiohttp server on 127.0.0.1:0, and the address filter with a stub resolver."""

from __future__ import annotations

import asyncio
import collections
import gzip
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from daemon.errors import BadUrl
from daemon.pipeline import fetch
from daemon.pipeline.fetch import PRIVATE_ADDRESS, FetchPolicy, fetch_url, is_public_address

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # the body only has to round-trip byte for byte
LOOPBACK_OK = FetchPolicy(allow_private=True)


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every outgoing TCP connect; refuse (and later fail the test on) anything off loopback."""
    attempts: list[str] = []
    original = asyncio.selector_events.BaseSelectorEventLoop.sock_connect

    async def guarded(self: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[str, int]) -> None:
        attempts.append(address[0])
        if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test guard: stray connection to {address[0]}")
        await original(self, sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", guarded)
    yield attempts
    assert all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in attempts), attempts


@dataclass
class Server:
    port: int
    hits: collections.Counter[str]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


async def _stream_forever(request: web.Request, chunk: bytes, pause: float) -> web.StreamResponse:
    resp = web.StreamResponse()
    if request.path == "/huge":
        resp.content_length = 10**12
    await resp.prepare(request)
    deadline = time.monotonic() + 5  # bounded so a broken client test cannot wedge the server
    while time.monotonic() < deadline:
        await resp.write(chunk)
        await asyncio.sleep(pause)
    return resp


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    hits: collections.Counter[str] = collections.Counter()

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        hits[request.path] += 1
        return await handler(request)

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=IMAGE, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such picture")

    async def hop(request: web.Request) -> web.Response:
        # /r/N answers with N more redirects before /img.
        left = int(request.match_info["left"])
        raise web.HTTPFound("/img" if left <= 1 else f"/r/{left - 1}")

    async def to(request: web.Request) -> web.Response:
        # Redirect target given by the test, e.g. /to?u=http://private.test:PORT/img
        raise web.HTTPFound(request.query["u"])

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(IMAGE), headers={"Content-Encoding": "gzip"})

    async def huge(request: web.Request) -> web.StreamResponse:
        return await _stream_forever(request, b"x" * 10, 0.05)

    async def endless(request: web.Request) -> web.StreamResponse:
        return await _stream_forever(request, b"x" * 65536, 0)

    async def trickle(request: web.Request) -> web.StreamResponse:
        return await _stream_forever(request, b"x", 0.05)

    async def stall(request: web.Request) -> web.StreamResponse:
        return await _stream_forever(request, b"x", 10)

    app = web.Application(middlewares=[count])
    app.router.add_get("/img", image)
    app.router.add_get("/missing", missing)
    app.router.add_get("/r/{left}", hop)
    app.router.add_get("/to", to)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/huge", huge)
    app.router.add_get("/endless", endless)
    app.router.add_get("/trickle", trickle)
    app.router.add_get("/stall", stall)
    # Endless handlers are cut off at teardown instead of holding it for the default 60 s.
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(port=port, hits=hits)
    finally:
        await runner.cleanup()


class StubResolver(AbstractResolver):
    """Answers every name from a table (or with one address), and records the names asked."""

    def __init__(self, answers: dict[str, list[str]] | str) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        addresses = [self.answers] if isinstance(self.answers, str) else self.answers[host]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass


class FailingResolver(StubResolver):
    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend 127.0.0.1 is a public host, so a loopback server can stand in for the internet."""
    real = fetch.is_public_address

    def pretend(ip: fetch.IPAddress) -> bool:
        return ip == ipaddress.IPv4Address("127.0.0.1") or real(ip)

    monkeypatch.setattr(fetch, "is_public_address", pretend)


# --- against the loopback server, address filter off -------------------------------------------------------


async def test_serves_the_image(server: Server) -> None:
    assert await fetch_url(server.url("/img"), LOOPBACK_OK) == IMAGE
    assert server.hits["/img"] == 1


async def test_http_error_is_named(server: Server) -> None:
    with pytest.raises(BadUrl, match=r"^The image link answered HTTP 404\.$"):
        await fetch_url(server.url("/missing"), LOOPBACK_OK)


async def test_follows_redirects_up_to_the_limit(server: Server) -> None:
    assert await fetch_url(server.url("/r/3"), FetchPolicy(allow_private=True, max_redirects=3)) == IMAGE
    assert server.hits["/img"] == 1
    assert [server.hits[f"/r/{n}"] for n in (3, 2, 1)] == [1, 1, 1]


async def test_too_many_redirects(server: Server) -> None:
    with pytest.raises(BadUrl, match="redirected more than 3 times"):
        await fetch_url(server.url("/r/4"), FetchPolicy(allow_private=True, max_redirects=3))
    assert server.hits["/img"] == 0


async def test_redirect_is_rechecked(server: Server) -> None:
    with pytest.raises(BadUrl, match="must start with http"):
        await fetch_url(server.url("/to?u=file:///etc/passwd"), LOOPBACK_OK)
    with pytest.raises(BadUrl, match="bare number"):
        await fetch_url(server.url(f"/to?u=http://2130706433:{server.port}/img"), LOOPBACK_OK)
    assert server.hits["/img"] == 0


async def test_ignores_proxy_settings_in_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a proxy address with nothing listening: using it would fail the fetch
        s.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert await fetch_url(server.url("/img"), LOOPBACK_OK) == IMAGE


async def test_compressed_answer_refused(server: Server) -> None:
    # Unpacking would let a small download inflate far past max_bytes.
    with pytest.raises(BadUrl, match="compressed"):
        await fetch_url(server.url("/gzip"), LOOPBACK_OK)


async def test_huge_content_length_refused_before_reading(server: Server) -> None:
    started = time.monotonic()
    with pytest.raises(BadUrl, match=r"larger than the 20 MB limit"):
        await fetch_url(server.url("/huge"), LOOPBACK_OK)
    assert time.monotonic() - started < 1


async def test_endless_body_stops_at_the_cap(server: Server) -> None:
    with pytest.raises(BadUrl, match=r"larger than the 256 KB limit"):
        await fetch_url(server.url("/endless"), FetchPolicy(allow_private=True, max_bytes=256 * 1024))


async def test_trickling_server_hits_the_deadline(server: Server) -> None:
    # Every read gets a byte well within read_timeout; only the overall deadline can stop this.
    policy = FetchPolicy(allow_private=True, connect_timeout=1, read_timeout=1, total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BadUrl, match=r"took longer than 0\.5 seconds"):
        await fetch_url(server.url("/trickle"), policy)
    assert time.monotonic() - started < 1.5


async def test_stalled_server_hits_the_read_timeout(server: Server) -> None:
    policy = FetchPolicy(allow_private=True, read_timeout=0.3, total_timeout=5)
    started = time.monotonic()
    with pytest.raises(BadUrl, match=r"stopped sending data for 0\.3 seconds"):
        await fetch_url(server.url("/stall"), policy)
    assert time.monotonic() - started < 1.5


async def test_closed_port_did_not_answer() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BadUrl, match=r"^The image link did not answer"):
        await fetch_url(f"http://127.0.0.1:{port}/img", LOOPBACK_OK)


async def test_unknown_host_did_not_answer() -> None:
    with pytest.raises(BadUrl, match="server name could not be found"):
        await fetch_url("http://nowhere.test/img", FetchPolicy(), FailingResolver("0.0.0.0"))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ftp://127.0.0.1:{port}/img", "must start with http"),
        ("file:///etc/passwd", "must start with http"),
        ("javascript:alert(1)", "must start with http"),
        ("127.0.0.1:{port}/img", "must start with http"),
        ("http://user:secret@127.0.0.1:{port}/img", "user name or password"),
        ("http://user@127.0.0.1:{port}/img", "user name or password"),
        ("http://:secret@127.0.0.1:{port}/img", "user name or password"),
        ("http://2130706433:{port}/img", "bare number"),
        ("http://0x7f000001:{port}/img", "bare number"),
        ("http://017700000001:{port}/img", "bare number"),
        ("http://0177.0.0.1:{port}/img", "bare number"),
        ("http://127.1:{port}/img", "bare number"),
        ("http://1.2.3.4.5:{port}/img", "bare number"),
        ("http:///img", "no host name"),
        ("http://xn--/img", "not a valid web link"),
        ("http://127.0.0.1:99999/img", "not a valid web link"),
        ("http://[::1/img", "not a valid web link"),
    ],
)
async def test_url_rules_hold_even_with_private_allowed(
    server: Server, connects: list[str], template: str, message: str
) -> None:
    with pytest.raises(BadUrl, match=message):
        await fetch_url(template.format(port=server.port), LOOPBACK_OK)
    assert sum(server.hits.values()) == 0
    assert connects == []


# --- the address filter (allow_private=False) ---------------------------------------------------------------

BLOCKED = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::808:808",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "2001:db8::1",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", BLOCKED)
async def test_resolved_private_address_refused_before_connecting(
    server: Server, connects: list[str], address: str
) -> None:
    resolver = StubResolver(address)
    with pytest.raises(BadUrl) as caught:
        await fetch_url(f"http://photos.example:{server.port}/img", FetchPolicy(), resolver)
    assert str(caught.value) == PRIVATE_ADDRESS
    assert resolver.asked == ["photos.example"]  # refused by the resolver filter, not by a URL rule
    assert connects == []
    assert sum(server.hits.values()) == 0


@pytest.mark.parametrize("address", BLOCKED)
async def test_literal_private_address_refused_before_connecting(
    server: Server, connects: list[str], address: str
) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(BadUrl) as caught:
        await fetch_url(f"http://{host}:{server.port}/img", FetchPolicy())
    assert str(caught.value) == PRIVATE_ADDRESS
    assert connects == []
    assert sum(server.hits.values()) == 0


async def test_localhost_name_refused(server: Server, connects: list[str]) -> None:
    # The real default resolver: "localhost" comes back as loopback and is filtered out.
    with pytest.raises(BadUrl) as caught:
        await fetch_url(f"http://localhost:{server.port}/img", FetchPolicy())
    assert str(caught.value) == PRIVATE_ADDRESS
    assert connects == []


async def test_connects_to_the_checked_address(
    server: Server, connects: list[str], loopback_is_public: None
) -> None:
    # A public and a private answer: the private one is dropped, only the checked one is dialled.
    resolver = StubResolver({"public.test": ["10.1.2.3", "127.0.0.1"]})
    assert await fetch_url(f"http://public.test:{server.port}/img", FetchPolicy(), resolver) == IMAGE
    assert connects == ["127.0.0.1"]


@pytest.mark.parametrize("target", ["http://private.test:{port}/img", "http://10.0.0.1:{port}/img"])
async def test_redirect_to_private_address_refused(
    server: Server, connects: list[str], loopback_is_public: None, target: str
) -> None:
    resolver = StubResolver({"public.test": ["127.0.0.1"], "private.test": ["192.168.0.10"]})
    start = f"http://public.test:{server.port}/to?u=" + target.format(port=server.port)
    with pytest.raises(BadUrl) as caught:
        await fetch_url(start, FetchPolicy(), resolver)
    assert str(caught.value) == PRIVATE_ADDRESS
    assert server.hits["/to"] == 1
    assert server.hits["/img"] == 0
    assert connects == ["127.0.0.1"]  # only the first hop was ever dialled
