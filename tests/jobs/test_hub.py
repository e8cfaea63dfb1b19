"""The event hub wakes watchers from any thread and keeps nothing about a job once its final event is out."""

from __future__ import annotations

import asyncio
import threading

from daemon.jobs.hub import EventHub


async def test_a_publish_from_another_thread_wakes_the_watcher() -> None:
    hub = EventHub(asyncio.get_running_loop())
    watcher = asyncio.create_task(hub.wait_beyond("job", 1, timeout=30))
    await asyncio.sleep(0)
    threading.Thread(target=hub.publish, args=("job", 2)).start()
    await asyncio.wait_for(watcher, 5)
    assert len(hub) == 1
    # A newer event is already known: no waiting at all.
    await asyncio.wait_for(hub.wait_beyond("job", 1, timeout=30), 0.5)


async def test_the_final_event_wakes_everyone_and_forgets_the_job() -> None:
    hub = EventHub(asyncio.get_running_loop())
    hub.publish("job", 3)
    watchers = [asyncio.create_task(hub.wait_beyond("job", 3, timeout=30)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(hub) == 1
    hub.publish("job", 4, final=True)
    await asyncio.wait_for(asyncio.gather(*watchers), 5)
    assert len(hub) == 0


async def test_a_watcher_that_times_out_leaves_nothing_behind() -> None:
    hub = EventHub(asyncio.get_running_loop())
    await hub.wait_beyond("quiet", 0, timeout=0.01)
    assert len(hub) == 0
