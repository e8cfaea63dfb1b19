"""Items 3 and 4, only what tests/rpc and tests/pipeline/test_fetch.py did not already cover.

* Item 3: the same idempotency key delivered several times *at once* (a chat redelivery racing the original)
  still makes exactly one job. (Sequential redelivery and a clashing request: tests/rpc/test_service_rpc.py.)
* Item 4: a redirect to each address of the issue's list is refused before anything is dialled.
  (Direct addresses, the address filter itself, endless/huge/trickling bodies: tests/pipeline/test_fetch.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon.errors import BadUrl
from daemon.pipeline.fetch import FetchPolicy, fetch_url
from tests.pipeline.test_fetch import (  # noqa: F401  (pytest finds fixtures by module name)
    Server,
    StubResolver,
    connects,
    loopback_is_public,
    server,
)
from tests.reliability.helpers import OPERATOR
from tests.rpc.test_service_rpc import Api, start_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path)
    yield running
    await stop()  # type: ignore[misc]


async def test_a_redelivery_racing_the_original_makes_one_job(api: Api, portrait_png: bytes) -> None:
    spec = api.client.spec(OPERATOR, upload=True, idempotency_key="tg:7:99")
    replies = await asyncio.gather(*(api.client.submit(spec, portrait_png) for _ in range(5)))
    assert len({reply.job.id for reply in replies}) == 1
    assert sum(not reply.duplicate for reply in replies) == 1
    assert len(api.store.jobs()) == 1


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/img",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1:{port}/img",
        "http://[::1]:{port}/img",
        "http://[::ffff:127.0.0.2]:{port}/img",
        "http://[64:ff9b::7f00:2]:{port}/img",
        "http://0.0.0.0:{port}/img",
        "http://2130706433:{port}/img",
    ],
)
async def test_a_redirect_to_any_listed_address_is_refused(
    server: Server,  # noqa: F811
    connects: list[str],  # noqa: F811
    loopback_is_public: None,  # noqa: F811
    target: str,
) -> None:
    # The stand-in "internet" is 127.0.0.1 (loopback_is_public), so the loopback targets use 127.0.0.2.
    resolver = StubResolver({"public.test": ["127.0.0.1"]})
    start = f"http://public.test:{server.port}/to?u=" + target.format(port=server.port)
    with pytest.raises(BadUrl):
        await fetch_url(start, FetchPolicy(), resolver)
    assert server.hits["/to"] == 1 and server.hits["/img"] == 0
    assert connects == ["127.0.0.1"]  # only the public first hop was ever dialled
