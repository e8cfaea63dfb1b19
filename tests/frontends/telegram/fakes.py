"""Fakes at the bot's seams: a scripted daemon (``FakeTrainer``) and a virtual clock.

FakeTrainer keeps jobs and their event logs in memory and follows the daemon's rules that the bot relies on:
idempotency keys return the first job with ``duplicate``, watch replays after a sequence number and then follows
live until the final event, and another user's job is NOT_FOUND. Generation jobs (``generate``) stream their
events like the daemon's Generate and finish with images; LoRAs (``add_lora``) are visible to their owner and,
when public, to everyone, and only the owner may change or delete one.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.client import DaemonError


class FakeClock:
    """Virtual time: sleepers wake in deadline order and the clock jumps to each deadline, so pacing tests
    take no real time while concurrent sleeps still overlap as they would in real time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive())
        await future

    async def _drive(self) -> None:
        while self._sleepers:
            # Let every runnable task reach its next sleep (or finish) before time moves on.
            for _ in range(50):
                await asyncio.sleep(0)
            if not self._sleepers:
                break
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)


class FakeTrainer:
    """An in-memory daemon; tests drive jobs with ``emit``/``finish`` and inject errors."""

    def __init__(self) -> None:
        self.jobs: dict[str, pb.Job] = {}
        self.events: dict[str, list[pb.JobEvent]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.uploads: list[bytes] = []
        self.submit_error: DaemonError | None = None
        # While set to an unset Event, Distill and Generate wait for it, like a slow image link.
        self.submit_gate: asyncio.Event | None = None
        # Raised by the next watch calls, one each, before any event: a daemon that is down or restarting.
        self.watch_errors: list[DaemonError] = []
        self.generate_error: DaemonError | None = None
        self.loras: dict[str, pb.Lora] = {}
        self.images: dict[str, bytes] = {}
        self.image_infos: dict[str, pb.ImageInfo] = {}
        self._keys: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()

    def methods(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _event(self, job_id: str, text: str, **detail: Any) -> pb.JobEvent:
        job = self.jobs[job_id]
        job.last_seq += 1
        event = pb.JobEvent(job_id=job_id, seq=job.last_seq, state=job.state, stage=job.stage, text=text, **detail)
        self.events[job_id].append(event)
        return event

    async def submit(self, spec: pb.DistillSpec, image: bytes | None = None) -> pb.SubmitReply:
        self.calls.append(("submit", spec))
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        if self.submit_error is not None:
            raise self.submit_error
        owner = spec.requester
        key = f"{owner.platform}/{owner.user}/{spec.idempotency_key}"
        if spec.idempotency_key and key in self._keys:
            return pb.SubmitReply(job=self.jobs[self._keys[key]], queue_position=1, duplicate=True)
        if image is not None:
            self.uploads.append(image)
        number = next(self._ids)
        job_id = f"job{number}"
        job = pb.Job(
            id=job_id,
            lora_name=f"lora{number}",
            state=pb.JOB_STATE_QUEUED,
            stage=pb.STAGE_QUEUED,
            owner=owner,
            source=spec.url or "upload",
            idempotency_key=spec.idempotency_key,
            created_at=1000.0,
        )
        self.jobs[job_id] = job
        self.events[job_id] = []
        self._keys[key] = job_id
        self._event(job_id, "accepted", accepted=pb.Accepted(lora_name=job.lora_name, queue_position=1))
        return pb.SubmitReply(job=job, queue_position=1)

    def add_lora(self, name: str, owner: int, public: bool = False, size_bytes: int = 4) -> pb.Lora:
        """A finished LoRA of a Telegram user."""
        lora = pb.Lora(
            name=name,
            owner=pb.Requester(platform="telegram", user=str(owner)),
            public=public,
            size_bytes=size_bytes,
            image_name=f"{name}.png",
            base_model="tiny-sd",
            created_at=1000.0,
        )
        self.loras[name] = lora
        return lora

    async def generate(
        self, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str = ""
    ) -> AsyncGenerator[pb.JobEvent]:
        self.calls.append(("generate", (spec, idempotency_key)))
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        if self.generate_error is not None:
            raise self.generate_error
        key = f"{requester.platform}/{requester.user}/{idempotency_key}"
        if idempotency_key and key in self._keys:
            job_id = self._keys[key]
        else:
            for use in spec.loras:
                self._visible_lora(use.name, requester)
            job_id = f"job{next(self._ids)}"
            run = pb.GenerateSpec()
            run.CopyFrom(spec)
            run.width, run.height, run.steps, run.cfg = 512, 512, 20, 7.0
            run.seed = spec.seed if spec.HasField("seed") else 100
            run.count = spec.count or 1
            run.full_prompt = " ".join([spec.prompt, *(use.name for use in spec.loras)]).strip()
            self.jobs[job_id] = pb.Job(
                id=job_id,
                state=pb.JOB_STATE_QUEUED,
                stage=pb.STAGE_QUEUED,
                owner=requester,
                source="serve",
                idempotency_key=idempotency_key,
                created_at=1000.0,
                kind=pb.JOB_KIND_GENERATE,
                generate=run,
            )
            self.events[job_id] = []
            self._keys[key] = job_id
            accepted = pb.Accepted(queue_position=1, kind=pb.JOB_KIND_GENERATE)
            self._event(job_id, "accepted", accepted=accepted)
        async for event in self._follow(job_id, 0):
            yield event

    async def get_job(self, job_id: str, requester: pb.Requester) -> pb.Job:
        self.calls.append(("get_job", job_id))
        job = pb.Job()
        job.CopyFrom(self._visible(job_id, requester))
        return job

    async def emit(self, job_id: str, text: str = "", **fields: Any) -> pb.JobEvent:
        """Append an event; ``state``/``stage`` change the job first, other fields are the event's detail."""
        job = self.jobs[job_id]
        if "state" in fields:
            job.state = fields.pop("state")
        if "stage" in fields:
            job.stage = fields.pop("stage")
        event = self._event(job_id, text, **fields)
        await self._notify()
        return event

    async def finish(self, job_id: str, state: int = pb.JOB_STATE_SUCCEEDED, error: str = "") -> pb.JobEvent:
        job = self.jobs[job_id]
        job.state, job.error, job.finished_at = state, error, 1042.0
        job.stage = pb.STAGE_DONE if state == pb.JOB_STATE_SUCCEEDED else job.stage
        lora = None
        if state == pb.JOB_STATE_SUCCEEDED and job.kind == pb.JOB_KIND_GENERATE:
            images = [self._make_image(job, number) for number in range(1, job.generate.count + 1)]
            finished = pb.Finished(job=job, images=images)
            return await self.emit(job_id, "finished", finished=finished)
        if state == pb.JOB_STATE_SUCCEEDED:
            lora = pb.Lora(name=job.lora_name, owner=job.owner, job_id=job_id, size_bytes=4)
        finished = pb.Finished(job=job, lora=lora) if lora is not None else pb.Finished(job=job)
        return await self.emit(job_id, "finished", finished=finished)

    def _make_image(self, job: pb.Job, number: int) -> pb.ImageInfo:
        spec = job.generate
        seed = spec.seed + number - 1
        info = pb.ImageInfo(
            name=f"{job.id}-{number}.png",
            generated=True,
            job_id=job.id,
            width=spec.width,
            height=spec.height,
            seed=seed,
            parameters=f"{spec.full_prompt}\nSteps: {spec.steps}, CFG scale: {spec.cfg:g}, Seed: {seed}",
            loras=[pb.LoraWeight(name=use.name, weight=0.8) for use in spec.loras],
        )
        job.output_images.append(info.name)
        self.images[info.name] = f"PNG {info.name}".encode()
        self.image_infos[info.name] = info
        return info

    async def watch(self, job_id: str, requester: pb.Requester, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        self.calls.append(("watch", (job_id, requester, after_seq)))
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        job = self._visible(job_id, requester)
        async for event in self._follow(job.id, after_seq):
            yield event

    async def _follow(self, job_id: str, after_seq: int) -> AsyncIterator[pb.JobEvent]:
        job = self.jobs[job_id]
        last = after_seq
        while True:
            for event in [event for event in self.events[job.id] if event.seq > last]:
                yield event
                last = event.seq
                if event.HasField("finished"):
                    return
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._beyond, job_id, last))

    def _beyond(self, job_id: str, seq: int) -> bool:
        return bool(self.jobs[job_id].last_seq > seq)

    def _visible(self, job_id: str, requester: pb.Requester) -> pb.Job:
        job = self.jobs.get(job_id)
        platform_wide = not requester.user and job is not None and requester.platform == job.owner.platform
        if job is None or not (platform_wide or requester.user == job.owner.user):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no job {job_id}.")
        return job

    async def list_jobs(
        self, requester: pb.Requester, active_only: bool = False, whole_platform: bool = False, limit: int = 0
    ) -> list[pb.Job]:
        self.calls.append(("list_jobs", (requester, active_only, whole_platform)))
        jobs = [
            job
            for job in reversed(self.jobs.values())
            if (whole_platform or job.owner.user == requester.user)
            and (not active_only or job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING))
        ]
        return jobs[: limit or 50]

    async def cancel(self, job_id: str, requester: pb.Requester) -> pb.Job:
        self.calls.append(("cancel", (job_id, requester)))
        job = self._visible(job_id, requester)
        await self.finish(job_id, pb.JOB_STATE_CANCELLED, "Cancelled by its owner.")
        return job

    async def set_client_state(self, job_id: str, requester: pb.Requester, state: bytes) -> pb.Job:
        self.calls.append(("set_client_state", (job_id, state)))
        job = self._visible(job_id, requester)
        job.client_state = state
        return job

    def _visible_lora(self, name: str, requester: pb.Requester) -> pb.Lora:
        lora = self.loras.get(name)
        if lora is None or not (lora.public or lora.owner.user == requester.user):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no LoRA called {name}.")
        return lora

    def _own_lora(self, name: str, requester: pb.Requester) -> pb.Lora:
        lora = self._visible_lora(name, requester)
        if lora.owner.user != requester.user:
            raise DaemonError(grpc.StatusCode.PERMISSION_DENIED, f"Only the owner of {name} can change it.")
        return lora

    async def get_lora(self, name: str, requester: pb.Requester) -> pb.Lora:
        self.calls.append(("get_lora", (name, requester)))
        return self._visible_lora(name, requester)

    async def list_loras(self, requester: pb.Requester, include_public: bool = True) -> list[pb.Lora]:
        self.calls.append(("list_loras", (requester, include_public)))
        return [
            lora
            for lora in self.loras.values()
            if lora.owner.user == requester.user or (include_public and lora.public)
        ]

    async def update_lora(
        self,
        name: str,
        requester: pb.Requester,
        *,
        public: bool | None = None,
        description: str | None = None,
        show_image: bool | None = None,
    ) -> pb.Lora:
        self.calls.append(("update_lora", (name, public, description, show_image)))
        lora = self._own_lora(name, requester)
        if public is not None:
            lora.public = public
        if description is not None:
            lora.description = description
        if show_image is not None:
            lora.show_image = show_image
        return lora

    async def delete_lora(self, name: str, requester: pb.Requester) -> pb.DeleteLoraReply:
        self.calls.append(("delete_lora", (name, requester)))
        self._own_lora(name, requester)
        del self.loras[name]
        return pb.DeleteLoraReply(name=name, image_deleted=True)

    async def download_lora(self, name: str, requester: pb.Requester) -> bytes:
        self.calls.append(("download_lora", (name, requester)))
        return b"LORA"

    async def get_image(self, name: str, requester: pb.Requester) -> bytes:
        self.calls.append(("get_image", (name, requester)))
        info = self.image_infos.get(name)
        if info is None or self.jobs[info.job_id].owner.user != requester.user:
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no image called {name}.")
        return self.images[name]

    async def image_info(self, name: str, requester: pb.Requester) -> pb.ImageInfo:
        self.calls.append(("image_info", (name, requester)))
        await self.get_image(name, requester)
        return self.image_infos[name]

    async def user_stats(self, requester: pb.Requester) -> pb.UserStats:
        self.calls.append(("user_stats", requester))
        mine = [job for job in self.jobs.values() if job.owner.user == requester.user]
        generations = [job for job in mine if job.kind == pb.JOB_KIND_GENERATE]
        loras = [lora for lora in self.loras.values() if lora.owner.user == requester.user]
        return pb.UserStats(
            loras_owned=len(loras),
            public_loras=sum(lora.public for lora in loras),
            distill_jobs=len(mine) - len(generations),
            generate_jobs=len(generations),
            images_generated=sum(len(job.output_images) for job in generations),
        )

    async def close(self) -> None:
        self.calls.append(("close", None))
