"""Item 6: a full LMDB map answers RESOURCE_EXHAUSTED and the daemon goes on; the map grows while it may;
readers left by a killed process are cleared when the store opens."""

from __future__ import annotations

import functools
import logging
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from daemon.errors import Exhausted
from daemon.store.lmdb_store import Store, StoreConfig
from frontends.client import DaemonError
from tests.reliability.helpers import OPERATOR
from tests.rpc.test_service_rpc import start_api


async def test_a_full_store_refuses_the_write_and_the_daemon_stays_up(
    tmp_path: Path, portrait_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny map that may grow to 8 MiB: the first upload grows it, filling it answers RESOURCE_EXHAUSTED.
    small = functools.partial(StoreConfig, map_size=256 * 1024, max_map_size=8 << 20)
    monkeypatch.setattr("daemon.settings.StoreConfig", small)
    api, stop = await start_api(tmp_path)
    try:
        first = await api.client.submit(api.client.spec(OPERATOR, upload=True), portrait_png)
        assert api.store.stats()["map_size"] > 256 * 1024
        with pytest.raises(Exhausted):
            for index in range(64):
                api.store.put_reg_set(f"filler-{index}", bytes([index]) * (512 * 1024))
        with pytest.raises(DaemonError) as full:
            await api.client.submit(api.client.spec(OPERATOR, upload=True, no_flip=True), portrait_png)
        assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Still serving: reads work and the first job is there.
        assert (await api.client.get_job(first.job.id, OPERATOR)).id == first.job.id
        assert (await api.client.status()).ready
    finally:
        await stop()  # type: ignore[misc]


READER = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, max_dbs=16, lock=True)
txn = env.begin() if sys.argv[2] == "read" else None
print("open", flush=True)
sys.stdin.read()
"""


def open_in_child(path: Path, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "open"
    return child


def test_readers_of_a_killed_process_are_cleared_at_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store"
    Store(StoreConfig(path=path)).close()
    # The first process to open an environment resets the reader table anyway; the stale slot matters when
    # another process keeps it open (a backup running while the daemon restarts), so one holds it here.
    holder = open_in_child(path, "hold")
    reader = open_in_child(path, "read")
    reader.send_signal(signal.SIGKILL)
    reader.wait(10)
    try:
        with caplog.at_level(logging.INFO, logger="daemon.store.lmdb_store"):
            store = Store(StoreConfig(path=path))
        store.close()
    finally:
        holder.kill()
        holder.wait(10)
    assert "cleared 1 stale LMDB readers" in caplog.text
