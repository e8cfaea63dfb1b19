"""What the daemon does for a request, in domain terms; rpc/servicer.py only translates to and from protobuf.

Submitting validates everything (source, image, limits) before anything is written, then stores the job, its
name and its source image in one transaction and queues it. Watching replays a job's events from the store
after a sequence number and then follows it live. Ownership is enforced here: another user's job, private
LoRA or source image is NotFound, exactly as if it did not exist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from daemon import logs, quota
from daemon.errors import BadInput, Conflict, Exhausted, Forbidden, NotFound, Unavailable
from daemon.jobs.executor import Executor, WorkerStatus
from daemon.jobs.hub import EventHub
from daemon.jobs.journal import Journal
from daemon.jobs.model import (
    Event,
    GenerateParams,
    Job,
    JobKind,
    JobState,
    LoraRecord,
    Requester,
    Stage,
    SubjectClass,
)
from daemon.jobs.queue import JobQueue
from daemon.pipeline.fetch import fetch_url
from daemon.pipeline.image import SourceImage, normalize_image, open_png
from daemon.pipeline.name import NameMinter
from daemon.pipeline.serve_request import (
    GenerationDefaults,
    ServeRequest,
    face_of_picture,
    fit_picture,
    picture_size,
    resolve,
)
from daemon.pipeline.upscale_request import not_made_by_serve, upscale_params
from daemon.quota import QuotaUse
from daemon.settings import Settings
from daemon.store.lmdb_store import Pruned, Store, StoredImage

log = logging.getLogger(__name__)

# A frontend's re-attach note on a job stays small: chat id, message id, last sequence shown.
MAX_CLIENT_STATE = 4096
# How long a watcher sleeps before re-reading the store when no wake-up came (a safety net, not the path).
WATCH_POLL_S = 5.0
MAX_DESCRIPTION = 500
# Above any job's event count, below the store's 8-byte sequence keys.
MAX_SEQ = 2**62
# Bounds of one regularization import: fewer photos regularize poorly, more add nothing but time.
MIN_PHOTOS = 10
MAX_PHOTOS = 500


@dataclass
class SubmitSpec:
    """A /distill request: exactly one of url, image_name and upload is the source."""

    requester: Requester
    url: str = ""
    image_name: str = ""
    upload: bytes | None = None
    subject_class: SubjectClass | None = None
    flip: bool = True
    idempotency_key: str = ""
    train_steps: int = 0

    def request_hash(self) -> str:
        """What makes two submissions with one idempotency key the same request."""
        if self.upload is not None:
            source = "upload:" + hashlib.sha256(self.upload).hexdigest()
        else:
            source = f"url:{self.url}" if self.url else f"image:{self.image_name}"
        fields = [source, self.subject_class.value if self.subject_class else "", self.flip, self.train_steps]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def serve_request_hash(request: ServeRequest) -> str:
    """What makes two /serve requests with one idempotency key the same request."""
    return hashlib.sha256(json.dumps(dataclasses.asdict(request), sort_keys=True).encode()).hexdigest()


@dataclass
class UserStats:
    loras_owned: int
    public_loras: int
    distill_jobs: int
    generate_jobs: int
    images_generated: int
    today: QuotaUse | None = None


@dataclass
class Submitted:
    job: Job
    position: int
    duplicate: bool


@dataclass
class StatusReport:
    ready: bool
    queue_length: int
    current_job: Job | None  # the first worker's running job, for clients that show one
    base_model: str
    captioner_model: str
    device: str
    preset: str
    jobs_done: int
    uptime_seconds: float
    models: list[str] = dataclasses.field(default_factory=list)  # /serve --model names
    workers: list[WorkerStatus] = dataclasses.field(default_factory=list)


def new_job_id() -> str:
    """Sortable by creation time (the store lists jobs in key order), unguessable in its random half."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


def _check_requester(requester: Requester) -> None:
    if not requester.platform or not requester.user:
        raise BadInput("The request does not say who is asking (platform and user are required).")


class Distillery:
    """The daemon's operations. Built before the models load; ``attach`` makes it ready for jobs."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hub: EventHub,
        journal: Journal,
        queue: JobQueue,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock  # for the daily quotas' day boundary
        self.store = store
        self.hub = hub
        self.journal = journal
        self.queue = queue
        self.worker: Executor | None = None
        self.minter: NameMinter | None = None
        self.generation: GenerationDefaults | None = None
        self.device = ""
        self.base_model = settings.models.base_model
        self.captioner_model = settings.models.captioner_model
        self.started_at = time.time()
        self.draining = False
        # Serialises the final capacity check with storing and queueing the job (see submit).
        self._admit = asyncio.Lock()

    def attach(
        self, executor: Executor, minter: NameMinter, device: str, generation: GenerationDefaults | None = None
    ) -> None:
        """Workers are ready: take jobs from now on (and generation ones when ``generation`` says how)."""
        self.worker = executor
        self.minter = minter
        self.device = device
        self.generation = generation

    @property
    def ready(self) -> bool:
        return self.worker is not None and not self.draining

    # -- recovery -------------------------------------------------------------------------------------------

    def recover(self, max_attempts: int) -> None:
        """Put back in the queue what a previous run left queued or running; never leave a job stuck."""
        for job in self.store.jobs():
            if job.state == JobState.RUNNING and job.attempts >= max_attempts:
                self.journal.finish(
                    job.id,
                    _failed(f"The distillery stopped {job.attempts} times while running this job."),
                    "Failed: the distillery stopped while running this job; please send the picture again.",
                )
                log.warning("job %s: failed after %d interrupted attempts", job.id, job.attempts)
            elif job.state == JobState.RUNNING:
                self.journal.change(job.id, _requeued, "The distillery restarted; your job is back in the queue.")
                self.queue.push(job.id)
                log.info("job %s: re-queued after a restart", job.id)
            elif job.state == JobState.QUEUED:
                self.queue.push(job.id)

    # -- submit ---------------------------------------------------------------------------------------------

    async def submit(self, spec: SubmitSpec) -> Submitted:
        """Validate, name, store and queue a /distill job; a repeated idempotency key returns the first job."""
        self._check_ready()
        _check_requester(spec.requester)
        sources = sum(1 for present in (spec.url, spec.image_name, spec.upload is not None) if present)
        if sources != 1:
            raise BadInput("Send exactly one image: a link, an upload or the name of a stored image.")
        if spec.train_steps > self.settings.max_train_steps:
            raise BadInput(f"At most {self.settings.max_train_steps} training steps are allowed.")
        request_hash = spec.request_hash()
        if (earlier := await self._earlier(spec.requester, spec.idempotency_key, request_hash)) is not None:
            return earlier
        await asyncio.to_thread(self._check_capacity, spec.requester)
        await asyncio.to_thread(self._check_quota, spec.requester, 0, 1)

        raw = await self._source_bytes(spec)
        image = await asyncio.to_thread(normalize_image, raw, self.settings.image)
        # The check above refuses early, before any fetch; this one holds. Without the lock, a burst of
        # submissions would all pass the first check before any of them is stored and overrun the limits.
        async with self._admit:
            if (earlier := await self._earlier(spec.requester, spec.idempotency_key, request_hash)) is not None:
                return earlier
            await asyncio.to_thread(self._check_capacity, spec.requester)
            await asyncio.to_thread(self._check_quota, spec.requester, 0, 1)
            return await self._store_new(spec, image, request_hash)

    async def _store_new(self, spec: SubmitSpec, image: SourceImage, request_hash: str) -> Submitted:
        """Mint a name and store the job with its image in one transaction, then queue it."""
        assert self.worker is not None and self.minter is not None  # submit checked both
        source = spec.url or spec.image_name or "upload"
        minter = self.minter
        for _ in range(5):
            lora_name = await asyncio.to_thread(minter.mint, self.store.name_taken)
            job = Job(
                id=new_job_id(),
                lora_name=lora_name.name,
                owner=spec.requester,
                source=source,
                image_name=f"{lora_name.name}.png",
                requested_class=spec.subject_class,
                flip=spec.flip,
                train_steps=spec.train_steps or self.settings.train.steps,
                created_at=self.clock(),
                idempotency_key=spec.idempotency_key,
                request_hash=request_hash,
            )
            position = len(self.queue) + 1
            text = f"Your LoRA will be called {job.lora_name}; you are number {position} in the queue."
            first = self.journal.new_event(job, text, 1, "accepted", queue_position=position, job_kind=job.kind)
            try:
                stored = await asyncio.to_thread(self.store.create_job, job, first, image.png, image.sha256)
            except Conflict:
                continue  # the name was taken between minting and storing: mint another
            if stored.id != job.id:
                return self._duplicate(stored, request_hash)
            submitted = self._queued(stored, position)
            log.info("job %s (%s): accepted from %s, position %d", job.id, job.lora_name, source, position)
            return submitted
        raise Exhausted("The distillery could not find a free name; try again.")

    def _check_ready(self) -> None:
        if self.draining:
            raise Unavailable("The distillery is restarting; send it again in a minute.")
        if self.worker is None or self.minter is None:
            raise Unavailable("The distillery is still loading its models; try again in a minute.")

    async def generate(self, request: ServeRequest, requester: Requester, idempotency_key: str = "") -> Submitted:
        """Validate and queue a /serve job; its LoRAs must be the requester's own or public ones."""
        self._check_ready()
        _check_requester(requester)
        if self.generation is None:
            raise Unavailable("This distillery does not generate images.")
        request_hash = serve_request_hash(request)
        if (earlier := await self._earlier(requester, idempotency_key, request_hash)) is not None:
            return earlier
        if request.upscale_image:
            params = await asyncio.to_thread(self._upscale_params, request, requester)
        else:
            loras = [await asyncio.to_thread(self.get_lora, name, requester) for name, _ in request.loras]
            params = resolve(request, loras, self.generation)
        face = request.face_picture
        for picture in [*request.adapt_pictures, *([face] if face else [])]:
            if picture.image:
                await asyncio.to_thread(self.visible_image, picture.image, requester)
        if request.init_image:
            await asyncio.to_thread(self.visible_image, request.init_image, requester)
            stored = await asyncio.to_thread(self.store.get_image, request.init_image)
            fit_picture(params, picture_size(stored), self.generation)
        await asyncio.to_thread(self._check_capacity, requester)
        await asyncio.to_thread(self._check_quota, requester, params.count, 0)
        adapt = [await self._fetch_picture(picture.url) for picture in request.adapt_pictures]
        # /upscale's --adapt pictures are stored ones its picture's record names: nothing to fetch.
        adapt = adapt or [None] * len(params.adapts)
        fetched_face = await self._fetch_picture(face.url if face else "")
        if face is not None:
            # Said now rather than after the wait in the queue.
            if fetched_face is not None:
                face_png = fetched_face.png
            else:
                face_png = await asyncio.to_thread(self.store.get_image, face.image)
            await asyncio.to_thread(face_of_picture, face_png)
        init = await self._fetch_picture(request.init_url)
        if init is not None:
            fit_picture(params, (init.width, init.height), self.generation)
        async with self._admit:
            if (earlier := await self._earlier(requester, idempotency_key, request_hash)) is not None:
                return earlier
            await asyncio.to_thread(self._check_capacity, requester)
            await asyncio.to_thread(self._check_quota, requester, params.count, 0)
            return await self._store_generation(
                requester, params, adapt, init, idempotency_key, request_hash, fetched_face
            )

    def _upscale_params(self, request: ServeRequest, requester: Requester) -> GenerateParams:
        """/upscale: a picture the requester may see, made by /serve, whose LoRAs they may still use."""
        assert self.generation is not None  # generate checked
        name = request.upscale_image
        meta, width, height = self.image_info(name, requester)
        try:
            job = self.store.get_job(meta.job_id) if meta.generated else None
        except NotFound:
            job = None
        if job is None or job.kind != JobKind.GENERATE or job.generate is None:
            raise not_made_by_serve(name)  # a photo someone sent, or a LoRA's preview
        source = job.generate
        # The picture's own seed as recorded with it; image n of a job is drawn with the job's seed + n - 1.
        index = job.outputs.index(name) if name in job.outputs else 0
        seed = int(meta.info.get("seed", source.seed + index))
        params = upscale_params(request, source, seed, (width, height), self.generation)
        pictures = {params.adapt_image, *(use.image for use in params.adapts), params.adapt_face} - {""}
        for picture in sorted(pictures):
            try:
                self.visible_image(picture, requester)
            except NotFound:
                raise NotFound(
                    f"{name} was made with the picture {picture}, which is gone or no longer shared with you."
                ) from None
        for use in params.loras:
            try:
                self.get_lora(use.name, requester)
            except NotFound:
                raise NotFound(
                    f"{name} was made with the LoRA {use.name}, which is gone or no longer shared with you."
                ) from None
        return params

    async def _fetch_picture(self, url: str) -> SourceImage | None:
        """A /serve picture given as a link: fetched with the SSRF checks, then checked like a /distill one."""
        if not url:
            return None
        raw = await fetch_url(url, self.settings.fetch)
        return await asyncio.to_thread(normalize_image, raw, self.settings.image)

    async def _store_generation(
        self,
        requester: Requester,
        params: GenerateParams,
        adapt: list[SourceImage | None],
        init: SourceImage | None,
        idempotency_key: str,
        request_hash: str,
        face: SourceImage | None = None,
    ) -> Submitted:
        job_id = new_job_id()
        inputs: list[tuple[str, bytes, str]] = []
        for number, (use, fetched) in enumerate(zip(params.adapts, adapt, strict=True), 1):
            if fetched is not None:
                # A fetched --adapt picture is stored like any source image: the job names it, its owner sees it.
                use.image = f"{job_id}-adapt{'' if number == 1 else number}.png"
                if number > 1:
                    inputs.append((use.image, fetched.png, fetched.sha256))
        params.adapt_image = params.adapts[0].image if params.adapts else ""
        if init is not None:
            params.init_image = f"{job_id}-image.png"
            inputs.append((params.init_image, init.png, init.sha256))
        if face is not None:
            params.adapt_face = f"{job_id}-adaptface.png"
            inputs.append((params.adapt_face, face.png, face.sha256))
        job = Job(
            id=job_id,
            lora_name="",
            owner=requester,
            source="serve",
            image_name=params.adapt_image,
            requested_class=None,
            flip=False,
            train_steps=0,
            created_at=self.clock(),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            kind=JobKind.GENERATE,
            generate=params,
            inputs=[name for name, _, _ in inputs],
        )
        position = len(self.queue) + 1
        images = "an image" if params.count == 1 else f"{params.count} images"
        what = f"Upscaling {params.upscale_image}" if params.upscale_image else f"Generating {images}"
        text = f"{what}; you are number {position} in the queue."
        first = self.journal.new_event(job, text, 1, "accepted", queue_position=position, job_kind=job.kind)
        picture = adapt[0] if adapt else None
        png, sha256 = (picture.png, picture.sha256) if picture is not None else (None, "")
        stored = await asyncio.to_thread(self.store.create_job, job, first, png, sha256, inputs)
        if stored.id != job.id:
            return self._duplicate(stored, request_hash)
        submitted = self._queued(stored, position)
        log.info("job %s: generation of %d image(s) accepted, position %d", job.id, params.count, position)
        return submitted

    async def import_regularization(
        self, requester: Requester, subject_class: SubjectClass | None, photos: AsyncIterator[bytes]
    ) -> Submitted:
        """Queue an operator's photos to become the regularization set of a class (CLI only).

        Each photo is validated and normalised as it arrives, as an upload to /distill is, so only the small
        normalised PNGs are held; one bad photo refuses the whole import with its number, so the set is never
        silently smaller than the folder.
        """
        self._check_ready()
        _check_requester(requester)
        if requester.platform != "cli":
            raise Forbidden("Only an operator, with the distillery CLI, can import regularization photos.")
        if subject_class is None:
            raise BadInput("Say which class the photos show: man, woman or person.")
        job_id = new_job_id()
        images: list[tuple[str, bytes, str]] = []
        async for raw in photos:
            number = len(images) + 1
            if number > MAX_PHOTOS:
                raise BadInput(f"Import at most {MAX_PHOTOS} photos at a time.")
            try:
                image = await asyncio.to_thread(normalize_image, raw, self.settings.image)
            except BadInput as error:
                raise type(error)(f"Photo {number}: {error}") from None
            images.append((f"{job_id}-reg-{number}.png", image.png, image.sha256))
        if len(images) < MIN_PHOTOS:
            raise BadInput(f"Import at least {MIN_PHOTOS} photos ({len(images)} sent).")
        async with self._admit:
            await asyncio.to_thread(self._check_capacity, requester)
            job = Job(
                id=job_id,
                lora_name="",
                owner=requester,
                source="reg import",
                image_name="",
                requested_class=subject_class,
                flip=False,
                train_steps=0,
                created_at=time.time(),
                kind=JobKind.REG_IMPORT,
                inputs=[name for name, _, _ in images],
            )
            position = len(self.queue) + 1
            text = f"Importing {len(images)} photos of a {subject_class}; you are number {position} in the queue."
            first = self.journal.new_event(job, text, 1, "accepted", queue_position=position, job_kind=job.kind)
            stored = await asyncio.to_thread(self.store.create_job, job, first, None, "", images)
            submitted = self._queued(stored, position)
            log.info("job %s: import of %d %s photos accepted", job.id, len(images), subject_class)
            return submitted

    def _queued(self, job: Job, position: int) -> Submitted:
        """A stored job goes to the worker: its first event is announced and its place in the queue kept.

        From here on, every log line of this request carries the job id.
        """
        assert self.worker is not None  # _check_ready passed before anything was stored
        logs.current_job.set(job.id)
        self.hub.publish(job.id, 1)
        self.worker.note_position(job.id, position)
        self.queue.push(job.id)
        return Submitted(job=job, position=position, duplicate=False)

    async def _earlier(self, requester: Requester, idempotency_key: str, request_hash: str) -> Submitted | None:
        """The job this idempotency key already made (a redelivery), or None when the key is new or empty.

        Checked once before any fetch (cheap early answer) and again under the admission lock (the one that
        holds); a key reused for a different request raises Conflict.
        """
        if not idempotency_key:
            return None
        existing = await asyncio.to_thread(self.store.find_idempotent, requester.owner_key, idempotency_key)
        return None if existing is None else self._duplicate(existing, request_hash)

    def _duplicate(self, job: Job, request_hash: str) -> Submitted:
        if job.request_hash != request_hash:
            raise Conflict("That request id was already used for a different request.")
        return Submitted(job=job, position=self.queue.position(job.id), duplicate=True)

    def _check_capacity(self, requester: Requester) -> None:
        if len(self.queue) >= self.settings.queue_limit:
            raise Exhausted(f"The queue is full ({self.settings.queue_limit} jobs waiting); try again later.")
        # One counter read, however many jobs the store holds: admission time must not grow with history.
        mine = self.store.active_count(requester.owner_key)
        if mine >= self.settings.user_active_limit:
            raise Exhausted(
                f"You already have {mine} jobs queued or running; wait for one to finish or cancel one."
            )

    def quota_use(self, requester: Requester) -> QuotaUse:
        """The requester's images and distillations today, and what is left of the daily quotas."""
        now = self.clock()
        if not (self.settings.quota.images or self.settings.quota.distills):
            return quota.usage([], self.settings.quota, now)
        return quota.usage(self._todays_jobs(requester, now), self.settings.quota, now)

    def _todays_jobs(self, requester: Requester, now: float) -> list[Job]:
        """The requester's jobs back to the start of today (UTC), newest first, from the store's owner index:
        the read grows with what this user did today, not with the store's history."""
        since = quota.next_reset(now) - 86_400
        limit = 64
        while True:
            jobs = self.store.list_jobs(requester.owner_key, None, False, limit)
            if len(jobs) < limit or jobs[-1].created_at < since:
                return jobs
            limit *= 4

    def _check_quota(self, requester: Requester, images: int, distills: int) -> None:
        if self.settings.quota.images or self.settings.quota.distills:
            quota.check(self.quota_use(requester), self.clock(), images=images, distills=distills)

    async def _source_bytes(self, spec: SubmitSpec) -> bytes:
        if spec.upload is not None:
            return spec.upload
        if spec.url:
            return await fetch_url(spec.url, self.settings.fetch)
        meta = await asyncio.to_thread(self.store.get_image_meta, spec.image_name)
        if meta.owner_key != spec.requester.owner_key:
            raise NotFound(f"There is no stored image {spec.image_name}.")
        return await asyncio.to_thread(self.store.get_image, spec.image_name)

    # -- jobs -----------------------------------------------------------------------------------------------

    def visible_job(self, job_id: str, requester: Requester) -> Job:
        """The job if requester may see it: its owner, or the owner's platform acting for its users."""
        try:
            job = self.store.get_job(job_id)
        except NotFound:
            raise NotFound(f"There is no job {job_id}.") from None
        platform_wide = not requester.user and requester.platform == job.owner.platform
        if not (requester.owns(job.owner) or platform_wide):
            raise NotFound(f"There is no job {job_id}.")
        return job

    async def watch(self, job_id: str, after_seq: int, requester: Requester) -> AsyncIterator[Event]:
        """Events after after_seq from the log, then live ones, until the job's final event."""
        logs.current_job.set(job_id)
        job = await asyncio.to_thread(self.visible_job, job_id, requester)
        # Sequence numbers count events; a larger after_seq (up to uint64's end) just means "nothing to replay".
        last = min(after_seq, MAX_SEQ)
        while True:
            events = await asyncio.to_thread(self.store.events_after, job_id, last)
            for event in events:
                yield event
                last = event.seq
                if event.kind == "finished":
                    return
            if events:
                continue
            job = await asyncio.to_thread(self.store.get_job, job_id)
            if job.state.finished and job.last_seq <= last:
                return
            await self.hub.wait_beyond(job_id, last, WATCH_POLL_S)

    def list_jobs(self, requester: Requester, active_only: bool, whole_platform: bool, limit: int) -> list[Job]:
        """A user's jobs, newest first; or, for a frontend re-attaching, every job of its platform."""
        if whole_platform:
            if requester.user:
                raise BadInput("Only a frontend (no user) may list a whole platform's jobs.")
            return self.store.list_jobs(None, requester.platform, active_only, limit or 50)
        _check_requester(requester)
        return self.store.list_jobs(requester.owner_key, None, active_only, limit or 50)

    def cancel(self, job_id: str, requester: Requester) -> Job:
        """Cancel a queued job at once, or a running one at its next step."""
        logs.current_job.set(job_id)
        job = self.visible_job(job_id, requester)
        if job.state.finished:
            raise Conflict(f"That job already ended ({job.state.value}).")
        if self.worker is None:
            raise Unavailable("The distillery is still loading its models; try again in a minute.")
        outcome = self.worker.cancel(job_id)
        if outcome == "removed":
            job, _ = self.journal.finish(job_id, _cancelled, "Cancelled before it started.")
            self.worker.announce_positions()
            log.info("job %s: cancelled while queued", job_id)
        elif outcome == "stopping":
            job, _ = self.journal.change(job_id, None, "Cancelling: the job stops at its next step.")
            log.info("job %s: cancel requested while running", job_id)
        else:
            job = self.store.get_job(job_id)
        return job

    def set_client_state(self, job_id: str, requester: Requester, state: bytes) -> Job:
        """Store a frontend's re-attach note on the job."""
        if len(state) > MAX_CLIENT_STATE:
            raise BadInput(f"Client state is limited to {MAX_CLIENT_STATE} bytes.")
        self.visible_job(job_id, requester)
        return self.journal.set_client_state(job_id, state)

    # -- LoRAs and images -----------------------------------------------------------------------------------

    def get_lora(self, name: str, requester: Requester) -> LoraRecord:
        """A LoRA its requester owns, or a public one."""
        try:
            lora = self.store.get_lora(name)
        except NotFound:
            raise NotFound(f"There is no LoRA called {name}.") from None
        if not (lora.public or requester.owns(lora.owner)):
            raise NotFound(f"There is no LoRA called {name}.")
        return lora

    def _owned_lora(self, name: str, requester: Requester) -> LoraRecord:
        """A LoRA the requester may change: NotFound when they cannot see it, Forbidden when it is not theirs."""
        _check_requester(requester)
        lora = self.get_lora(name, requester)
        if not requester.owns(lora.owner):
            raise Forbidden(f"Only the owner of {name} can change or delete it.")
        return lora

    def update_lora(
        self,
        name: str,
        requester: Requester,
        public: bool | None = None,
        description: str | None = None,
        show_image: bool | None = None,
    ) -> LoraRecord:
        """Change what the owner may change: visibility, description, whether others see the source image."""
        self._owned_lora(name, requester)
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise BadInput(f"A description is limited to {MAX_DESCRIPTION} characters.")

        def mutate(lora: LoraRecord) -> None:
            if public is not None:
                lora.public = public
            if description is not None:
                lora.description = description.strip()
            if show_image is not None:
                lora.show_image = show_image

        lora = self.store.update_lora(name, mutate)
        log.info("LoRA %s: public=%s show_image=%s", name, lora.public, lora.show_image)
        return lora

    def delete_lora(self, name: str, requester: Requester) -> bool:
        """Delete the requester's LoRA and its source image; True when the image went too."""
        self._owned_lora(name, requester)
        image_deleted = self.store.delete_lora(name)
        log.info("LoRA %s: deleted by its owner", name)
        return image_deleted

    def user_stats(self, requester: Requester) -> UserStats:
        """The requester's counters, kept by the store as their jobs and LoRAs change."""
        _check_requester(requester)
        counts = self.store.owner_counts(requester.owner_key)
        return UserStats(
            loras_owned=counts.loras,
            public_loras=counts.public_loras,
            distill_jobs=counts.distill_jobs,
            generate_jobs=counts.generate_jobs,
            images_generated=counts.images,
            today=self.quota_use(requester),
        )

    def prune_events(self, requester: Requester, older_than_days: int) -> Pruned:
        """Operator only: drop the event logs of jobs that ended more than ``older_than_days`` days ago."""
        _check_requester(requester)
        if requester.platform != "cli":
            raise Forbidden("Only an operator, with the distillery CLI, can prune event logs.")
        if older_than_days < 1:
            raise BadInput("Say how many days of event logs to keep: at least 1.")
        return self.store.prune_events(time.time() - older_than_days * 86400)

    def list_loras(self, requester: Requester, include_public: bool) -> list[LoraRecord]:
        """The requester's LoRAs, and public ones when asked."""
        _check_requester(requester)
        return [
            lora for lora in self.store.loras() if requester.owns(lora.owner) or (include_public and lora.public)
        ]

    def lora_file(self, name: str, requester: Requester) -> bytes:
        self.get_lora(name, requester)
        return self.store.lora_file(name)

    def visible_image(self, name: str, requester: Requester) -> StoredImage:
        """A stored image the requester may see: their own, or the source image of a public LoRA whose owner
        chose to show it."""
        missing = NotFound(f"There is no stored image {name}.")
        try:
            meta = self.store.get_image_meta(name)
        except NotFound:
            raise missing from None
        if meta.owner_key == requester.owner_key:
            return meta
        if not meta.generated and name.endswith(".png"):
            try:
                lora = self.store.get_lora(name.removesuffix(".png"))
            except NotFound:
                raise missing from None
            if lora.public and lora.show_image and lora.image_name == name:
                return meta
        raise missing

    def image(self, name: str, requester: Requester) -> bytes:
        """A stored image's PNG bytes, for whoever may see it."""
        self.visible_image(name, requester)
        return self.store.get_image(name)

    def image_info(self, name: str, requester: Requester) -> tuple[StoredImage, int, int]:
        """The image's record and its pixel size (read from the PNG header)."""
        meta = self.visible_image(name, requester)
        if meta.generated:
            return meta, *meta.pixels
        with open_png(self.store.get_image(name)) as picture:
            return meta, picture.width, picture.height

    def status(self) -> StatusReport:
        """Readiness, queue, models and every worker with what it runs."""
        workers = self.worker.workers() if self.worker is not None else []
        current: Job | None = None
        for running in (worker.job_id for worker in workers if worker.job_id):
            try:
                current = self.store.get_job(running)
                break
            except NotFound:  # finished and gone between the two reads
                continue
        return StatusReport(
            ready=self.ready,
            queue_length=len(self.queue),
            current_job=current,
            base_model=self.base_model,
            captioner_model=self.captioner_model,
            device=self.device,
            preset=self.settings.models.preset,
            jobs_done=self.store.counter("jobs_succeeded"),
            uptime_seconds=time.time() - self.started_at,
            models=list(self.generation.models) if self.generation else [],
            workers=workers,
        )


def _failed(reason: str) -> Callable[[Job], None]:
    def mutate(job: Job) -> None:
        job.state = JobState.FAILED
        job.error = reason

    return mutate


def _requeued(job: Job) -> None:
    job.state = JobState.QUEUED
    job.stage = Stage.QUEUED


def _cancelled(job: Job) -> None:
    job.state = JobState.CANCELLED
    job.error = "Cancelled by its owner."
