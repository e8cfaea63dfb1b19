"""The gRPC servicer: protobuf in, a call into daemon.service, protobuf out; DistilleryError -> status code.

Requests reach it checked (rpc/guard.py validates every field first and turns anything unforeseen into INTERNAL
with an error id). Store reads run in threads so a slow disk never stalls the event loop that serves every
other call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from distillery.v1 import distillery_pb2 as pb
from distillery.v1 import distillery_pb2_grpc as pb_grpc

from daemon.errors import BadImage, BadInput, DistilleryError, NotFound
from daemon.jobs.model import Event, JobKind, JobState, Requester
from daemon.rpc import convert
from daemon.service import Distillery, Submitted

log = logging.getLogger(__name__)

T = TypeVar("T")
# Files go out in 1 MiB messages: far below gRPC's 4 MiB default limit on the receiving side.
CHUNK = 1024 * 1024


# Messages an import may still send after it was refused; more than any valid import has.
DRAIN_LIMIT = 1000


class DistilleryServicer(pb_grpc.DistilleryServicer):  # type: ignore[misc]
    def __init__(self, core: Distillery) -> None:
        self._core = core

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        """A store-bound call in a thread; its DistilleryError reaches the guard, which answers it."""
        return await asyncio.to_thread(fn, *args)

    # -- submit and follow ----------------------------------------------------------------------------------

    async def _submit(self, requests: AsyncIterator[pb.SubmitRequest]) -> Submitted:
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "spec":
            raise BadInput("The first message of a submission must be its spec.")
        spec = first.spec
        upload: bytes | None = None
        if spec.WhichOneof("source") == "upload":
            upload = await self._read_upload(requests)
        elif await anext(requests, None) is not None:
            raise BadInput("Only an upload is followed by image chunks; this spec names its source.")
        return await self._core.submit(convert.spec_from_pb(spec, upload))

    async def _read_upload(self, requests: AsyncIterator[pb.SubmitRequest]) -> bytes:
        limit = self._core.settings.image.max_bytes
        parts: list[bytes] = []
        size = 0
        async for request in requests:
            if request.WhichOneof("part") != "chunk":
                raise BadInput("Only image chunks may follow the spec.")
            size += len(request.chunk)
            if size > limit:
                raise BadImage(f"The image is larger than {limit // (1024 * 1024)} MB.")
            parts.append(request.chunk)
        if not parts:
            raise BadImage("The upload was empty.")
        return b"".join(parts)

    async def Submit(
        self, request_iterator: AsyncIterator[pb.SubmitRequest], context: grpc.aio.ServicerContext[object, object]
    ) -> pb.SubmitReply:
        submitted = await self._submit(request_iterator)
        return pb.SubmitReply(
            job=convert.job_to_pb(submitted.job), queue_position=submitted.position, duplicate=submitted.duplicate
        )

    async def Distill(
        self, request_iterator: AsyncIterator[pb.SubmitRequest], context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.JobEvent]:
        submitted = await self._submit(request_iterator)
        async for event in self._follow(submitted.job.id, 0, submitted.job.owner):
            yield event

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.JobEvent]:
        requester = convert.requester_from_pb(request.requester)
        async for event in self._follow(request.job_id, request.after_seq, requester):
            yield event

    async def _follow(self, job_id: str, after_seq: int, requester: Requester) -> AsyncIterator[pb.JobEvent]:
        async for event in self._core.watch(job_id, after_seq, requester):
            yield await asyncio.to_thread(self._event_to_pb, event)

    def _event_to_pb(self, event: Event) -> pb.JobEvent:
        if event.kind != "finished":
            return convert.event_to_pb(event)
        store = self._core.store
        job = store.get_job(event.job_id)
        lora, images = None, []
        # What the job made may have been deleted since (a LoRA by its owner): the event still replays.
        if job.state == JobState.SUCCEEDED and job.kind == JobKind.DISTILL:
            try:
                lora = store.get_lora(job.lora_name)
            except NotFound:
                lora = None
        if job.state == JobState.SUCCEEDED:
            for name in job.outputs:
                try:
                    meta = store.get_image_meta(name)
                except NotFound:
                    continue
                images.append(convert.image_info_to_pb(meta, *meta.pixels))
        return convert.event_to_pb(event, job, lora, images)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.JobEvent]:
        requester = convert.requester_from_pb(request.requester)
        submitted = await self._core.generate(
            convert.serve_request_from_pb(request.spec), requester, request.idempotency_key
        )
        async for event in self._follow(submitted.job.id, 0, submitted.job.owner):
            yield event

    # -- jobs -----------------------------------------------------------------------------------------------

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[object, object]) -> pb.Job:
        requester = convert.requester_from_pb(request.requester)
        return convert.job_to_pb(await self._run(self._core.visible_job, request.job_id, requester))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListJobsReply:
        requester = convert.requester_from_pb(request.requester)
        jobs = await self._run(
            self._core.list_jobs, requester, request.active_only, request.whole_platform, request.limit
        )
        return pb.ListJobsReply(jobs=[convert.job_to_pb(job) for job in jobs])

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Job:
        requester = convert.requester_from_pb(request.requester)
        return convert.job_to_pb(await self._run(self._core.cancel, request.job_id, requester))

    async def SetClientState(
        self, request: pb.SetClientStateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Job:
        requester = convert.requester_from_pb(request.requester)
        job = await self._run(self._core.set_client_state, request.job_id, requester, request.client_state)
        return convert.job_to_pb(job)

    # -- LoRAs and images -----------------------------------------------------------------------------------

    async def GetLora(
        self, request: pb.GetLoraRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Lora:
        requester = convert.requester_from_pb(request.requester)
        return convert.lora_to_pb(await self._run(self._core.get_lora, request.name, requester))

    async def ListLoras(
        self, request: pb.ListLorasRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListLorasReply:
        requester = convert.requester_from_pb(request.requester)
        loras = await self._run(self._core.list_loras, requester, request.include_public)
        return pb.ListLorasReply(loras=[convert.lora_to_pb(lora) for lora in loras])

    async def DownloadLora(
        self, request: pb.GetLoraRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.FileChunk]:
        requester = convert.requester_from_pb(request.requester)
        data = await self._run(self._core.lora_file, request.name, requester)
        for chunk in _chunks(f"{request.name}.safetensors", data):
            yield chunk

    async def GetImage(
        self, request: pb.GetImageRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.FileChunk]:
        requester = convert.requester_from_pb(request.requester)
        data = await self._run(self._core.image, request.name, requester)
        for chunk in _chunks(request.name, data):
            yield chunk

    async def ImportRegularization(
        self,
        request_iterator: AsyncIterator[pb.RegularizationUpload],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[pb.JobEvent]:
        limit = self._core.settings.image.max_bytes

        async def photos() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") != "photo":
                    raise BadInput("Only photos may follow the spec.")
                if len(message.photo) > limit:
                    raise BadImage(f"A photo is larger than {limit // (1024 * 1024)} MB.")
                yield message.photo

        try:
            first = await anext(request_iterator, None)
            if first is None or first.WhichOneof("part") != "spec":
                raise BadInput("The first message of an import must be its spec.")
            requester = convert.requester_from_pb(first.spec.requester)
            subject_class = convert.class_from_pb(first.spec.subject_class)
            submitted = await self._core.import_regularization(requester, subject_class, photos())
        except DistilleryError:
            # Read what the client is still sending before refusing: grpc's aio client reports a call closed
            # under its writes as INTERNAL, and the operator would never see the sentence saying which photo.
            # A bounded drain: a client that never stops sending gets cut off (and sees INTERNAL) after that.
            drained = 0
            async for _ in request_iterator:
                drained += 1
                if drained > DRAIN_LIMIT:
                    break
            raise
        async for event in self._follow(submitted.job.id, 0, submitted.job.owner):
            yield event

    async def GetImageInfo(
        self, request: pb.GetImageRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ImageInfo:
        requester = convert.requester_from_pb(request.requester)
        meta, width, height = await self._run(self._core.image_info, request.name, requester)
        return convert.image_info_to_pb(meta, width, height)

    async def UpdateLora(
        self, request: pb.UpdateLoraRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Lora:
        requester = convert.requester_from_pb(request.requester)
        lora = await self._run(
            self._core.update_lora,
            request.name,
            requester,
            request.public if request.HasField("public") else None,
            request.description if request.HasField("description") else None,
            request.show_image if request.HasField("show_image") else None,
        )
        return convert.lora_to_pb(lora)

    async def DeleteLora(
        self, request: pb.DeleteLoraRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.DeleteLoraReply:
        requester = convert.requester_from_pb(request.requester)
        image_deleted = await self._run(self._core.delete_lora, request.name, requester)
        return pb.DeleteLoraReply(name=request.name, image_deleted=image_deleted)

    async def GetUserStats(
        self, request: pb.GetUserStatsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.UserStats:
        requester = convert.requester_from_pb(request.requester)
        return convert.user_stats_to_pb(await self._run(self._core.user_stats, requester))

    async def PruneEvents(
        self, request: pb.PruneEventsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.PruneEventsReply:
        requester = convert.requester_from_pb(request.requester)
        pruned = await self._run(self._core.prune_events, requester, request.older_than_days)
        return pb.PruneEventsReply(jobs=pruned.jobs, events=pruned.events)

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.Status:
        return convert.status_to_pb(await self._run(self._core.status))


def _chunks(filename: str, data: bytes) -> list[pb.FileChunk]:
    chunks = [pb.FileChunk(data=data[start : start + CHUNK]) for start in range(0, max(len(data), 1), CHUNK)]
    chunks[0].filename = filename
    chunks[0].total_bytes = len(data)
    return chunks
