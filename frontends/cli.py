"""``distillery``: the operator's command line. Distill, follow, list, cancel, download, and run the demo.

    distillery distill portrait.jpg --follow
    distillery distill https://example.org/me.jpg --class woman --noflip
    distillery watch <job id> --after 12
    distillery jobs | job <id> | cancel <id> | loras | lora <name> | download <name> | status | stats
    distillery serve --out images "a portrait as an astronaut" --lora rifttami --n 2 --seed 7
    distillery upscale <job id>-1.png --power=1.5 --upscalemethod lanczos   # larger, details drawn again
    distillery lora rifttami --makepublic | --description "..." | --showimage | --delete [--yes] | --download
    distillery info <job id>-1.png       # a generated image's parameters
    distillery reg import --class woman photos/   # an operator's photos become the class's regularization set
    distillery events prune --older-than-days 90  # drop old jobs' event logs (each keeps its final event)
    distillery demo            # start a daemon on the demo preset, distill the astronaut, stop
    distillery backup <dir> --state-dir <state>      # hot copy of the store while the daemon runs
    distillery restore <dir> --state-dir <new state> # into a fresh state folder, then start the daemon

The CLI speaks for the local user (platform "cli", user = login name) over the daemon's unix socket, or over
loopback TCP with ``--address`` and ``--token-file``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TextIO

import grpc
from distillery.v1 import distillery_pb2 as pb
from google.protobuf import json_format
from google.protobuf.message import Message

from frontends.client import DaemonClient, DaemonError
from frontends.commands import UsageError, parse_lora, parse_serve, parse_upscale
from frontends.render import (
    JobView,
    bar,
    duration,
    generation_summary,
    image_info_text,
    lora_text,
    models_text,
    stats_text,
    usage_text,
)

STATE_NAMES = {
    pb.JOB_STATE_QUEUED: "queued",
    pb.JOB_STATE_RUNNING: "running",
    pb.JOB_STATE_SUCCEEDED: "succeeded",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
}


KIND_LABELS = {pb.JOB_KIND_GENERATE: "generation", pb.JOB_KIND_REG_IMPORT: "regularization import"}
STAGE_ORDER = ("prepare", "caption", "classify", "regularization", "train", "likeness", "save", "preview")


def requester(args: argparse.Namespace) -> pb.Requester:
    return pb.Requester(platform="cli", user=args.user, chat="terminal")


class ProgressPrinter:
    """Prints events: one redrawn line per stage on a terminal, one line per event otherwise."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.live = out.isatty() and not as_json
        self.view = JobView()
        self._open_line = False

    def __call__(self, event: pb.JobEvent) -> None:
        previous_stage = self.view.stage
        self.view.apply(event)
        if self.as_json:
            self.out.write(json_format.MessageToJson(event, indent=None) + "\n")
            self.out.flush()
            return
        detail = event.WhichOneof("detail")
        if detail == "progress":
            p = event.progress
            line = f"  {bar(p.step, p.total, 24)} {p.step}/{p.total}"
            if p.loss:
                line += f"  loss {p.loss:.4f}"
            if p.step < p.total:
                line += f"  ETA {duration(p.eta_seconds)}"
            self._write(line, redraw=self.live)
            return
        if self._open_line and (event.stage != previous_stage or detail != "progress"):
            self.out.write("\n")
            self._open_line = False
        if detail == "accepted" and event.accepted.kind == pb.JOB_KIND_REG_IMPORT:
            self._write(f"{event.text}  (job {event.job_id})")
        elif detail == "accepted" and self.view.generating:
            self._write(f"Job {event.job_id}, queue position {event.accepted.queue_position}")
        elif detail == "accepted":
            self._write(f"LoRA name: {event.accepted.lora_name}  (job {event.job_id})")
            self._write(f"Queue position: {event.accepted.queue_position}")
        elif detail == "finished":
            self._finished()
        else:
            self._write(event.text)

    def _write(self, line: str, redraw: bool = False) -> None:
        if redraw:
            self.out.write("\r" + line.ljust(78))
            self._open_line = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def _finished(self) -> None:
        view = self.view
        job = view.job
        if view.generating:
            # The chats reply /info to a picture; here the command names the file.
            hint = "distillery info <image name> shows all of an image's parameters."
            self._write(generation_summary(view, info_hint=hint))
            return
        if view.kind == pb.JOB_KIND_REG_IMPORT:
            self._write(view.last_text if view.state == pb.JOB_STATE_SUCCEEDED else f"Import failed: {view.error}")
            return
        if view.state != pb.JOB_STATE_SUCCEEDED or job is None:
            state = STATE_NAMES.get(view.state, "ended")
            self._write(f"Job {view.job_id} {state}: {view.error or view.last_text}")
            return
        self._write(f"{view.lora_name} is ready ({duration(job.finished_at - job.created_at)}).")
        if job.stage_seconds:
            order = {name: index for index, name in enumerate(STAGE_ORDER)}
            stages = sorted(job.stage_seconds.items(), key=lambda item: order.get(item[0], len(order)))
            split = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages)
            self._write(f"Time per stage: {split}")
        self._write(f"Stored in the daemon's store as LoRA {view.lora_name} (job {view.job_id}).")
        self._write(f"Download it: distillery download {view.lora_name} -o {view.lora_name}.safetensors")
        if view.images:
            self._write(f"Its preview: distillery image {view.images[0].name}")
        self._write(usage_text(view.lora_name, view.subject_class))


async def follow(events: AsyncIterator[pb.JobEvent], printer: ProgressPrinter) -> int:
    """Print events until the job ends; exit status 0 only when it succeeded.

    If the daemon goes away mid-job, say the command that resumes exactly where this one stopped.
    """
    last: pb.JobEvent | None = None
    try:
        async for event in events:
            printer(event)
            last = event
    except DaemonError as error:
        if last is not None and error.code == grpc.StatusCode.UNAVAILABLE:
            print(f"Resume when it is back: distillery watch {last.job_id} --after {last.seq}", file=sys.stderr)
        raise
    return 0 if printer.view.state == pb.JOB_STATE_SUCCEEDED else 1


def _source(args: argparse.Namespace) -> tuple[dict[str, object], bytes | None]:
    source: str = args.source
    if source.startswith(("http://", "https://")):
        return {"url": source}, None
    path = Path(source)
    if path.is_file():
        return {"upload": True}, path.read_bytes()
    if source.endswith(".png"):
        return {"image_name": source}, None
    raise SystemExit(f"{source}: not a file, an http(s) link or a stored image name (<name>.png)")


async def cmd_distill(client: DaemonClient, args: argparse.Namespace) -> int:
    fields, image = _source(args)
    spec = client.spec(
        requester(args),
        subject_class=args.subject_class or "",
        no_flip=args.noflip,
        train_steps=args.steps,
        idempotency_key=args.key or "",
        **fields,  # type: ignore[arg-type]
    )
    printer = ProgressPrinter(sys.stdout, args.json)
    if args.follow:
        return await follow(client.distill(spec, image), printer)
    reply = await client.submit(spec, image)
    print(f"LoRA name: {reply.job.lora_name}  (job {reply.job.id}), queue position {reply.queue_position}")
    print(f"Follow it: distillery watch {reply.job.id}")
    return 0


async def cmd_watch(client: DaemonClient, args: argparse.Namespace) -> int:
    return await follow(
        client.watch(args.job, requester(args), args.after), ProgressPrinter(sys.stdout, args.json)
    )


def _job_line(job: pb.Job) -> str:
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created_at))
    label = job.lora_name or KIND_LABELS.get(job.kind, "job")
    line = f"{job.id}  {label:<16} {STATE_NAMES.get(job.state, '?'):<10} {created}"
    return line + (f"  {job.error}" if job.error else "")


async def cmd_jobs(client: DaemonClient, args: argparse.Namespace) -> int:
    for job in await client.list_jobs(requester(args), active_only=args.active):
        print(_job_line(job))
    return 0


def _print_message(message: Message) -> None:
    print(json_format.MessageToJson(message, indent=2))


async def cmd_job(client: DaemonClient, args: argparse.Namespace) -> int:
    _print_message(await client.get_job(args.job, requester(args)))
    return 0


async def cmd_cancel(client: DaemonClient, args: argparse.Namespace) -> int:
    job = await client.cancel(args.job, requester(args))
    print(_job_line(job))
    return 0


async def cmd_loras(client: DaemonClient, args: argparse.Namespace) -> int:
    for lora in await client.list_loras(requester(args)):
        print(f"{lora.name:<16} {lora.size_bytes / 1e6:6.1f} MB  {lora.caption[:60]}")
    return 0


async def cmd_serve(client: DaemonClient, args: argparse.Namespace) -> int:
    """Generate with the chat's /serve grammar, follow it, and save the images into --out."""
    try:
        serve = parse_serve(shlex.join(args.words))
    except UsageError as error:
        raise SystemExit(f"error: {error}") from None
    return await _generate(client, args, serve)


async def cmd_upscale(client: DaemonClient, args: argparse.Namespace) -> int:
    """The hires pass over a picture made before, with the chat's /upscale grammar; the result goes to --out."""
    try:
        spec = parse_upscale(shlex.join([args.name, *args.words]))
    except UsageError as error:
        raise SystemExit(f"error: {error}") from None
    return await _generate(client, args, spec)


async def _generate(client: DaemonClient, args: argparse.Namespace, spec: pb.GenerateSpec) -> int:
    """Send a generation, follow it, and save its images into --out."""
    printer = ProgressPrinter(sys.stdout, args.json)
    printer.view.generate = spec
    printer.view.kind = pb.JOB_KIND_GENERATE
    status = await follow(client.generate(spec, requester(args), args.key or ""), printer)
    out = Path(args.out)
    for info in printer.view.images:
        out.mkdir(parents=True, exist_ok=True)
        target = out / info.name
        target.write_bytes(await client.get_image(info.name, requester(args)))
        print(f"{target}  (seed {info.seed})")
    return status


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


async def cmd_reg(client: DaemonClient, args: argparse.Namespace) -> int:
    """``reg import``: every photo in a folder (not recursive), in name order, as one import job."""
    folder = Path(args.folder)
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() in PHOTO_SUFFIXES)
    if not paths:
        raise SystemExit(f"error: no .jpg, .png or .webp photos in {folder}")
    print(f"Sending {len(paths)} photos of a {args.subject_class} from {folder}.")
    photos = (path.read_bytes() for path in paths)
    events = client.import_regularization(requester(args), args.subject_class, photos)
    return await follow(events, ProgressPrinter(sys.stdout, args.json))


async def cmd_events(client: DaemonClient, args: argparse.Namespace) -> int:
    """``events prune``: the daemon deletes the event logs of jobs that ended before the cut-off."""
    if args.older_than_days < 1:
        raise SystemExit("error: --older-than-days must be at least 1")
    pruned = await client.prune_events(requester(args), args.older_than_days)
    jobs = f"{pruned.jobs} job" + ("" if pruned.jobs == 1 else "s")
    print(f"Pruned {pruned.events} events of {jobs} that ended more than {args.older_than_days} days ago.")
    return 0


async def cmd_info(client: DaemonClient, args: argparse.Namespace) -> int:
    print(image_info_text(await client.image_info(args.name, requester(args))))
    return 0


async def cmd_stats(client: DaemonClient, args: argparse.Namespace) -> int:
    print(stats_text(await client.user_stats(requester(args))))
    return 0


def _confirmed(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SystemExit("error: add --yes to delete without a terminal to confirm on")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


async def cmd_lora(client: DaemonClient, args: argparse.Namespace) -> int:
    """Show a LoRA, or apply one owner action with the chat's /lora grammar."""
    words = [word for word in args.words if word not in ("--yes", "-y")]
    try:
        lora = parse_lora(shlex.join([args.name, *words]))
    except UsageError as error:
        raise SystemExit(f"error: {error}") from None
    who = requester(args)
    if lora.action == "":
        if args.json:
            _print_message(await client.get_lora(lora.name, who))
        else:
            print(lora_text(await client.get_lora(lora.name, who), who))
        return 0
    if lora.action == "download":
        data = await client.download_lora(lora.name, who)
        target = Path(f"{lora.name}.safetensors")
        target.write_bytes(data)
        print(f"{target} ({len(data)} bytes)")
        return 0
    if lora.action == "delete":
        if not _confirmed(f"Delete {lora.name} and its source picture for good?", len(words) < len(args.words)):
            print("Kept.")
            return 1
        await client.delete_lora(lora.name, who)
        print(f"Deleted {lora.name} and its source picture.")
        return 0
    changes: dict[str, dict[str, object]] = {
        "makepublic": {"public": True},
        "makeprivate": {"public": False},
        "showimage": {"show_image": True},
        "hideimage": {"show_image": False},
        "description": {"description": lora.description},
    }
    updated = await client.update_lora(lora.name, who, **changes[lora.action])  # type: ignore[arg-type]
    print(lora_text(updated, who))
    return 0


async def cmd_download(client: DaemonClient, args: argparse.Namespace) -> int:
    data = await client.download_lora(args.name, requester(args))
    target = Path(args.output or f"{args.name}.safetensors")
    target.write_bytes(data)
    print(f"{target} ({len(data)} bytes)")
    return 0


async def cmd_image(client: DaemonClient, args: argparse.Namespace) -> int:
    data = await client.get_image(args.name, requester(args))
    target = Path(args.output or args.name)
    target.write_bytes(data)
    print(f"{target} ({len(data)} bytes)")
    return 0


async def cmd_status(client: DaemonClient, args: argparse.Namespace) -> int:
    _print_message(await client.status())
    return 0


async def cmd_models(client: DaemonClient, args: argparse.Namespace) -> int:
    """The models /serve --model may name, after the base model that training uses."""
    print(models_text(await client.status()))
    return 0


async def wait_ready(client: DaemonClient, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the daemon's health says SERVING; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited with status {daemon.returncode} while starting")
        if await client.ready(timeout=1.0):
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"the daemon was not ready within {timeout:.0f} s")


async def cmd_demo(args: argparse.Namespace) -> int:
    """Start a daemon on the demo preset, distill the astronaut portrait with live progress, stop the daemon."""
    from daemon.pipeline.image import demo_portrait  # the demo needs the daemon package; other commands not

    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    socket = state / "distillery.sock"
    portrait = state / "astronaut.png"
    portrait.write_bytes(demo_portrait())
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "daemon",
        "--preset",
        "demo",
        "--state-dir",
        str(state),
        "--socket",
        str(socket),
    ]
    log_path = state / "daemon.log"
    print(f"Starting the daemon on the demo preset (log: {log_path}); the first start builds the tiny models.")
    with open(log_path, "ab") as log_file:
        daemon = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    client = DaemonClient(f"unix:{socket}")
    try:
        await wait_ready(client, daemon, timeout=300)
        ready = time.monotonic() - started
        print(f"Daemon ready after {ready:.1f} s. Distilling {portrait.name} (NASA, public domain).")
        spec = client.spec(requester(args), upload=True)
        status = await follow(client.distill(spec, portrait.read_bytes()), ProgressPrinter(sys.stdout, False))
        if status == 0:
            lora = (await client.list_loras(requester(args), include_public=False))[-1]
            target = state / f"{lora.name}.safetensors"
            target.write_bytes(await client.download_lora(lora.name, requester(args)))
            print(f"Saved a copy of the LoRA to {target}")
            status = await demo_serve(client, args, lora.name, state)
        print(f"Demo finished in {time.monotonic() - started:.1f} s.")
        return status
    finally:
        await client.close()
        daemon.terminate()
        daemon.wait(timeout=60)


async def demo_serve(client: DaemonClient, args: argparse.Namespace, name: str, state: Path) -> int:
    """The demo's second half, as the chats would: /serve with the new LoRA, /upscale of its first picture, and
    /serve with the face IP-Adapter on the portrait; every picture saved beside the LoRA."""
    serve = parse_serve(f'"a portrait of {name} as an astronaut" --lora {name} --n 2 --seed 1')
    print(f"\nGenerating with it: /serve {serve.prompt} --lora {name} --n 2 --seed 1")
    images, status = await demo_generate(client, args, serve, state)
    if status != 0 or not images:
        return status
    print(f"\nUpscaling the first picture: /upscale {images[0]}")
    _, status = await demo_generate(client, args, parse_upscale(images[0]), state)
    if status != 0:
        return status
    face = parse_serve(f'"a portrait of {name}, studio light" --lora {name} --adaptface {name}.png --seed 1')
    print(f"\nWith the face IP-Adapter on the portrait: /serve {face.prompt} --lora {name} --adaptface {name}.png")
    _, status = await demo_generate(client, args, face, state)
    return status


async def demo_generate(
    client: DaemonClient, args: argparse.Namespace, spec: pb.GenerateSpec, state: Path
) -> tuple[list[str], int]:
    """Follow one generation with live progress and save its pictures; their names and the exit status."""
    printer = ProgressPrinter(sys.stdout, False)
    printer.view.kind, printer.view.generate = pb.JOB_KIND_GENERATE, spec
    status = await follow(client.generate(spec, requester(args)), printer)
    for info in printer.view.images:
        target = state / info.name
        target.write_bytes(await client.get_image(info.name, requester(args)))
        print(f"Saved {target} (seed {info.seed}; the demo's random models draw noise, not a face)")
    return [info.name for info in printer.view.images], status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distillery", description="Operate the LoRA distillery daemon.")
    parser.add_argument(
        "--socket",
        default=os.environ.get("DISTILLERY_SOCKET", "state/distillery.sock"),
        help="the daemon's unix socket [env DISTILLERY_SOCKET]",
    )
    parser.add_argument("--address", help="loopback host:port instead of the socket")
    parser.add_argument("--token-file", help="bearer token for --address")
    parser.add_argument("--user", default=getpass.getuser(), help="whose jobs and LoRAs (default: login name)")
    parser.add_argument("--json", action="store_true", help="print events as JSON lines")
    sub = parser.add_subparsers(dest="command", required=True)

    distill = sub.add_parser("distill", help="distill a LoRA from a portrait (file, link or <name>.png)")
    distill.add_argument("source")
    distill.add_argument("--class", dest="subject_class", choices=["man", "woman", "person"])
    distill.add_argument("--noflip", action="store_true", help="no horizontal-flip augmentation")
    distill.add_argument("--steps", type=int, default=0, help="training steps (default: the daemon's)")
    distill.add_argument("--key", help="idempotency key: the same key again returns the same job")
    distill.add_argument("--follow", action="store_true", help="show live progress until the LoRA is ready")

    watch = sub.add_parser("watch", help="follow a job")
    watch.add_argument("job")
    watch.add_argument("--after", type=int, default=0, help="replay events after this sequence number")

    jobs = sub.add_parser("jobs", help="list your jobs")
    jobs.add_argument("--active", action="store_true")
    for name, text in (("job", "show a job"), ("cancel", "cancel a job")):
        sub.add_parser(name, help=text).add_argument("job")
    sub.add_parser("loras", help="list your LoRAs and public ones")
    lora = sub.add_parser(
        "lora",
        help="show a LoRA, or change it: --makepublic, --makeprivate, --description TEXT, --showimage, "
        "--hideimage, --delete [--yes], --download",
    )
    lora.add_argument("name")
    lora.add_argument("words", nargs=argparse.REMAINDER, help="one option, as in the chat's /lora")
    serve = sub.add_parser(
        "serve",
        help="generate images: PROMPT [--lora NAME[:W]] [--neg TEXT] [--seed N] [--cfg X] [--steps N] "
        "[--ar W:H] [--adapt NAME.png|URL] [--adaptweight W] [--n 1..4] [--sampler S] [--power] "
        "[--image NAME.png|URL] [--imagedenoise D], as the chat's /serve",
    )
    serve.add_argument("--out", default="images", help="folder for the images (default ./images)")
    serve.add_argument("--key", help="idempotency key: the same key again returns the same job")
    serve.add_argument("words", nargs=argparse.REMAINDER, help="the prompt and options")
    upscale = sub.add_parser(
        "upscale",
        help="make a generated picture larger and draw its details again: NAME.png [--power=1.5..2] "
        "[--upscalemethod latent|lanczos], as the chat's /upscale",
    )
    upscale.add_argument("name", help="the picture, <job id>-<n>.png")
    upscale.add_argument("--out", default="images", help="folder for the picture (default ./images)")
    upscale.add_argument("--key", help="idempotency key: the same key again returns the same job")
    upscale.add_argument("words", nargs=argparse.REMAINDER, help="--power=X and --upscalemethod M")
    sub.add_parser("info", help="a stored image's facts (a generated image's parameters)").add_argument("name")
    sub.add_parser("stats", help="your LoRAs, jobs and generated images")
    reg = sub.add_parser("reg", help="regularization sets: `reg import --class C FOLDER`")
    reg_sub = reg.add_subparsers(dest="reg_command", required=True)
    reg_import = reg_sub.add_parser("import", help="make a folder of photos the regularization set of a class")
    reg_import.add_argument("--class", dest="subject_class", choices=["man", "woman", "person"], required=True)
    reg_import.add_argument("folder", help="10 to 500 photos (.jpg, .png, .webp), each at least 256 px")
    events = sub.add_parser("events", help="job event logs: `events prune --older-than-days N`")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    prune = events_sub.add_parser(
        "prune", help="delete the event logs of jobs that ended long ago; each keeps its record and final event"
    )
    prune.add_argument(
        "--older-than-days", type=int, required=True, metavar="N", help="ended more than N days ago"
    )
    download = sub.add_parser("download", help="save a LoRA's .safetensors")
    download.add_argument("name")
    download.add_argument("-o", "--output")
    image = sub.add_parser("image", help="save a stored source image (<name>.png)")
    image.add_argument("name")
    image.add_argument("-o", "--output")
    sub.add_parser("status", help="the daemon's queue, workers (each with its job and stage) and models")
    sub.add_parser("models", help="the models /serve --model may name")
    demo = sub.add_parser("demo", help="run a whole /distill on the demo preset with a daemon of its own")
    demo.add_argument("--state-dir", default="state/demo")
    backup = sub.add_parser("backup", help="hot, consistent copy of the daemon's store into a new folder")
    backup.add_argument("target", help="new or empty folder for the copy")
    backup.add_argument("--state-dir", default="state", help="the daemon's state folder (default ./state)")
    restore = sub.add_parser("restore", help="put a backup into a fresh state folder (daemon stopped)")
    restore.add_argument("backup", help="a folder written by `distillery backup`")
    restore.add_argument("--state-dir", required=True, help="a state folder without a store")
    return parser


def cmd_backup_restore(args: argparse.Namespace) -> int:
    """Backup and restore work on the store's files, not through the daemon: they need no socket."""
    from daemon.backup import BackupError, backup, restore

    try:
        if args.command == "backup":
            summary = backup(Path(args.state_dir), Path(args.target))
            where = args.target
        else:
            summary = restore(Path(args.backup), Path(args.state_dir))
            where = args.state_dir
    except BackupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.command}: {summary.jobs} jobs, {summary.loras} LoRAs, {summary.bytes} bytes in {where}")
    return 0


COMMANDS = {
    "distill": cmd_distill,
    "watch": cmd_watch,
    "jobs": cmd_jobs,
    "job": cmd_job,
    "cancel": cmd_cancel,
    "loras": cmd_loras,
    "lora": cmd_lora,
    "serve": cmd_serve,
    "upscale": cmd_upscale,
    "info": cmd_info,
    "stats": cmd_stats,
    "reg": cmd_reg,
    "events": cmd_events,
    "download": cmd_download,
    "image": cmd_image,
    "status": cmd_status,
    "models": cmd_models,
}


async def run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return await cmd_demo(args)
    if args.command in ("backup", "restore"):
        return await asyncio.to_thread(cmd_backup_restore, args)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    client = DaemonClient(args.address or f"unix:{Path(args.socket).resolve()}", token)
    try:
        return await COMMANDS[args.command](client, args)
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``distillery`` command."""
    args = build_parser().parse_args(argv)
    try:
        status = asyncio.run(run(args))
    except DaemonError as error:
        print(f"error: {error.message}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    main()
