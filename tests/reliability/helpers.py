"""Shared pieces of the reliability tests: counts from the environment, a requester, a store check."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from distillery.v1 import distillery_pb2 as pb

from daemon.jobs.model import JobState
from daemon.store.lmdb_store import Store, StoreConfig

OPERATOR = pb.Requester(platform="cli", user="operator", chat="terminal")
FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def count_from_env(name: str, default: int) -> int:
    """CI runs small counts; a soak run sets e.g. DISTILLERY_KILL_LOOP=60 (see the README, Operations)."""
    return int(os.environ.get(name, default))


def requester(user: str) -> pb.Requester:
    return pb.Requester(platform="cli", user=user, chat="terminal")


def safetensors_header_ok(data: bytes) -> bool:
    """A LoRA file is intact when its JSON header length fits and the tensors end exactly at the file's end."""
    import json

    if len(data) < 8:
        return False
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        return False
    header = json.loads(data[8 : 8 + header_len])
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    return bool(ends) and max(ends) == len(data) - 8 - header_len


def open_store(state_dir: Path) -> Store:
    """The store of a stopped daemon, opened the way the daemon opens it."""
    return Store(StoreConfig(path=state_dir / "store"))
