"""Server lifecycle: bind, load the models once, recover jobs, serve, and stop gracefully on SIGTERM.

The socket is bound and health answers NOT_SERVING before the models load (which takes minutes with real
weights), so operators and frontends can tell "starting" from "down". Once the models are resident (in the
daemon for the local executor, in the Ray actors for the ray executor) the executor starts, health turns
SERVING and systemd hears READY=1.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import signal
import socket
import stat
from pathlib import Path

import grpc
from aiohttp import web
from distillery.v1 import distillery_pb2 as pb
from distillery.v1 import distillery_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from daemon.jobs.contract import JobInputs
from daemon.jobs.executor import Executor
from daemon.jobs.hub import EventHub
from daemon.jobs.inputs import StoreBlobs, read_inputs
from daemon.jobs.journal import Journal
from daemon.jobs.model import Job
from daemon.jobs.queue import JobQueue
from daemon.jobs.worker import Worker
from daemon.metrics import MetricsSource, start_metrics
from daemon.models.resident import Resident, load_resident, resolve_model_config
from daemon.pipeline.name import NameMinter
from daemon.pipeline.runner import WorkerFacts, build_runner
from daemon.pipeline.serve_request import GenerationDefaults
from daemon.rpc.auth import TokenInterceptor
from daemon.rpc.guard import GuardInterceptor
from daemon.rpc.servicer import DistilleryServicer
from daemon.service import Distillery
from daemon.settings import Settings
from daemon.store.lmdb_store import Store

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Distillery"].full_name
# A job interrupted by this many daemon crashes is failed instead of re-queued again.
MAX_ATTEMPTS = 2
# Uploads arrive in chunks, but allow generous single messages for clients that send one big chunk.
MAX_MESSAGE = 32 * 1024 * 1024


def load_models(settings: Settings) -> Resident:
    """Load every model once; the demo preset builds its tiny models first if they are not there yet."""
    config = resolve_model_config(settings.models, settings.state_dir)
    return load_resident(config)


def _notify_systemd(message: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET when systemd started us."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def _socket_gid(group: str | None) -> int:
    """The numeric id of --socket-group, or -1 (chown's "leave as is")."""
    if group is None:
        return -1
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SystemExit(f"--socket-group {group!r}: no such group") from None


def _prepare_socket(path: Path, gid: int, state_dir: Path) -> None:
    folder = path.parent
    created = not folder.exists()
    if created:
        folder.mkdir(parents=True)
    # The socket's own folder becomes owner + group only, so no other user can reach the socket even in the
    # moment between its creation and the chmod below. Only a folder that is ours to lock down, though: one
    # made just now, the state folder, or one holding nothing but the socket (/run/distillery); never a shared
    # folder such as /tmp, /run or a home folder that a --socket flag happens to point into.
    dedicated = created or folder.resolve() == state_dir or set(os.listdir(folder)) <= {path.name}
    if dedicated and not folder.stat().st_mode & stat.S_ISVTX:
        os.chown(folder, -1, gid)
        os.chmod(folder, 0o750)
    elif folder.stat().st_mode & stat.S_IRWXO:
        log.warning("the socket's folder %s is open to other users; the socket itself is 0660", folder)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SystemExit(f"{path} exists and is not a socket; refusing to replace it")
        path.unlink()


class Daemon:
    """One daemon process: servers, store, executor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.store)
        self.queue = JobQueue()
        self.hub = EventHub(asyncio.get_running_loop())
        self.journal = Journal(self.store, self.hub)
        self.core = Distillery(settings, self.store, self.hub, self.journal, self.queue)
        self.health = health.aio.HealthServicer()
        self.servers: list[grpc.aio.Server] = []
        self.executor: Executor | None = None
        self.stopping = asyncio.Event()
        self.metrics: web.AppRunner | None = None

    def _new_server(self, interceptors: list[grpc.aio.ServerInterceptor]) -> grpc.aio.Server:
        server = grpc.aio.server(
            # After the token check, when there is one: a caller without the token learns nothing else.
            interceptors=[*interceptors, GuardInterceptor()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        pb_grpc.add_DistilleryServicer_to_server(DistilleryServicer(self.core), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        return server

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT start a graceful stop."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
            loop.add_signal_handler(signum, self.stopping.set)

    async def start(self) -> None:
        """Bind the listeners and answer NOT_SERVING until the models are loaded."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.socket is not None:
            gid = _socket_gid(self.settings.socket_group)
            _prepare_socket(self.settings.socket, gid, self.settings.state_dir)
            server = self._new_server([])
            server.add_insecure_port(f"unix:{self.settings.socket}")
            await server.start()
            # Owner and group only: the frontends run as members of the daemon's (or --socket-group's) group.
            os.chown(self.settings.socket, -1, gid)
            os.chmod(self.settings.socket, 0o660)
            self.servers.append(server)
            log.info("listening on unix:%s", self.settings.socket)
        if self.settings.tcp is not None:
            assert self.settings.token is not None  # settings refuse TCP without a token
            server = self._new_server([TokenInterceptor(self.settings.token)])
            port = server.add_insecure_port(self.settings.tcp)
            await server.start()
            self.servers.append(server)
            log.info("listening on %s (port %d), token required", self.settings.tcp, port)
        if self.settings.metrics is not None:
            self.metrics = await start_metrics(self.settings.metrics, self._metrics_source())

    def _metrics_source(self) -> MetricsSource:
        def running_stages() -> list[str]:
            workers = self.executor.workers() if self.executor is not None else []
            return [worker.stage.value for worker in workers if worker.stage is not None]

        return MetricsSource(
            store=self.store,
            queue_length=lambda: len(self.queue),
            ready=lambda: self.core.ready,
            device=lambda: self.core.device,
            running_stages=running_stages,
        )

    async def load(self) -> None:
        """Load the models (here or in the Ray actors), recover earlier jobs, start the executor, SERVING."""
        executor: Executor
        if self.settings.executor == "ray":
            from daemon.cluster.executor import RayExecutor

            cluster = RayExecutor(self.queue, self.journal, self.store, self.settings, MAX_ATTEMPTS)
            self.executor = executor = cluster
            facts = await cluster.open()
            # Ray's core worker puts its own SIGTERM handler in place of ours (and then aborts at exit).
            self.handle_signals()
        else:
            facts, executor = await asyncio.to_thread(self._local_executor)
            self.executor = executor
        self.core.base_model = facts.base_model
        self.core.captioner_model = facts.captioner_model or self.settings.models.captioner_model
        await asyncio.to_thread(self.core.recover, MAX_ATTEMPTS)
        generation = GenerationDefaults(
            resolution=facts.resolution,
            size_multiple=facts.size_multiple,
            steps=facts.sample_steps,
            adapt_available=facts.adapt_available,
            face_adapt_available=facts.face_adapt_available,
            models=tuple(name for name, _ in self.settings.models.serve_models),
        )
        self.core.attach(executor, NameMinter(facts.tokenizer), facts.device, generation=generation)
        executor.start()
        await asyncio.to_thread(executor.announce_positions)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        workers = len(executor.workers())
        log.info("ready: %s, %d worker(s), %d jobs queued", facts.base_model, workers, len(self.queue))
        _notify_systemd("READY=1")

    def _local_executor(self) -> tuple[WorkerFacts, Worker]:
        """The models loaded in this process and the one worker thread that runs every job on them."""
        resident = load_models(self.settings)
        facts = WorkerFacts.of(resident)
        settings = self.settings
        runner = build_runner(resident, settings.train, settings.reg_images, settings.lora_cache, settings.models)
        reg_key = facts.reg_key(settings.train.resolution)
        blobs = StoreBlobs(self.store)

        def inputs(job: Job) -> JobInputs[bytes]:
            return read_inputs(self.store, job, blobs, reg_key)

        worker = Worker(self.queue, self.journal, runner, MAX_ATTEMPTS, read_inputs=inputs, device=facts.device)
        return facts, worker

    async def _set_health(self, status: int) -> None:
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def stop(self) -> None:
        """Graceful stop: no new jobs, the running one to a safe point, streams closed, store closed."""
        log.info("stopping")
        _notify_systemd("STOPPING=1")
        self.core.draining = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.executor is not None:
            stopped = await asyncio.to_thread(self.executor.stop, self.settings.stop_grace)
            if not stopped:
                log.warning("the running job did not reach a safe point within %.0f s", self.settings.stop_grace)
        await asyncio.gather(*(server.stop(grace=2.0) for server in self.servers))
        if self.metrics is not None:
            await self.metrics.cleanup()
        self.store.close()
        log.info("stopped")


async def serve(settings: Settings) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    daemon = Daemon(settings)
    daemon.handle_signals()
    await daemon.start()
    loading = asyncio.create_task(daemon.load())
    stop_wait = asyncio.create_task(daemon.stopping.wait())
    done, _ = await asyncio.wait({loading, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if loading in done:
        loading.result()  # a failed model load ends the daemon with its error
        await stop_wait
    else:
        loading.cancel()
    await daemon.stop()
