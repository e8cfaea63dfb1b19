"""A thin async client of the daemon for the bots and the CLI; gRPC failures become sentences for a person.

Every call takes the Requester the frontend speaks for. Errors come out as DaemonError, whose ``message`` can go
into a chat as is: the daemon's own sentence when it wrote one, otherwise a plain explanation of the status
(an unreachable daemon reads "The trainer is offline; try again later.").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Protocol, TypeVar

import grpc
from distillery.v1 import distillery_pb2 as pb
from distillery.v1 import distillery_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")

USER_MESSAGE_KEY = "x-distillery-error"
UPLOAD_CHUNK = 512 * 1024
OFFLINE = "The trainer is offline; try again later."
_FALLBACK = {
    grpc.StatusCode.UNAVAILABLE: OFFLINE,
    grpc.StatusCode.DEADLINE_EXCEEDED: "The trainer took too long to answer; try again later.",
    grpc.StatusCode.UNAUTHENTICATED: "This frontend is not allowed to talk to the trainer (token).",
    grpc.StatusCode.NOT_FOUND: "Not found.",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "The trainer is busy; try again later.",
    grpc.StatusCode.INVALID_ARGUMENT: "The trainer could not use that request.",
}
CLASSES = {
    "man": pb.SUBJECT_CLASS_MAN,
    "woman": pb.SUBJECT_CLASS_WOMAN,
    "person": pb.SUBJECT_CLASS_PERSON,
}


class DaemonError(Exception):
    """A failed call; ``message`` is for the chat, ``code`` for the frontend's own decisions."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def explain(error: grpc.aio.AioRpcError) -> DaemonError:
    """Turn a gRPC error into a DaemonError with a sentence a chat user understands."""
    trailing = error.trailing_metadata() or ()
    written_for_people = any(key == USER_MESSAGE_KEY for key, _ in trailing)
    if written_for_people and error.details():
        return DaemonError(error.code(), error.details() or "")
    text = _FALLBACK.get(error.code(), f"The trainer failed ({error.code().name.lower()}).")
    return DaemonError(error.code(), text)


class DaemonApi(Protocol):
    """What the bots call on the daemon: DaemonClient fits it, and so do the fakes their tests put behind it."""

    async def submit(self, spec: pb.DistillSpec, image: bytes | None = None) -> pb.SubmitReply: ...

    def watch(self, job_id: str, requester: pb.Requester, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]: ...

    async def list_jobs(
        self, requester: pb.Requester, active_only: bool = False, whole_platform: bool = False, limit: int = 0
    ) -> list[pb.Job]: ...

    async def cancel(self, job_id: str, requester: pb.Requester) -> pb.Job: ...

    async def set_client_state(self, job_id: str, requester: pb.Requester, state: bytes) -> pb.Job: ...

    def generate(
        self, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str = ""
    ) -> AsyncIterator[pb.JobEvent]: ...

    async def get_job(self, job_id: str, requester: pb.Requester) -> pb.Job: ...

    async def get_image(self, name: str, requester: pb.Requester) -> bytes: ...

    async def image_info(self, name: str, requester: pb.Requester) -> pb.ImageInfo: ...

    async def get_lora(self, name: str, requester: pb.Requester) -> pb.Lora: ...

    async def list_loras(self, requester: pb.Requester, include_public: bool = True) -> list[pb.Lora]: ...

    async def update_lora(
        self,
        name: str,
        requester: pb.Requester,
        *,
        public: bool | None = None,
        description: str | None = None,
        show_image: bool | None = None,
    ) -> pb.Lora: ...

    async def delete_lora(self, name: str, requester: pb.Requester) -> pb.DeleteLoraReply: ...

    async def download_lora(self, name: str, requester: pb.Requester) -> bytes: ...

    async def user_stats(self, requester: pb.Requester) -> pb.UserStats: ...

    async def status(self) -> pb.Status: ...


class DaemonClient:
    """One channel to the daemon: ``unix:/run/distillery/distillery.sock`` or ``127.0.0.1:50051`` (+ token)."""

    def __init__(self, target: str, token: str | None = None) -> None:
        self.target = target
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        # A bot waits out daemon restarts; gRPC's default reconnect backoff (up to ~2 min) would add to that.
        self._channel = grpc.aio.insecure_channel(
            target, options=[("grpc.max_reconnect_backoff_ms", 5000), ("grpc.initial_reconnect_backoff_ms", 500)]
        )
        self._stub = pb_grpc.DistilleryStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            raise explain(error) from error

    async def _stream(self, call: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        try:
            async for item in call():
                yield item
        except grpc.aio.AioRpcError as error:
            raise explain(error) from error

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when the daemon answers health SERVING (models loaded)."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    # -- distill --------------------------------------------------------------------------------------------

    @staticmethod
    def _requests(spec: pb.DistillSpec, image: bytes | None) -> list[pb.SubmitRequest]:
        requests = [pb.SubmitRequest(spec=spec)]
        if image is not None:
            for start in range(0, len(image), UPLOAD_CHUNK):
                requests.append(pb.SubmitRequest(chunk=image[start : start + UPLOAD_CHUNK]))
        return requests

    @staticmethod
    def spec(
        requester: pb.Requester,
        *,
        url: str = "",
        image_name: str = "",
        upload: bool = False,
        subject_class: str = "",
        no_flip: bool = False,
        idempotency_key: str = "",
        train_steps: int = 0,
    ) -> pb.DistillSpec:
        """A DistillSpec; subject_class is "", "man", "woman" or "person"."""
        spec = pb.DistillSpec(
            requester=requester,
            subject_class=CLASSES.get(subject_class, pb.SUBJECT_CLASS_UNSPECIFIED),
            no_flip=no_flip,
            idempotency_key=idempotency_key,
            train_steps=train_steps,
        )
        if url:
            spec.url = url
        elif image_name:
            spec.image_name = image_name
        elif upload:
            spec.upload = True
        return spec

    async def submit(self, spec: pb.DistillSpec, image: bytes | None = None) -> pb.SubmitReply:
        """Queue a job; ``image`` is the upload when spec.upload is set."""
        requests = self._requests(spec, image)
        return await self._call(lambda: self._stub.Submit(iter(requests), metadata=self._metadata))

    def distill(self, spec: pb.DistillSpec, image: bytes | None = None) -> AsyncIterator[pb.JobEvent]:
        """Queue a job and follow it; the first event is ACCEPTED with the LoRA name and queue position."""
        requests = self._requests(spec, image)
        return self._stream(lambda: self._stub.Distill(iter(requests), metadata=self._metadata))

    def watch(self, job_id: str, requester: pb.Requester, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        """Events of a job after after_seq (replayed), then live ones until it ends."""
        request = pb.WatchRequest(job_id=job_id, after_seq=after_seq, requester=requester)
        return self._stream(lambda: self._stub.Watch(request, metadata=self._metadata))

    # -- generate -------------------------------------------------------------------------------------------

    def generate(
        self, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str = ""
    ) -> AsyncIterator[pb.JobEvent]:
        """Queue a generation and follow it; the FINISHED event names the images (fetch them with get_image)."""
        request = pb.GenerateRequest(spec=spec, requester=requester, idempotency_key=idempotency_key)
        return self._stream(lambda: self._stub.Generate(request, metadata=self._metadata))

    def import_regularization(
        self, requester: pb.Requester, subject_class: str, photos: Iterable[bytes]
    ) -> AsyncIterator[pb.JobEvent]:
        """Operator: send photos of one class ("man", "woman", "person") to become its regularization set.

        ``photos`` is read lazily, one photo per message, so a folder is never all in memory here.
        """
        spec = pb.RegularizationSpec(requester=requester, subject_class=CLASSES.get(subject_class, 0))

        def requests() -> Iterator[pb.RegularizationUpload]:
            yield pb.RegularizationUpload(spec=spec)
            for photo in photos:
                yield pb.RegularizationUpload(photo=photo)

        return self._stream(lambda: self._stub.ImportRegularization(requests(), metadata=self._metadata))

    # -- jobs -----------------------------------------------------------------------------------------------

    async def get_job(self, job_id: str, requester: pb.Requester) -> pb.Job:
        request = pb.GetJobRequest(job_id=job_id, requester=requester)
        return await self._call(lambda: self._stub.GetJob(request, metadata=self._metadata))

    async def list_jobs(
        self, requester: pb.Requester, active_only: bool = False, whole_platform: bool = False, limit: int = 0
    ) -> list[pb.Job]:
        request = pb.ListJobsRequest(
            requester=requester, active_only=active_only, whole_platform=whole_platform, limit=limit
        )
        reply = await self._call(lambda: self._stub.ListJobs(request, metadata=self._metadata))
        return list(reply.jobs)

    async def cancel(self, job_id: str, requester: pb.Requester) -> pb.Job:
        request = pb.CancelJobRequest(job_id=job_id, requester=requester)
        return await self._call(lambda: self._stub.CancelJob(request, metadata=self._metadata))

    async def set_client_state(self, job_id: str, requester: pb.Requester, state: bytes) -> pb.Job:
        request = pb.SetClientStateRequest(job_id=job_id, requester=requester, client_state=state)
        return await self._call(lambda: self._stub.SetClientState(request, metadata=self._metadata))

    # -- LoRAs, images, status ------------------------------------------------------------------------------

    async def get_lora(self, name: str, requester: pb.Requester) -> pb.Lora:
        request = pb.GetLoraRequest(name=name, requester=requester)
        return await self._call(lambda: self._stub.GetLora(request, metadata=self._metadata))

    async def list_loras(self, requester: pb.Requester, include_public: bool = True) -> list[pb.Lora]:
        request = pb.ListLorasRequest(requester=requester, include_public=include_public)
        reply = await self._call(lambda: self._stub.ListLoras(request, metadata=self._metadata))
        return list(reply.loras)

    async def _file(self, call: Callable[[], AsyncIterator[pb.FileChunk]]) -> bytes:
        parts = [chunk.data async for chunk in self._stream(call)]
        return b"".join(parts)

    async def download_lora(self, name: str, requester: pb.Requester) -> bytes:
        """The LoRA's .safetensors file."""
        request = pb.GetLoraRequest(name=name, requester=requester)
        return await self._file(lambda: self._stub.DownloadLora(request, metadata=self._metadata))

    async def get_image(self, name: str, requester: pb.Requester) -> bytes:
        """A stored image (PNG): the requester's own source or generated image, or a shown public source."""
        request = pb.GetImageRequest(name=name, requester=requester)
        return await self._file(lambda: self._stub.GetImage(request, metadata=self._metadata))

    async def image_info(self, name: str, requester: pb.Requester) -> pb.ImageInfo:
        """A stored image's facts: a generated image's parameters, or the LoRA a source image made."""
        request = pb.GetImageRequest(name=name, requester=requester)
        return await self._call(lambda: self._stub.GetImageInfo(request, metadata=self._metadata))

    async def update_lora(
        self,
        name: str,
        requester: pb.Requester,
        *,
        public: bool | None = None,
        description: str | None = None,
        show_image: bool | None = None,
    ) -> pb.Lora:
        """Change the owner's settings of a LoRA; arguments left None stay as they are."""
        request = pb.UpdateLoraRequest(name=name, requester=requester)
        if public is not None:
            request.public = public
        if description is not None:
            request.description = description
        if show_image is not None:
            request.show_image = show_image
        return await self._call(lambda: self._stub.UpdateLora(request, metadata=self._metadata))

    async def delete_lora(self, name: str, requester: pb.Requester) -> pb.DeleteLoraReply:
        """Delete the requester's LoRA and its source image."""
        request = pb.DeleteLoraRequest(name=name, requester=requester)
        return await self._call(lambda: self._stub.DeleteLora(request, metadata=self._metadata))

    async def user_stats(self, requester: pb.Requester) -> pb.UserStats:
        request = pb.GetUserStatsRequest(requester=requester)
        return await self._call(lambda: self._stub.GetUserStats(request, metadata=self._metadata))

    async def status(self) -> pb.Status:
        return await self._call(lambda: self._stub.GetStatus(pb.GetStatusRequest(), metadata=self._metadata))

    async def prune_events(self, requester: pb.Requester, older_than_days: int) -> pb.PruneEventsReply:
        """Operator: delete the event logs of jobs that ended more than ``older_than_days`` days ago."""
        request = pb.PruneEventsRequest(requester=requester, older_than_days=older_than_days)
        return await self._call(lambda: self._stub.PruneEvents(request, metadata=self._metadata))
