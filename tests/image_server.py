"""A loopback web server for tests that fetch pictures by link (the daemon's SSRF-safe fetch allows loopback
only when a test says so)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serving(files: Mapping[str, tuple[bytes, str]]) -> AsyncIterator[str]:
    """Serve ``files`` (name -> body and content type) at ``/<name>`` on 127.0.0.1, port 0, 404 for any other
    name; yields the base URL, without a trailing slash."""

    async def answer(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404, text="no such file")
        body, content_type = found
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/{name}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
