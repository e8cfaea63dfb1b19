"""Hot backup and restore of the daemon's LMDB store, usable while the daemon runs.

``backup`` asks the store (the only owner of LMDB) for a compacted copy of one consistent snapshot, taken from
this (separate) process: a read transaction sees the last committed state and the daemon keeps writing meanwhile.
``restore`` puts such a copy into a fresh state folder; the daemon started on it re-queues whatever the copy
caught queued or running, exactly as after a crash.

Layout of a backup folder: ``data.mdb`` (the compacted environment) and ``backup.json`` (when, from where, and
how many jobs and LoRAs it holds, so an operator can tell backups apart without opening them).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.store.lmdb_store import Store, StoreConfig

MANIFEST = "backup.json"


class BackupError(Exception):
    """A backup or restore that cannot be done; the message is for the operator."""


@dataclass(frozen=True)
class Summary:
    jobs: int
    loras: int
    bytes: int


def store_path(state_dir: Path) -> Path:
    """Where the daemon keeps its store inside a state folder (see settings.load_settings)."""
    return state_dir / "store"


def backup(state_dir: Path, target: Path) -> Summary:
    """Write a consistent, compacted copy of ``state_dir``'s store into the new or empty folder ``target``."""
    source = store_path(state_dir)
    if not (source / "data.mdb").is_file():
        raise BackupError(f"{source} holds no distillery store")
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; back up into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    Store.copy_live(source, target)
    summary = _summarise(target)
    manifest = {"created_at": time.time(), "source": str(source), **summary.__dict__}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def restore(backup_dir: Path, state_dir: Path) -> Summary:
    """Put a backup into a state folder that has no store yet; refuses to overwrite a live one."""
    data = backup_dir / "data.mdb"
    if not data.is_file():
        raise BackupError(f"{backup_dir} is not a distillery backup (no data.mdb)")
    destination = store_path(state_dir)
    if (destination / "data.mdb").exists():
        raise BackupError(f"{destination} already holds a store; restore into a fresh state folder")
    destination.mkdir(parents=True, exist_ok=True)
    # Copy under a temporary name and rename, so a crash mid-copy never leaves a half store in place.
    partial = destination / "data.mdb.partial"
    shutil.copyfile(data, partial)
    partial.replace(destination / "data.mdb")
    return _summarise(destination)


def _summarise(path: Path) -> Summary:
    """Open a copy the way the daemon would; a damaged copy fails here rather than at the next start."""
    store = Store(StoreConfig(path=path))
    try:
        return Summary(jobs=len(store.jobs()), loras=len(store.loras()), bytes=store.stats()["used_bytes"])
    finally:
        store.close()
