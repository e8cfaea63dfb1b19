"""Unit checks of the operations flags and the log filters (the real-daemon checks are in test_operations)."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import pytest

from daemon import logs
from daemon.metrics import failure_reason
from daemon.settings import load_settings
from tests.records import make_job

SECRET = "s3cr3t-token-value"


@pytest.mark.parametrize("address", ["0.0.0.0:9464", "10.0.0.1:9464", "example.org:9464"])
def test_metrics_listen_only_on_loopback(tmp_path: Path, address: str) -> None:
    with pytest.raises(SystemExit, match="--metrics must be a loopback address"):
        load_settings(["--state-dir", str(tmp_path), "--metrics", address], environ={})


def test_operations_flags_are_off_by_default(tmp_path: Path) -> None:
    settings = load_settings(["--state-dir", str(tmp_path)], environ={})
    assert settings.metrics is None and settings.socket_group is None
    chosen = load_settings(
        ["--state-dir", str(tmp_path), "--metrics", "127.0.0.1:9464", "--socket-group", "bots"], environ={}
    )
    assert chosen.metrics == "127.0.0.1:9464" and chosen.socket_group == "bots"


def capture(secrets: list[str]) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    handler.addFilter(logs.JobFilter())
    handler.addFilter(logs.RedactFilter(secrets))
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_the_token_never_reaches_the_log_not_even_in_a_traceback() -> None:
    logger, stream = capture([SECRET])
    logger.info("header was %s", f"Bearer {SECRET}")
    try:
        raise ValueError(f"bad token {SECRET}")
    except ValueError:
        logger.exception("refused")
    text = stream.getvalue()
    assert SECRET not in text and text.count("[redacted]") == 2


def test_job_id_from_the_request_context_and_from_a_worker_thread() -> None:
    logger, stream = capture([])
    logger.info("no job here")
    token = logs.current_job.set("job-a")
    logger.info("about job a")
    logs.current_job.reset(token)

    def work() -> None:
        # What a worker thread does while it runs a job; other threads keep their own job (or none).
        logs.current_job.set("job-b")
        logger.info("training")

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    first, second, third = stream.getvalue().splitlines()
    assert "job=" not in first
    assert " job=job-a: about job a" in second
    assert " job=job-b: training" in third


def test_failure_reasons_are_a_small_fixed_set() -> None:
    job = make_job("0001", "rifttami")
    for error, reason in [
        ("The distillery stopped 2 times while running this job.", "interrupted"),
        ("Training failed because of an internal error (RuntimeError).", "internal"),
        ("The GPU ran out of memory.", "out_of_memory"),
        ("No face found in the picture.", "pipeline"),
    ]:
        job.error = error
        assert failure_reason(job) == reason


def test_the_socket_folder_is_locked_only_when_it_is_the_daemons_own(tmp_path: Path) -> None:
    from daemon.rpc.server import _prepare_socket

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "someone-elses-file").write_text("x")
    _prepare_socket(shared / "d.sock", -1, tmp_path / "state")
    assert shared.stat().st_mode & 0o777 == 0o755
    own = tmp_path / "run" / "distillery"
    _prepare_socket(own / "d.sock", -1, tmp_path / "state")
    assert own.stat().st_mode & 0o777 == 0o750
