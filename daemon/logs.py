"""Structured log lines: the job id on every line that concerns a job, and never a secret.

Two logging filters sit on the handler that ``__main__`` installs, so they see the records of every logger:

* ``JobFilter`` adds ``record.job`` (`` job=<id>`` or empty). The id comes from ``current_job``, a context
  variable the service sets while it handles a request about one job (gRPC runs each request in its own task,
  and ``asyncio.to_thread`` copies the context, so the value follows the request and nothing else), or, on the
  worker thread, from the worker's current job.
* ``RedactFilter`` replaces every configured secret (the TCP bearer token) in the formatted message, so a token
  that reaches a log call by accident (an exception text, a repr) is still never written.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar

current_job: ContextVar[str] = ContextVar("distillery_job", default="")

FORMAT = "%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s"
WORKER_THREAD = "distill-worker"

# Set by the server once the worker exists: which job the worker thread is running right now.
_worker_job: Callable[[], str | None] = lambda: None  # noqa: E731
_lock = threading.Lock()


def set_worker_lookup(lookup: Callable[[], str | None]) -> None:
    """Tell the filter how to find the worker's current job (the worker is built after logging starts)."""
    global _worker_job
    with _lock:
        _worker_job = lookup


class JobFilter(logging.Filter):
    """Adds ``record.job``: `` job=<id>`` for lines about a job, empty otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = current_job.get()
        if not job_id and record.threadName == WORKER_THREAD:
            job_id = _worker_job() or ""
        record.job = f" job={job_id}" if job_id else ""
        return True


class RedactFilter(logging.Filter):
    """Replaces secrets in the final message text; the record keeps no reference to the original args."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Very short values would redact ordinary words; settings never accept such a token anyway.
        self._secrets = [secret for secret in secrets if len(secret) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self._secrets:
            message = message.replace(secret, "[redacted]")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "[redacted]")
        record.msg, record.args = message, None
        return True


def configure(level: str, secrets: Iterable[str] = ()) -> None:
    """Install the one stderr handler with both filters; called once by ``__main__``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobFilter())
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
