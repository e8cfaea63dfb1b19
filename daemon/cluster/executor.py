"""The ``ray`` executor: one actor per GPU across a Ray cluster, each running one job at a time.

The daemon is a Ray driver (not Ray Client, which cannot stream) and stays the only control plane: it keeps
the durable queue, reads each job's inputs from the store before dispatch, records every message the actor
streams back through the journal, and stores the outcome. Large inputs travel as object references, put once
per LoRA file or regularization set and reused by every job that needs the same one.

Faults:

* An actor that dies mid-job (SIGKILL, a lost machine): the job goes back to the front of the queue, or fails
  after ``max_attempts`` such runs, the rule a daemon crash follows; Ray restarts the actor
  (``max_restarts=-1``) and the slot takes jobs again once it describes itself anew. Ray never re-runs a task
  itself (``max_task_retries=0``): the daemon decides.
* Cancel: ``ray.cancel`` on the job's stream; the pipeline stops at its next step and the actor takes the next
  job.
* The daemon killed: its actors are not detached, so they die with it, and the jobs are recovered from the
  store at the next start like after any crash.
* GPUs joining or leaving: a periodic reconcile compares the actors with the cluster's resources and adds or
  removes actors.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import gc
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import logs
from daemon.errors import DistilleryError, Unavailable
from daemon.jobs.contract import Ending, JobInputs, Outcome
from daemon.jobs.executor import JobRun, Positions, WorkerState, WorkerStatus
from daemon.jobs.inputs import RegKey, read_inputs
from daemon.jobs.journal import Journal
from daemon.jobs.model import Job
from daemon.jobs.queue import JobQueue
from daemon.pipeline.runner import WorkerFacts
from daemon.settings import Settings
from daemon.store.lmdb_store import Store

log = logging.getLogger(__name__)

# The custom resource a CPU worker (--ray-workers N) takes one unit of; machines offer it with
# ``ray start --resources '{"distillery_worker": N}'`` (a local Ray gets N of it).
CPU_WORKER_RESOURCE = "distillery_worker"
# How often the actors are compared with the cluster's GPUs (or worker slots).
RECONCILE_S = 10.0
# Asking a restarting actor again: first after this long, then twice as long each time, up to the maximum.
REVIVE_FIRST_S = 0.5
REVIVE_MAX_S = 5.0
# Object references kept for reuse: LoRA files and regularization sets.
MAX_REFS = 64


@dataclass
class Slot:
    """One actor as the daemon tracks it."""

    id: str
    actor: Any  # ray.actor.ActorHandle
    state: WorkerState = WorkerState.STARTING
    job_id: str = ""
    run: JobRun | None = None
    stream: Any = None  # the running job's ObjectRefGenerator
    node: str = ""
    pid: int = 0
    device: str = ""


def plan(desired: int, states: list[tuple[str, WorkerState]]) -> tuple[int, list[str]]:
    """How many actors to add and which to remove so that ``desired`` remain.

    Lost actors go first (their GPU may be gone with its machine), then starting and idle ones; a busy actor
    is never removed: its job finishes and a later reconcile takes it.
    """
    if len(states) <= desired:
        return desired - len(states), []
    order = (WorkerState.LOST, WorkerState.STARTING, WorkerState.IDLE)
    removable = [slot for state in order for slot, current in states if current == state]
    return 0, removable[: len(states) - desired]


class RefBlobs:
    """LoRA files and regularization sets as object references, put once and reused."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._refs: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def lora(self, name: str) -> Any:
        """The LoRA's file as a reference; NotFound when it was deleted (a name is never reused)."""
        self._store.get_lora(name)
        return self._ref(f"lora/{name}", lambda: self._store.lora_file(name))

    def reg_set(self, key: str) -> Any | None:
        """The set as a reference, or None when none is stored."""
        data = self._cached(f"reg/{key}")
        if data is not None:
            return data
        stored = self._store.get_reg_set(key)
        return None if stored is None else self._ref(f"reg/{key}", lambda: stored)

    def clear(self) -> None:
        """Drop every reference (before Ray shuts down)."""
        with self._lock:
            self._refs.clear()

    def replaced(self, key: str) -> None:
        """A job stored a new set under ``key``: the old reference is stale."""
        with self._lock:
            self._refs.pop(f"reg/{key}", None)

    def _cached(self, key: str) -> Any | None:
        with self._lock:
            ref = self._refs.get(key)
            if ref is not None:
                self._refs.move_to_end(key)
            return ref

    def _ref(self, key: str, read: Callable[[], bytes]) -> Any:
        import ray

        cached = self._cached(key)
        if cached is not None:
            return cached
        ref = ray.put(read())
        with self._lock:
            self._refs[key] = ref
            while len(self._refs) > MAX_REFS:
                self._refs.popitem(last=False)
        return ref


# A private Ray's start-up (its GCS, raylet and agents) is tried this often before the daemon gives up: on a
# machine whose cores are busy, Ray's fixed 30 s waits for its own processes can pass once and then hold.
LOCAL_START_TRIES = 3
# Ray runs its worker processes at nice 15 by default. A worker here is the process that feeds its GPU (or,
# with --ray-workers, does the job itself), so it must not starve behind whatever else the machine runs.
WORKER_NICENESS = 0


def connect(settings: Settings) -> None:
    """Join the cluster as a driver, or start a private one-machine Ray (``--ray-address local``)."""
    import ray

    if settings.ray_address != "local":
        ray.init(address=settings.ray_address, configure_logging=False)
    else:
        folder = settings.ray_temp_dir or settings.state_dir / "ray"
        resources = {CPU_WORKER_RESOURCE: float(settings.ray_workers)} if settings.ray_workers else None
        for attempt in range(1, LOCAL_START_TRIES + 1):
            try:
                ray.init(
                    address="local",
                    resources=resources,
                    include_dashboard=False,
                    object_store_memory=settings.ray_object_store_mb * 1024 * 1024,
                    configure_logging=False,
                    _temp_dir=str(folder),
                    _system_config={"worker_niceness": WORKER_NICENESS, "enable_worker_prestart": False},
                )
                break
            except Exception as error:
                # Ray raises plain Exception for its start-up time-outs; whatever it started goes first.
                ray.shutdown()
                if attempt == LOCAL_START_TRIES:
                    raise
                log.warning("the private Ray did not start (try %d of %d): %s", attempt, LOCAL_START_TRIES, error)
    log.info("joined Ray at %s: %s", settings.ray_address, ray.cluster_resources())  # type: ignore[no-untyped-call]


def _private_ray_folder(settings: Settings) -> Path:
    """Prepare the private Ray's folder: its session logs and sockets, and its own token (Ray's token
    authentication, on for every private Ray), instead of /tmp/ray and ~/.ray.

    Ray reads these from the environment of the daemon and of every process it starts, once, when it is
    first imported: call this before that.
    """
    folder = settings.ray_temp_dir or settings.state_dir / "ray"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = folder / "auth_token"
    if not token.exists():
        descriptor = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    # A self-hosted daemon reports nothing about itself to Ray's usage statistics service.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    return folder


class RayExecutor:
    """Dispatches queued jobs to idle actors and records what they stream back."""

    def __init__(
        self, queue: JobQueue, journal: Journal, store: Store, settings: Settings, max_attempts: int
    ) -> None:
        self._queue = queue
        self._journal = journal
        self._store = store
        self._settings = settings
        self._max_attempts = max_attempts
        self._positions = Positions(queue, journal)
        self._blobs = RefBlobs(store)
        self._slots: dict[str, Slot] = {}
        self._next_slot = 0
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reg_key: RegKey | None = None
        self._actor_class: Any = None

    # -- start ----------------------------------------------------------------------------------------------

    async def open(self) -> WorkerFacts:
        """Connect to Ray, start the actors, and return the first ready one's facts (all run the same models)."""
        if self._settings.ray_address == "local":
            _private_ray_folder(self._settings)
        try:
            import ray
        except ImportError:
            raise SystemExit(
                "--executor ray needs Ray: pip install 'lora-distillery[cluster]' (the same version everywhere)"
            ) from None
        from daemon.cluster.actor import WorkerActor

        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(connect, self._settings)
        if self._settings.ray_workers:
            options: dict[str, Any] = {"num_cpus": 0, "resources": {CPU_WORKER_RESOURCE: 1}}
        else:
            options = {"num_gpus": 1}
        remote: Any = ray.remote
        # describe answers from its own thread while a job runs in the default group.
        self._actor_class = remote(concurrency_groups={"control": 1})(WorkerActor).options(
            max_restarts=-1, max_task_retries=0, **options
        )
        desired = await asyncio.to_thread(self._desired)
        if desired < 1:
            raise SystemExit(
                "the Ray cluster offers no GPU (start GPU machines with `ray start --address ... --num-gpus N`), "
                "or pass --ray-workers N for CPU workers"
            )
        for _ in range(desired):
            self._add_slot()
        slots = list(self._slots.values())
        facts = await self._first_ready(slots)
        self._reg_key = facts.reg_key(self._settings.train.resolution)
        self._queue.listen(self._wake_threadsafe)
        return facts

    async def _first_ready(self, slots: list[Slot]) -> WorkerFacts:
        pending = {asyncio.ensure_future(self._describe(slot)): slot for slot in slots}
        first: WorkerFacts | None = None
        while pending and first is None:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                pending.pop(future)
                if future.exception() is None:
                    first = first or future.result()
                else:
                    log.warning("a worker failed to start: %s", future.exception())
        for future in pending:
            # The rest finish loading in the background and take jobs when they are ready.
            future.add_done_callback(lambda f: f.exception())
        if first is None:
            raise Unavailable("no worker could load the models; see the Ray worker logs")
        return first

    async def _describe(self, slot: Slot) -> WorkerFacts:
        facts: WorkerFacts = await slot.actor.describe.options(concurrency_group="control").remote()
        slot.node, slot.pid, slot.device = facts.node, facts.pid, facts.device
        self._set_idle(slot)
        log.info("worker %s ready on %s (pid %d, %s)", slot.id, slot.node, slot.pid, slot.device)
        return facts

    def _add_slot(self) -> Slot:
        # The API token stays on this machine: a worker has no use for it.
        settings = dataclasses.replace(self._settings, token=None)
        slot = Slot(id=f"ray-{self._next_slot}", actor=self._actor_class.remote(settings))
        self._next_slot += 1
        self._slots[slot.id] = slot
        return slot

    def start(self) -> None:
        """Begin dispatching, and reconciling the actors with the cluster."""
        self._spawn(self._dispatch())
        self._spawn(self._reconcile_forever())

    def _spawn(self, coro: Any) -> None:
        # A task of its own context: one spawned while a job's task runs (a revive after that job's worker
        # died) must not log with that job's id.
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- control from the gRPC side -------------------------------------------------------------------------

    def cancel(self, job_id: str) -> str | None:
        """Take a queued job out, or cancel the running one's stream (it stops at its next step)."""
        import ray

        with self._lock:
            if self._queue.remove(job_id):
                self._positions.forget(job_id)
                return "removed"
            slot = next((s for s in self._slots.values() if s.job_id == job_id), None)
            if slot is None:
                return None
            self._cancelled.add(job_id)
            stream = slot.stream
        if stream is not None:
            ray.cancel(stream)
        return "stopping"

    def note_position(self, job_id: str, position: int) -> None:
        self._positions.note(job_id, position)

    def announce_positions(self) -> None:
        self._positions.announce()

    def workers(self) -> list[WorkerStatus]:
        """Every actor, with its job and that job's stage."""
        with self._lock:
            slots = list(self._slots.values())
        found = []
        for slot in slots:
            run = slot.run
            stage = run.ctx.job.stage if run is not None and run.ctx is not None else None
            state = WorkerState.STOPPING if self._stopping and slot.job_id else slot.state
            found.append(
                WorkerStatus(slot.id, slot.device, state, slot.job_id, stage, node=slot.node, pid=slot.pid)
            )
        return found

    def stop(self, timeout: float) -> bool:
        """Stop taking jobs; running ones are cancelled and go back to the queue; the actors go with Ray.

        Called off the event loop, like the local worker's stop.
        """
        assert self._loop is not None, "open() first"
        return asyncio.run_coroutine_threadsafe(self._stop(timeout), self._loop).result()

    async def _stop(self, timeout: float) -> bool:
        import ray

        self._stopping = True
        self._queue.close()
        self._wake.set()
        with self._lock:
            streams = [slot.stream for slot in self._slots.values() if slot.stream is not None]
        for stream in streams:
            ray.cancel(stream)
        running = [task for task in self._tasks if task.get_name().startswith("job-")]
        _, pending = await asyncio.wait(running, timeout=timeout) if running else (set(), set())
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Every handle and reference goes before Ray does: one collected after shutdown would call into a
        # core worker that no longer exists.
        with self._lock:
            self._slots.clear()
        self._blobs.clear()
        self._actor_class = None
        del streams
        gc.collect()
        await asyncio.to_thread(ray.shutdown)
        return not pending

    # -- dispatch -------------------------------------------------------------------------------------------

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _set_idle(self, slot: Slot) -> None:
        with self._lock:
            slot.state = WorkerState.IDLE
            slot.job_id = ""
            slot.run = None
            slot.stream = None
        self._wake.set()

    async def _dispatch(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            while not self._stopping:
                with self._lock:
                    slot = next((s for s in self._slots.values() if s.state == WorkerState.IDLE), None)
                    job_id = self._queue.pop_nowait() if slot is not None else None
                    if slot is None or job_id is None:
                        break
                    slot.state = WorkerState.BUSY
                    slot.job_id = job_id
                self._positions.forget(job_id)
                task = asyncio.ensure_future(self._run(slot, job_id))
                task.set_name(f"job-{job_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if not self._stopping:
                await asyncio.to_thread(self._positions.announce)

    async def _run(self, slot: Slot, job_id: str) -> None:
        import ray
        from ray.exceptions import RayError, TaskCancelledError

        logs.current_job.set(job_id)
        # The actor checks for cancellation; on this side a report is only ever recorded.
        run = JobRun(self._journal, job_id, lambda: False, lambda: job_id in self._cancelled)
        slot.run = run
        try:
            if not await self._ready(slot) and job_id not in self._cancelled:
                # Dead or restarting before the job began: it goes back first in line, no attempt spent,
                # and waits for a worker that answers.
                self._not_started(slot, job_id)
                return
            ctx = await asyncio.to_thread(run.begin)
            try:
                inputs = await asyncio.to_thread(self._inputs, ctx.job)
            except DistilleryError as error:
                await asyncio.to_thread(run.end, Ending(stopped=False, reason=str(error)))
                return
            stream = slot.actor.run.options(num_returns="streaming").remote(ctx.job, inputs)
            with self._lock:
                slot.stream = stream
                cancel_now = job_id in self._cancelled or self._stopping
            if cancel_now:
                ray.cancel(stream)
            last: tuple[str, Any] | None = None
            received = 0
            try:
                async for ref in stream:
                    kind, payload = await ref
                    received += 1
                    if kind in ("outcome", "ending"):
                        last = (kind, payload)
                    else:
                        await asyncio.to_thread(getattr(ctx, kind), *payload)
            except TaskCancelledError:
                last = ("ending", Ending(stopped=True))
            except RayError as error:
                if received == 0 and job_id not in self._cancelled:
                    # The actor was gone before the job's first step: this run never happened.
                    log.info("worker %s was not ready for job %s: %s", slot.id, job_id, type(error).__name__)
                    await asyncio.to_thread(run.not_started)
                    self._not_started(slot, job_id)
                    return
                # The actor died (killed, its machine gone) or its stream broke: the job did not end here.
                await self._lost(slot, run, error)
                return
            await asyncio.to_thread(self._finish, run, last)
        except Exception:
            log.exception("job %s: the executor failed to record the job's end", job_id)
        finally:
            with self._lock:
                self._cancelled.discard(job_id)
            if slot.state == WorkerState.BUSY:
                self._set_idle(slot)

    async def _ready(self, slot: Slot) -> bool:
        """Whether the slot's actor answers: a restarting or dead one raises before any job reaches it."""
        from ray.exceptions import RayError

        try:
            await slot.actor.describe.options(concurrency_group="control").remote()
        except RayError as error:
            log.info("worker %s is not ready for the job: %s", slot.id, type(error).__name__)
            return False
        return True

    def _not_started(self, slot: Slot, job_id: str) -> None:
        """The job goes back to the front of the queue untouched; the slot waits for Ray to restart its actor."""
        self._queue.push_front(job_id)
        with self._lock:
            slot.state = WorkerState.LOST
            slot.job_id = ""
            slot.run = None
            slot.stream = None
        self._spawn(self._revive(slot))

    def _inputs(self, job: Job) -> JobInputs[Any]:
        assert self._reg_key is not None  # set by open()
        return read_inputs(self._store, job, self._blobs, self._reg_key)

    def _finish(self, run: JobRun, last: tuple[str, Any] | None) -> None:
        if last is None:
            run.end(Ending(stopped=False, reason="The worker ended the job without a result.", crashed=True))
            return
        kind, payload = last
        if kind == "outcome":
            outcome: Outcome = payload
            run.succeed(outcome)
            if outcome.reg_set is not None:
                self._blobs.replaced(outcome.reg_set.key)
        else:
            run.end(payload)

    async def _lost(self, slot: Slot, run: JobRun, error: Exception) -> None:
        """The actor died under the job: requeue it first (or fail it), and take the actor back once Ray has
        restarted it."""
        log.warning("worker %s (pid %d) died while running job %s: %s", slot.id, slot.pid, run.job_id, error)
        with self._lock:
            slot.state = WorkerState.LOST
            slot.job_id = ""
            slot.run = None
            slot.stream = None
        if await asyncio.to_thread(run.lost, self._max_attempts):
            self._queue.push_front(run.job_id)
        self._spawn(self._revive(slot))

    async def _revive(self, slot: Slot) -> None:
        """Wait for Ray to bring the actor back (a new process loading its models), then take jobs again.

        A restarting actor answers "unavailable" at first: ask again until it answers, until a reconcile
        removed it, or until the daemon stops.
        """
        from ray.exceptions import RayError

        delay = REVIVE_FIRST_S
        while not self._stopping and self._slots.get(slot.id) is slot:
            try:
                await self._describe(slot)
                return
            except RayError as error:
                log.info("worker %s is not back yet: %s", slot.id, type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REVIVE_MAX_S)

    # -- reconcile ------------------------------------------------------------------------------------------

    def _desired(self) -> int:
        import ray

        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        if self._settings.ray_workers:
            return min(self._settings.ray_workers, int(resources.get(CPU_WORKER_RESOURCE, 0)))
        return int(resources.get("GPU", 0))

    async def _reconcile_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RECONCILE_S)
            try:
                await self.reconcile(await asyncio.to_thread(self._desired))
            except Exception:
                log.exception("reconciling the workers with the cluster failed")

    async def reconcile(self, desired: int) -> None:
        """Add or remove actors so that ``desired`` remain (GPUs joined or left the cluster)."""
        import ray

        with self._lock:
            states = [(slot.id, slot.state) for slot in self._slots.values()]
        add, remove = plan(desired, states)
        for slot_id in remove:
            with self._lock:
                slot = self._slots.pop(slot_id)
            ray.kill(slot.actor, no_restart=True)
            log.info("worker %s removed: the cluster has %d worker places", slot_id, desired)
        for _ in range(add):
            slot = self._add_slot()
            log.info("worker %s added: the cluster has %d worker places", slot.id, desired)
            self._spawn(self._revive(slot))
