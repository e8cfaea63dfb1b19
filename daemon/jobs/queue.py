"""The order in which queued jobs reach the workers. In memory; the store holds the truth across restarts."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class JobQueue:
    """A FIFO of job ids shared by the gRPC side (push, remove, positions) and the executor (pop)."""

    def __init__(self) -> None:
        self._ids: deque[str] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._listeners: list[Callable[[], None]] = []

    def push(self, job_id: str) -> int:
        """Append a job; return its position (1 is next)."""
        with self._cond:
            self._ids.append(job_id)
            self._cond.notify()
            position = len(self._ids)
        self._tell()
        return position

    def push_front(self, job_id: str) -> None:
        """Put a job first: one whose worker died mid-job runs again before anything that waited less."""
        with self._cond:
            self._ids.appendleft(job_id)
            self._cond.notify()
        self._tell()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the pushing thread) whenever a job is added; an event loop's wake-up."""
        self._listeners.append(callback)

    def _tell(self) -> None:
        for callback in self._listeners:
            callback()

    def remove(self, job_id: str) -> bool:
        """Take a job out of the queue; False when it was not waiting (already running or gone)."""
        with self._cond:
            try:
                self._ids.remove(job_id)
            except ValueError:
                return False
            return True

    def wait(self, timeout: float) -> bool:
        """Block until a job is waiting (True), or timeout or close (False)."""
        with self._cond:
            if not self._ids and not self._closed:
                self._cond.wait(timeout)
            return bool(self._ids) and not self._closed

    def pop_nowait(self) -> str | None:
        """The next job id, or None when nothing waits."""
        with self._cond:
            return self._ids.popleft() if self._ids and not self._closed else None

    def position(self, job_id: str) -> int:
        """1-based position, or 0 when the job is not waiting."""
        with self._cond:
            try:
                return self._ids.index(job_id) + 1
            except ValueError:
                return 0

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self._ids)

    def __len__(self) -> int:
        with self._cond:
            return len(self._ids)

    def close(self) -> None:
        """Wake the worker for good: nothing is handed out from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
