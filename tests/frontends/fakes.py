"""Fakes at every bot's seams: an in-memory daemon behind ``frontends.client.DaemonApi`` and a virtual clock.

``FakeDaemon`` keeps jobs, an event log per job, ownership, idempotency, LoRAs and generated pictures, and
follows the daemon's rules the bots rely on: an idempotency key returns the first job with ``duplicate``,
watch replays after a sequence number and then follows live until the final event, another user's job is
NOT_FOUND, and the platform requester (no user) sees every job of its platform. Tests drive it by hand:
``emit`` appends an event to a job (waking its watchers), ``finish`` ends it (a generation with its pictures),
``add_lora`` stores a LoRA of a user of the bot's platform, ``break_watches`` makes every open stream fail as
when the daemon restarts, ``offline`` makes every call fail as when it is down, ``fail_submit`` queues an
error for the next submission (or generation), ``watch_errors`` fail the next watches one each. Every call is
recorded in ``calls`` as (method, arguments).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from distillery.v1 import distillery_pb2 as pb

from frontends.client import OFFLINE, DaemonError
from frontends.platform import Attachment, Look, Place

ACTIVE = (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
# The file of every LoRA a finished job stores.
LORA_FILE = b"LORA"


def _owner_key(requester: pb.Requester) -> tuple[str, str, str]:
    return requester.platform, requester.workspace, requester.user


class FakeClock:
    """Virtual time: sleepers wake in deadline order and the clock jumps to each deadline, so pacing tests
    take no real time while concurrent sleeps still overlap as they would in real time. ``settle`` is real
    time given to loopback I/O (a fake chat API) before the clock moves on; ``sleeps`` lists every sleep."""

    def __init__(self, start: float = 1000.0, settle: float = 0.0) -> None:
        self.now = start
        self.settle = settle
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
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
            if self.settle:
                await asyncio.sleep(self.settle)
            if not self._sleepers:
                break
            deadline, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not future.done():
                future.set_result(None)


class FakeDaemon:
    """An in-memory daemon; see the module doc. ``add_lora`` owners are of ``platform`` and ``workspace``."""

    def __init__(self, platform: str = "slack", workspace: str = "T0TEAM") -> None:
        self.platform = platform
        self.workspace = workspace
        self.calls: list[tuple[str, Any]] = []
        self.uploads: list[bytes] = []
        # Raised by the next watch calls, one each, before any event: a daemon that is down or restarting.
        self.watch_errors: list[DaemonError] = []
        self.jobs: dict[str, pb.Job] = {}
        self.events: dict[str, list[pb.JobEvent]] = {}
        self.images: dict[str, bytes] = {}
        self.submits: list[tuple[pb.DistillSpec, bytes | None]] = []
        self.watches: list[tuple[str, int]] = []
        self.states: list[tuple[str, bytes]] = []
        self.cancels: list[tuple[str, pb.Requester]] = []
        self.generates: list[tuple[pb.GenerateSpec, pb.Requester, str]] = []
        self.loras: dict[str, pb.Lora] = {}
        self.lora_files: dict[str, bytes] = {}
        self.image_infos: dict[str, pb.ImageInfo] = {}
        self.updates: list[tuple[str, pb.UpdateLoraRequest]] = []
        self.deleted: list[str] = []
        self.image_fetches: list[str] = []
        self.submit_errors: list[DaemonError] = []
        # While set to an unset Event, Distill and Generate wait for it: a slow link, a slow daemon.
        self.submit_gate: asyncio.Event | None = None
        self.offline = False
        # The checkpoints /serve --model may name, as Status.models lists them.
        self.models: list[str] = []
        self._keys: dict[tuple[tuple[str, str, str], str], str] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._generation = 0

    # -- what tests do --------------------------------------------------------------------------------------

    def methods(self) -> list[str]:
        """The names of the calls made so far, in order."""
        return [name for name, _ in self.calls]

    def fail_submit(self, code: grpc.StatusCode, message: str) -> None:
        self.submit_errors.append(DaemonError(code, message))

    async def emit(self, job_id: str, text: str = "", **detail: Any) -> pb.JobEvent:
        """Append an event; ``detail`` is one oneof field (progress=pb.Progress(...)) plus state/stage."""
        job = self.jobs[job_id]
        state = detail.pop("state", job.state)
        stage = detail.pop("stage", job.stage)
        event = pb.JobEvent(job_id=job_id, seq=job.last_seq + 1, time=1.0, state=state, stage=stage, text=text)
        for name, value in detail.items():
            getattr(event, name).CopyFrom(value)
        job.state, job.stage, job.last_seq = state, stage, event.seq
        if event.HasField("captioned"):
            job.caption = event.captioned.caption
        if event.HasField("classified"):
            job.subject_class = event.classified.subject_class
        self.events[job_id].append(event)
        async with self._changed:
            self._changed.notify_all()
        return event

    async def run_to(self, job_id: str, steps: int = 4) -> None:
        """The typical life of a job up to the end of training."""
        running = {"state": pb.JOB_STATE_RUNNING}
        await self.emit(job_id, "Preparing.", stage=pb.STAGE_PREPARE, **running)
        await self.emit(
            job_id, "Captioned.", stage=pb.STAGE_CAPTION, captioned=pb.Captioned(caption="a woman in a suit")
        )
        await self.emit(
            job_id,
            "Classified.",
            stage=pb.STAGE_CLASSIFY,
            classified=pb.Classified(subject_class=pb.SUBJECT_CLASS_WOMAN),
        )
        for step in range(1, steps + 1):
            progress = pb.Progress(step=step, total=steps, loss=0.1, eta_seconds=float(steps - step))
            await self.emit(job_id, "Training.", stage=pb.STAGE_TRAIN, progress=progress)

    async def finish(self, job_id: str, state: int = pb.JOB_STATE_SUCCEEDED, error: str = "") -> pb.JobEvent:
        """End a job: a successful distillation stores its LoRA, a successful generation its pictures."""
        job = self.jobs[job_id]
        if job.kind == pb.JOB_KIND_GENERATE and state == pb.JOB_STATE_SUCCEEDED:
            return await self.finish_generation(job_id, job.generate.count or 1)
        job.state, job.error = state, error
        job.stage = pb.STAGE_DONE if state == pb.JOB_STATE_SUCCEEDED else job.stage
        job.finished_at = job.created_at + 75
        finished = pb.Finished(job=job)
        if state == pb.JOB_STATE_SUCCEEDED:
            lora = pb.Lora(name=job.lora_name, job_id=job.id, owner=job.owner, size_bytes=len(LORA_FILE))
            self.loras[lora.name], self.lora_files[lora.name] = lora, LORA_FILE
            finished.lora.CopyFrom(lora)
        return await self.emit(job_id, "Finished.", state=state, stage=job.stage, finished=finished)

    def add_lora(self, name: str, owner: str | int, *, public: bool = False, size: int = 0) -> pb.Lora:
        """A stored LoRA of a user of the fake's platform; its file is ``size`` bytes (a few by default)."""
        data = b"safetensors" * max(size // 11, 1)
        lora = pb.Lora(
            name=name,
            owner=pb.Requester(platform=self.platform, workspace=self.workspace, user=str(owner)),
            subject_class=pb.SUBJECT_CLASS_WOMAN,
            caption="a woman in a suit",
            base_model="tiny-sd",
            image_name=f"{name}.png",
            size_bytes=size or len(data),
            created_at=1_700_000_000,
            public=public,
        )
        self.loras[name] = lora
        self.lora_files[name] = data
        return lora

    async def finish_generation(self, job_id: str, count: int = 2) -> pb.JobEvent:
        """End a generation job with ``count`` pictures, stored for GetImage and GetImageInfo."""
        job = self.jobs[job_id]
        job.state, job.stage = pb.JOB_STATE_SUCCEEDED, pb.STAGE_DONE
        job.finished_at = job.created_at + 12
        finished = pb.Finished(job=job)
        for number in range(1, count + 1):
            name = f"{job_id}-{number}.png"
            info = pb.ImageInfo(
                name=name,
                generated=True,
                job_id=job_id,
                width=job.generate.width,
                height=job.generate.height,
                seed=job.generate.seed + number - 1,
                parameters=f"{job.generate.full_prompt}\nSteps: 20, Seed: {job.generate.seed + number - 1}",
                loras=job.generate.loras,
            )
            self.images[name] = b"\x89PNG generated " + name.encode()
            self.image_infos[name] = info
            job.output_images.append(name)
            finished.images.append(info)
        return await self.emit(job_id, "Finished.", state=job.state, stage=job.stage, finished=finished)

    async def break_watches(self) -> None:
        """Every open watch fails with UNAVAILABLE, as when the daemon restarts."""
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()

    def client_state(self, job_id: str) -> bytes:
        return bytes(self.jobs[job_id].client_state)

    # -- the Daemon protocol --------------------------------------------------------------------------------

    def _check_online(self) -> None:
        if self.offline:
            raise DaemonError(grpc.StatusCode.UNAVAILABLE, OFFLINE)

    def _visible(self, job_id: str, requester: pb.Requester) -> pb.Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no job {job_id}.")
        platform_wide = not requester.user and requester.platform == job.owner.platform
        if not (platform_wide or _owner_key(requester) == _owner_key(job.owner)):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no job {job_id}.")
        return job

    async def submit(self, spec: pb.DistillSpec, image: bytes | None = None) -> pb.SubmitReply:
        self.calls.append(("submit", spec))
        self._check_online()
        self.submits.append((spec, image))
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        if image is not None:
            self.uploads.append(image)
        owner = _owner_key(spec.requester)
        existing = self._keys.get((owner, spec.idempotency_key)) if spec.idempotency_key else None
        if existing is not None:
            return pb.SubmitReply(job=self.jobs[existing], queue_position=1, duplicate=True)
        number = next(self._ids)
        job_id = f"job{number}"
        name = f"name{number}"
        position = 1 + sum(1 for job in self.jobs.values() if job.state in ACTIVE)
        job = pb.Job(
            id=job_id,
            lora_name=name,
            state=pb.JOB_STATE_QUEUED,
            stage=pb.STAGE_QUEUED,
            owner=spec.requester,
            source=spec.url or "upload",
            image_name=f"{name}.png",
            created_at=1000.0,
            idempotency_key=spec.idempotency_key,
        )
        self.jobs[job_id] = job
        self.events[job_id] = []
        self.images[f"{name}.png"] = image or b"\x89PNG fake"
        if spec.idempotency_key:
            self._keys[(owner, spec.idempotency_key)] = job_id
        await self.emit(job_id, "Accepted.", accepted=pb.Accepted(lora_name=name, queue_position=position))
        return pb.SubmitReply(job=job, queue_position=position)

    async def watch(self, job_id: str, requester: pb.Requester, after_seq: int = 0) -> AsyncIterator[pb.JobEvent]:
        self.calls.append(("watch", (job_id, requester, after_seq)))
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        self._check_online()
        self._visible(job_id, requester)
        self.watches.append((job_id, after_seq))
        generation = self._generation
        last = after_seq
        while True:
            for event in list(self.events[job_id]):
                if event.seq > last:
                    yield event
                    last = event.seq
                    if event.HasField("finished"):
                        return
            if self.jobs[job_id].state not in ACTIVE:
                # As the daemon does: a job that has ended and whose events were all read has nothing more.
                return
            async with self._changed:
                if self._generation != generation:
                    raise DaemonError(grpc.StatusCode.UNAVAILABLE, OFFLINE)
                if self.events[job_id] and self.events[job_id][-1].seq > last:
                    continue
                await self._changed.wait()
            if self._generation != generation or self.offline:
                raise DaemonError(grpc.StatusCode.UNAVAILABLE, OFFLINE)

    async def get_job(self, job_id: str, requester: pb.Requester) -> pb.Job:
        self.calls.append(("get_job", job_id))
        self._check_online()
        return self._visible(job_id, requester)

    async def list_jobs(
        self, requester: pb.Requester, active_only: bool = False, whole_platform: bool = False, limit: int = 0
    ) -> list[pb.Job]:
        self.calls.append(("list_jobs", (requester, active_only, whole_platform)))
        self._check_online()
        jobs = [
            job
            for job in reversed(self.jobs.values())
            if (whole_platform and job.owner.platform == requester.platform)
            or _owner_key(job.owner) == _owner_key(requester)
        ]
        if active_only:
            jobs = [job for job in jobs if job.state in ACTIVE]
        return jobs[: limit or 50]

    async def cancel(self, job_id: str, requester: pb.Requester) -> pb.Job:
        self.calls.append(("cancel", (job_id, requester)))
        self._check_online()
        self.cancels.append((job_id, requester))
        job = self._visible(job_id, requester)
        if job.state not in ACTIVE:
            raise DaemonError(grpc.StatusCode.FAILED_PRECONDITION, "That job already ended.")
        job.error = "Cancelled by its owner."
        await self.finish(job_id, pb.JOB_STATE_CANCELLED, error=job.error)
        return job

    async def set_client_state(self, job_id: str, requester: pb.Requester, state: bytes) -> pb.Job:
        self.calls.append(("set_client_state", (job_id, state)))
        self._check_online()
        job = self._visible(job_id, requester)
        job.client_state = state
        self.states.append((job_id, state))
        return job

    async def get_image(self, name: str, requester: pb.Requester) -> bytes:
        self.calls.append(("get_image", (name, requester)))
        self._check_online()
        self.image_fetches.append(name)
        info = self.image_infos.get(name)
        job = self.jobs.get(info.job_id) if info is not None else None
        if name not in self.images or (job is not None and _owner_key(job.owner) != _owner_key(requester)):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no image called {name}.")
        return self.images[name]

    async def generate(
        self, spec: pb.GenerateSpec, requester: pb.Requester, idempotency_key: str = ""
    ) -> AsyncIterator[pb.JobEvent]:
        self.calls.append(("generate", (spec, idempotency_key)))
        self._check_online()
        self.generates.append((spec, requester, idempotency_key))
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        owner = _owner_key(requester)
        job_id = self._keys.get((owner, idempotency_key)) if idempotency_key else None
        if job_id is None:
            job_id = await self._new_generation(spec, requester, idempotency_key)
        # As the daemon does: the stream replays the job from its start, ACCEPTED first, then follows it.
        async for event in self.watch(job_id, requester):
            yield event

    async def _new_generation(self, spec: pb.GenerateSpec, requester: pb.Requester, key: str) -> str:
        for use in spec.loras:
            lora = self.loras.get(use.name)
            if lora is None or not (lora.public or _owner_key(lora.owner) == _owner_key(requester)):
                raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no LoRA called {use.name}.")
        job_id = f"job{next(self._ids)}"
        run = self._upscale(spec, requester) if spec.upscale_image else self._serve(spec)
        position = 1 + sum(1 for job in self.jobs.values() if job.state in ACTIVE)
        self.jobs[job_id] = pb.Job(
            id=job_id,
            kind=pb.JOB_KIND_GENERATE,
            generate=run,
            state=pb.JOB_STATE_QUEUED,
            stage=pb.STAGE_QUEUED,
            owner=requester,
            created_at=1000.0,
            idempotency_key=key,
        )
        self.events[job_id] = []
        if key:
            self._keys[(_owner_key(requester), key)] = job_id
        accepted = pb.Accepted(queue_position=position, kind=pb.JOB_KIND_GENERATE)
        await self.emit(job_id, "Accepted.", accepted=accepted)
        return job_id

    @staticmethod
    def _serve(spec: pb.GenerateSpec) -> pb.GenerateSpec:
        """What the daemon fills in: the prompt as run, the seed, the size and each LoRA's weight."""
        run = pb.GenerateSpec()
        run.CopyFrom(spec)
        names = " ".join(use.name for use in spec.loras if use.name not in spec.prompt)
        run.full_prompt = f"{spec.prompt} {names}".strip()
        run.seed = spec.seed if spec.HasField("seed") else 1234
        run.cfg = spec.cfg if spec.HasField("cfg") else 7.0
        run.steps = spec.steps or 20
        run.width = run.height = 512
        run.count = spec.count or 1
        for use in run.loras:
            if not use.HasField("weight"):
                use.weight = 0.8
        return run

    def _upscale(self, spec: pb.GenerateSpec, requester: pb.Requester) -> pb.GenerateSpec:
        """/upscale as the daemon reads it: the request of the picture's job, at the picture's seed, once."""
        info = self.image_infos.get(spec.upscale_image)
        job = self.jobs.get(info.job_id) if info is not None else None
        if info is None or job is None or _owner_key(job.owner) != _owner_key(requester):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no stored image {spec.upscale_image}.")
        run = pb.GenerateSpec()
        run.CopyFrom(job.generate)
        run.seed, run.count, run.upscale_image = info.seed, 1, spec.upscale_image
        run.power, run.power_scale = True, spec.power_scale if spec.HasField("power_scale") else 2.0
        run.upscale_method = spec.upscale_method or "latent"
        return run

    async def image_info(self, name: str, requester: pb.Requester) -> pb.ImageInfo:
        self.calls.append(("image_info", (name, requester)))
        self._check_online()
        info = self.image_infos.get(name)
        job = self.jobs.get(info.job_id) if info is not None else None
        if info is None or job is None or _owner_key(job.owner) != _owner_key(requester):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no image called {name}.")
        return info

    def _lora(self, name: str, requester: pb.Requester, *, owner_only: bool = False) -> pb.Lora:
        lora = self.loras.get(name)
        mine = lora is not None and _owner_key(lora.owner) == _owner_key(requester)
        if lora is None or not (mine or lora.public):
            raise DaemonError(grpc.StatusCode.NOT_FOUND, f"There is no LoRA called {name}.")
        if owner_only and not mine:
            raise DaemonError(grpc.StatusCode.PERMISSION_DENIED, f"Only the owner of {name} can change it.")
        return lora

    async def get_lora(self, name: str, requester: pb.Requester) -> pb.Lora:
        self.calls.append(("get_lora", (name, requester)))
        self._check_online()
        return self._lora(name, requester)

    async def list_loras(self, requester: pb.Requester, include_public: bool = True) -> list[pb.Lora]:
        self.calls.append(("list_loras", (requester, include_public)))
        self._check_online()
        mine = [lora for lora in self.loras.values() if _owner_key(lora.owner) == _owner_key(requester)]
        shared = [lora for lora in self.loras.values() if lora.public and lora not in mine]
        return mine + (shared if include_public else [])

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
        self._check_online()
        lora = self._lora(name, requester, owner_only=True)
        request = pb.UpdateLoraRequest(name=name, requester=requester)
        if public is not None:
            request.public = lora.public = public
        if description is not None:
            request.description = lora.description = description
        if show_image is not None:
            request.show_image = lora.show_image = show_image
        self.updates.append((name, request))
        return lora

    async def delete_lora(self, name: str, requester: pb.Requester) -> pb.DeleteLoraReply:
        self.calls.append(("delete_lora", (name, requester)))
        self._check_online()
        self._lora(name, requester, owner_only=True)
        del self.loras[name]
        self.deleted.append(name)
        return pb.DeleteLoraReply(name=name, image_deleted=True)

    async def download_lora(self, name: str, requester: pb.Requester) -> bytes:
        self.calls.append(("download_lora", (name, requester)))
        self._check_online()
        self._lora(name, requester)
        return self.lora_files[name]

    async def status(self) -> pb.Status:
        self.calls.append(("status", None))
        self._check_online()
        return pb.Status(ready=True, base_model="tiny-sd", preset="demo", models=self.models)

    async def user_stats(self, requester: pb.Requester) -> pb.UserStats:
        self.calls.append(("user_stats", requester))
        self._check_online()
        owner = _owner_key(requester)
        mine = [lora for lora in self.loras.values() if _owner_key(lora.owner) == owner]
        jobs = [job for job in self.jobs.values() if _owner_key(job.owner) == owner]
        generations = [job for job in jobs if job.kind == pb.JOB_KIND_GENERATE]
        return pb.UserStats(
            loras_owned=len(mine),
            public_loras=sum(1 for lora in mine if lora.public),
            distill_jobs=len(jobs) - len(generations),
            generate_jobs=len(generations),
            images_generated=sum(len(job.output_images) for job in generations),
        )

    async def close(self) -> None:
        self.calls.append(("close", None))


class FakePlatform:
    """A chat platform that records what the core sends, edits and uploads (with the virtual time), and
    raises the errors a test queues in ``errors`` (one per call, before it takes effect)."""

    album = 2

    def __init__(self, clock: FakeClock, group_interval: float = 3.0) -> None:
        self.clock = clock
        self.group_interval = group_interval
        self.sent: list[tuple[float, str, Look]] = []
        self.edits: list[tuple[float, Place, Look]] = []
        self.uploads: list[tuple[Place, list[Attachment]]] = []
        self.errors: list[Exception] = []
        self._ids = itertools.count(100)

    def interval(self, chat: str) -> float:
        return self.group_interval if chat.startswith("-") else 1.0

    def escape(self, text: str) -> str:
        return text

    def _fail(self) -> None:
        if self.errors:
            raise self.errors.pop(0)

    async def send(self, chat: str, look: Look, reply_to: str = "", owner: pb.Requester | None = None) -> Place:
        self._fail()
        self.sent.append((self.clock(), chat, look))
        return Place(chat, str(next(self._ids)))

    async def edit(self, place: Place, look: Look) -> None:
        self._fail()
        self.edits.append((self.clock(), place, look))

    async def upload(self, place: Place, files: Sequence[Attachment]) -> None:
        self._fail()
        self.uploads.append((place, list(files)))

    def texts(self) -> list[str]:
        """The texts of every edit, notes included, in order."""
        return [f"{look.text}\n\n{look.note}" if look.note else look.text for _, _, look in self.edits]
