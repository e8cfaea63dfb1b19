"""The edge of the API: field checks (daemon/rpc/validate.py) and the guard around every call (rpc/guard.py).

The wire tests run the real servicer behind the guard, as the daemon serves it; the fuzz test in test_fuzz.py
covers the same ground with generated requests against the daemon process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from distillery.v1 import distillery_pb2 as pb
from distillery.v1 import distillery_pb2_grpc as pb_grpc
from google.protobuf.message import Message

from daemon.errors import BadInput
from daemon.rpc.guard import USER_MESSAGE_KEY
from daemon.rpc.validate import MAX_REPEATED, check_request
from tests.rpc.test_service_rpc import Api, collect, start_api

USER = pb.Requester(platform="telegram", user="7", chat="7")


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    running, stop = await start_api(tmp_path)
    yield running
    await stop()  # type: ignore[misc]


@pytest.fixture
async def channel(api: Api) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"unix:{api.socket}") as opened:
        yield opened


# -- the checks themselves ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_message", "says"),
    [
        (pb.GetJobRequest(job_id="", requester=USER), "The job id is missing."),
        (pb.GetJobRequest(job_id="a/b", requester=USER), "That is not a valid job id"),
        (pb.GetJobRequest(job_id="a" * 65, requester=USER), "longer than 64 characters"),
        (pb.GetLoraRequest(name="rift\x00tami", requester=USER), "control characters"),
        (pb.GetImageRequest(name="rifttami.jpg", requester=USER), "That is not a valid image name"),
        (pb.WatchRequest(job_id="0" * 24, requester=pb.Requester(platform="Tele gram")), "not a valid platform"),
        (pb.UpdateLoraRequest(name="rifttami", description="x" * 501, requester=USER), "longer than 500"),
        (pb.UpdateLoraRequest(name="rifttami", description="a\x07b", requester=USER), "control characters"),
        (pb.SetClientStateRequest(job_id="0" * 24, client_state=b"z" * 4097), "limited to 4096 bytes"),
        (pb.DistillSpec(image_name=""), "The image name is missing."),
        (pb.DistillSpec(url="http://a b"), "not a valid link"),
        (pb.DistillSpec(upload=True, subject_class=7), "Subject class 7 is not one this daemon knows."),
        (pb.GenerateSpec(prompt="p", cfg=math.nan), "not NaN or infinity"),
        (pb.GenerateSpec(prompt="p", adapt_weight=math.inf), "not NaN or infinity"),
        (pb.GenerateSpec(loras=[pb.LoraWeight(name="")]), "The LoRA name is missing."),
        (pb.GenerateSpec(loras=[pb.LoraWeight(name="a")] * (MAX_REPEATED + 1)), f"at most {MAX_REPEATED} loras"),
        (pb.GenerateSpec(prompt="p" * 1001), "The prompt is longer than 1000 characters."),
    ],
)
def test_a_bad_field_is_refused_with_a_sentence_naming_it(request_message: Message, says: str) -> None:
    with pytest.raises(BadInput, match=None) as refused:
        check_request(request_message)
    assert says in str(refused.value)
    assert "\x00" not in str(refused.value) and "x" * 50 not in str(refused.value)  # the value is never echoed


@pytest.mark.parametrize(
    "request_message",
    [
        pb.GetJobRequest(job_id="018f2a7c9b1d3e4f5a6b7c8d", requester=USER),
        pb.GetImageRequest(name="018f2a7c9b1d3e4f5a6b7c8d-2.png", requester=USER),
        pb.UpdateLoraRequest(name="rifttami", description="Line one\nline two\twith a tab", requester=USER),
        pb.DistillSpec(url="https://example.org/me.jpg", subject_class=pb.SUBJECT_CLASS_WOMAN, requester=USER),
        pb.GenerateSpec(prompt="名前 (rifttami:1.2) 😀", loras=[pb.LoraWeight(name="rifttami", weight=0.8)]),
        pb.GetUserStatsRequest(requester=pb.Requester(platform="slack", workspace="T01", user="U01")),
        pb.ListJobsRequest(requester=pb.Requester(platform="telegram"), whole_platform=True),
        pb.GetStatusRequest(),
    ],
)
def test_requests_the_frontends_send_pass(request_message: Message) -> None:
    check_request(request_message)


# -- on the wire, behind the guard ----------------------------------------------------------------------------

EMPTY_IDENTIFIER_CALLS = [
    ("GetImage", pb.GetImageRequest(name="", requester=USER), True),
    ("GetImageInfo", pb.GetImageRequest(name="", requester=USER), False),
    ("GetLora", pb.GetLoraRequest(name="", requester=USER), False),
    ("DownloadLora", pb.GetLoraRequest(name="", requester=USER), True),
    ("GetJob", pb.GetJobRequest(job_id="", requester=USER), False),
    ("CancelJob", pb.CancelJobRequest(job_id="", requester=USER), False),
    ("Watch", pb.WatchRequest(job_id="", requester=USER), True),
    ("DeleteLora", pb.DeleteLoraRequest(name="", requester=USER), False),
    ("UpdateLora", pb.UpdateLoraRequest(name="", requester=USER, public=True), False),
    ("SetClientState", pb.SetClientStateRequest(job_id="", requester=USER, client_state=b"x"), False),
]


async def _status(
    channel: grpc.aio.Channel, method: str, request: Message, streaming: bool
) -> grpc.aio.AioRpcError:
    path = f"/distillery.v1.Distillery/{method}"
    serialize = type(request).SerializeToString
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        if streaming:
            async for _ in channel.unary_stream(path, serialize, lambda data: data)(request):
                pass
        else:
            await channel.unary_unary(path, serialize, lambda data: data)(request)
    return failed.value


@pytest.mark.parametrize(("method", "request_message", "streaming"), EMPTY_IDENTIFIER_CALLS, ids=lambda x: str(x))
async def test_an_empty_identifier_is_invalid_argument_with_no_internal_text(
    api: Api, channel: grpc.aio.Channel, method: str, request_message: Message, streaming: bool
) -> None:
    error = await _status(channel, method, request_message, streaming)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").endswith("is missing.")
    assert "lmdb" not in (error.details() or "").lower() and "Error" not in (error.details() or "")
    assert (USER_MESSAGE_KEY, "INVALID_ARGUMENT") in tuple(error.trailing_metadata() or ())


async def test_an_unknown_class_stores_nothing(api: Api, channel: grpc.aio.Channel, portrait_png: bytes) -> None:
    stub = pb_grpc.DistilleryStub(channel)
    spec = pb.DistillSpec(upload=True, subject_class=42, requester=USER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Submit(iter([pb.SubmitRequest(spec=spec), pb.SubmitRequest(chunk=portrait_png)]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert api.store.jobs() == [] and api.store.loras() == []


async def test_chunks_after_a_spec_that_names_its_source_are_refused(api: Api, channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.DistilleryStub(channel)
    spec = pb.DistillSpec(image_name="rifttami.png", requester=USER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Submit(iter([pb.SubmitRequest(spec=spec), pb.SubmitRequest(chunk=b"png")]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Only an upload is followed by image chunks" in (refused.value.details() or "")


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x0a\x02\xc3\x28"], ids=["not protobuf", "invalid UTF-8"])
async def test_bytes_that_do_not_decode_are_invalid_argument(channel: grpc.aio.Channel, raw: bytes) -> None:
    call = channel.unary_unary("/distillery.v1.Distillery/GetJob", lambda data: data, lambda data: data)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(raw)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be read" in (refused.value.details() or "")


async def test_an_unforeseen_fault_is_internal_with_an_error_id_and_the_traceback_only_in_the_log(
    api: Api, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(requester: object) -> object:
        raise RuntimeError("mdb_get: MDB_BAD_VALSIZE in /var/lib/distillery/store")

    monkeypatch.setattr(api.core, "user_stats", broken)
    with caplog.at_level(logging.ERROR, logger="daemon.rpc.guard"), pytest.raises(grpc.aio.AioRpcError) as failed:
        await pb_grpc.DistilleryStub(channel).GetUserStats(pb.GetUserStatsRequest(requester=USER))
    details = failed.value.details() or ""
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "MDB" not in details and "RuntimeError" not in details and "/var" not in details
    error_id = details.rsplit(" ", 1)[-1].rstrip(".")
    assert len(error_id) == 8 and all(ch in "0123456789abcdef" for ch in error_id)
    [record] = [record for record in caplog.records if error_id in record.getMessage()]
    assert record.exc_info is not None and "MDB_BAD_VALSIZE" in str(record.exc_info[1])
    assert "GetUserStats" in record.getMessage()


async def test_watch_after_the_last_possible_sequence_replays_nothing(api: Api, portrait_png: bytes) -> None:
    reply = await api.client.submit(api.client.spec(USER, upload=True), portrait_png)
    events = await collect(api.client.watch(reply.job.id, USER))
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    assert await collect(api.client.watch(reply.job.id, USER, after_seq=2**64 - 1)) == []
