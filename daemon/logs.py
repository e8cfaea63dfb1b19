"""Structured log lines: the job id on every line that concerns a job, and never a secret.

Two logging filters sit on the handler that ``__main__`` installs, so they see the records of every logger:

* ``JobFilter`` adds ``record.job`` (`` job=<id>`` or empty). The id comes from ``current_job``, a context
  variable set by whoever works on one job: the service while it handles a request about it (gRPC runs each
  request in its own task, and ``asyncio.to_thread`` copies the context, so the value follows the request and
  nothing else), the local worker thread while it runs the job, and the Ray executor's task for each job it
  follows, however many run at once.
* ``RedactFilter`` replaces every configured secret (the TCP bearer token) in the formatted message, so a token
  that reaches a log call by accident (an exception text, a repr) is still never written.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar

current_job: ContextVar[str] = ContextVar("distillery_job", default="")

FORMAT = "%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s"


class JobFilter(logging.Filter):
    """Adds ``record.job``: `` job=<id>`` for lines about a job, empty otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = current_job.get()
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
