"""The daemon's settings: built once at start from flags, environment and an optional TOML file, then frozen.

Precedence: command-line flag > ``DISTILLERY_*`` environment variable > config file > preset default. Nothing
else in the daemon reads the environment. Example config file (``--config distillery.toml``)::

    state_dir = "/var/lib/distillery"
    socket = "/run/distillery/distillery.sock"
    preset = "sd15"
    base_model = "/models/realisticVision.safetensors"   # hub id, diffusers folder or single file
    captioner = "HuggingFaceTB/SmolVLM-256M-Instruct"
    reg_images = 200
    daily_images = 40      # per user per UTC day; 0 or absent: no limit
    ip_adapter = "h94/IP-Adapter"   # /serve --adapt (hub id or a folder laid out like it)
    face_ip_adapter = true          # and --adaptface, with its plus-face model from the same place

    [serve_models]     # more SD 1.5 checkpoints for /serve --model <name>
    realistic = "/models/realisticVision.safetensors"

    [train]            # any TrainConfig field
    steps = 1000
    rank = 16
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.models.config import PRESET_MODELS, PRESETS, ModelConfig
from daemon.pipeline.fetch import FetchPolicy
from daemon.pipeline.hparams import TrainConfig
from daemon.pipeline.image import ImageLimits
from daemon.quota import DailyQuota
from daemon.store.lmdb_store import StoreConfig


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    socket: Path | None
    tcp: str | None
    token: str | None
    models: ModelConfig
    train: TrainConfig
    fetch: FetchPolicy
    image: ImageLimits
    store: StoreConfig
    # Regularization photos per class; generated once per (base model, class) and cached.
    reg_images: int = 200
    # Jobs waiting at once, and active (queued or running) jobs per user; past either: RESOURCE_EXHAUSTED.
    queue_limit: int = 20
    user_active_limit: int = 3
    # Upper bound for a request's train_steps, so one user cannot hold the GPU for hours.
    max_train_steps: int = 5000
    # Seconds a graceful stop waits for the running job to reach a safe point.
    stop_grace: float = 30.0
    log_level: str = "INFO"
    # Group that owns the unix socket (mode 0660), so frontends in that group can connect; None keeps ours.
    socket_group: str | None = None
    # Prometheus text endpoint "127.0.0.1:PORT"; off unless set, and loopback only like --tcp.
    metrics: str | None = None
    # LoRAs /serve keeps loaded between generations; the least recently used goes first past this.
    lora_cache: int = 8
    # Images and distillations per user per UTC day; 0 (the default) is no limit.
    quota: DailyQuota = field(default_factory=DailyQuota)
    # Where jobs run: "local" (one worker thread in the daemon) or "ray" (one actor per GPU across machines).
    executor: str = "local"
    # The Ray cluster to join as a driver: "auto" (this machine's running Ray), "HOST:PORT" of the head, or
    # "local" (a private one-machine Ray started with the daemon, for trying it out and for tests).
    ray_address: str = "auto"
    # CPU workers on the custom resource "distillery_worker" instead of one per GPU; 0: one per GPU.
    ray_workers: int = 0
    # Object store of a private Ray (--ray-address local); a cluster's machines cap theirs with `ray start`.
    ray_object_store_mb: int = 512
    # A private Ray's own files (session logs, sockets, its auth token), kept with the daemon's state rather
    # than in /tmp/ray and ~/.ray, which every Ray on the machine shares; None: <state_dir>/ray.
    ray_temp_dir: Path | None = None


_FLAGS: list[tuple[str, str, type, str]] = [
    # (flag, config/env key, type, help)
    ("--state-dir", "state_dir", str, "folder for the LMDB store and the demo models (default ./state)"),
    ("--socket", "socket", str, "unix socket path (default <state-dir>/distillery.sock)"),
    ("--tcp", "tcp", str, "also listen on this loopback host:port; needs a token"),
    ("--token-file", "token_file", str, "file holding the bearer token required on TCP"),
    ("--preset", "preset", str, "demo (tiny CPU models) or sd15"),
    ("--base-model", "base_model", str, "hub id, diffusers folder or single .safetensors file"),
    ("--base-config", "base_config", str, "diffusers folder of configs+tokenizer for a single-file base model"),
    ("--captioner", "captioner", str, "hub id or folder of a transformers vision-language model"),
    ("--device", "device", str, "auto, cpu, cuda or cuda:N"),
    ("--dtype", "dtype", str, "auto, float32, float16 or bfloat16"),
    ("--reg-images", "reg_images", int, "regularization images per class"),
    ("--queue-limit", "queue_limit", int, "jobs that may wait at once"),
    ("--user-active-limit", "user_active_limit", int, "queued or running jobs per user"),
    ("--train-steps", "train_steps", int, "default training steps"),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING"),
    ("--socket-group", "socket_group", str, "group owning the unix socket (mode 0660) and its folder (0750)"),
    ("--metrics", "metrics", str, "serve Prometheus metrics on this loopback host:port (off by default)"),
    ("--lora-cache", "lora_cache", int, "LoRAs kept loaded for /serve between generations (default 8)"),
    ("--ip-adapter", "ip_adapter", str, "IP-Adapter hub id or folder for /serve --adapt (default: off)"),
    ("--ip-adapter-weight", "ip_adapter_weight", str, "its weights file (models/ip-adapter_sd15.safetensors)"),
    (
        "--face-ip-adapter-weight",
        "face_ip_adapter_weight",
        str,
        "with --face-ip-adapter: the face model's file there (models/ip-adapter-plus-face_sd15.safetensors)",
    ),
    ("--daily-images", "daily_images", int, "images /serve makes per user per UTC day (0: no limit)"),
    ("--daily-distills", "daily_distills", int, "LoRAs /distill trains per user per UTC day (0: no limit)"),
    ("--executor", "executor", str, "where jobs run: local (one worker thread, the default) or ray"),
    ("--ray-address", "ray_address", str, "ray: auto, the head's HOST:PORT, or local (a private Ray)"),
    ("--ray-workers", "ray_workers", int, "ray: this many CPU workers instead of one per GPU (default 0)"),
    ("--ray-object-store-mb", "ray_object_store_mb", int, "ray, address local: object store size (default 512)"),
    ("--ray-temp-dir", "ray_temp_dir", str, "ray, address local: its logs, sockets and token (<state-dir>/ray)"),
]


def build_parser() -> argparse.ArgumentParser:
    """Flags of the daemon; each also reads DISTILLERY_<KEY> from the environment."""
    parser = argparse.ArgumentParser(prog="distillery-daemon", description="The LoRA distillery daemon.")
    parser.add_argument("--config", help="TOML config file")
    for flag, key, kind, text in _FLAGS:
        parser.add_argument(flag, dest=key, type=kind, help=f"{text} [env DISTILLERY_{key.upper()}]")
    parser.add_argument(
        "--serve-model",
        dest="serve_models",
        action="append",
        metavar="NAME=SOURCE",
        help="another SD 1.5 checkpoint for /serve --model (repeat; or a [serve_models] table in the config file)",
    )
    parser.add_argument(
        "--face-ip-adapter",
        dest="face_ip_adapter",
        action="store_true",
        default=None,
        help="also load the face IP-Adapter for /serve --adaptface, from the --ip-adapter hub id or folder "
        "(default: off) [env DISTILLERY_FACE_IP_ADAPTER=1]",
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        default=None,
        help="TESTS ONLY: let /distill fetch loopback and private addresses",
    )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Parse flags, read the environment and the config file, and build the frozen Settings."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config") or environ.get("DISTILLERY_CONFIG")
    file_values: dict[str, Any] = {}
    if config_path:
        with open(config_path, "rb") as handle:
            file_values = tomllib.load(handle)
    train_overrides = dict(file_values.pop("train", {}))

    def value(key: str, default: Any = None) -> Any:
        if args.get(key) is not None:
            return args[key]
        env = environ.get(f"DISTILLERY_{key.upper()}")
        if env is not None:
            return env
        return file_values.get(key, default)

    preset = str(value("preset", "demo"))
    if preset not in PRESETS:
        raise SystemExit(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    state_dir = Path(value("state_dir", environ.get("STATE_DIRECTORY", "state"))).resolve()
    tcp = value("tcp")
    token = _read_token(value("token_file"), environ)
    if tcp:
        _check_loopback(str(tcp))
        if not token:
            raise SystemExit("--tcp needs a token (--token-file or DISTILLERY_TOKEN)")
    metrics = value("metrics")
    if metrics:
        _check_loopback(str(metrics), "--metrics")
    socket_value = value("socket")
    socket = Path(socket_value) if socket_value else state_dir / "distillery.sock"

    models = ModelConfig(
        preset=preset,
        base_model=str(value("base_model", PRESET_MODELS[preset][0])),
        captioner_model=str(value("captioner", PRESET_MODELS[preset][1])),
        device=str(value("device", "auto")),
        dtype=str(value("dtype", "auto")),
        base_config=str(value("base_config", "")),
        ip_adapter=str(value("ip_adapter", "")),
        ip_adapter_weight=str(value("ip_adapter_weight", ModelConfig.ip_adapter_weight)),
        face_ip_adapter=_switch(value("face_ip_adapter", False), "--face-ip-adapter"),
        face_ip_adapter_weight=str(value("face_ip_adapter_weight", ModelConfig.face_ip_adapter_weight)),
        serve_models=_serve_models(args.get("serve_models"), file_values.get("serve_models", {})),
    )
    if models.face_ip_adapter and not models.ip_adapter and preset != "demo":
        # The demo preset builds its own; any other needs the folder both models come from.
        raise SystemExit("--face-ip-adapter needs --ip-adapter: the hub id or folder it is read from")
    train = TrainConfig.demo() if preset == "demo" else TrainConfig()
    if value("train_steps") is not None:
        train_overrides["steps"] = int(value("train_steps"))
    train = _with_overrides(train, train_overrides)

    lora_cache = int(value("lora_cache", 8))
    if lora_cache < 1:
        raise SystemExit(f"--lora-cache must be at least 1, not {lora_cache}")
    quota = DailyQuota(images=int(value("daily_images", 0)), distills=int(value("daily_distills", 0)))
    if quota.images < 0 or quota.distills < 0:
        raise SystemExit("--daily-images and --daily-distills must be 0 (no limit) or more")
    executor, ray_address, ray_workers = _executor(value)
    allow_private = bool(value("allow_private_urls", False))
    return Settings(
        state_dir=state_dir,
        socket=socket,
        tcp=str(tcp) if tcp else None,
        token=token,
        models=models,
        train=train,
        fetch=FetchPolicy(allow_private=allow_private),
        image=ImageLimits(),
        store=StoreConfig(path=state_dir / "store"),
        reg_images=int(value("reg_images", 200)),
        queue_limit=int(value("queue_limit", 20)),
        user_active_limit=int(value("user_active_limit", 3)),
        log_level=str(value("log_level", "INFO")).upper(),
        socket_group=str(value("socket_group")) if value("socket_group") else None,
        metrics=str(metrics) if metrics else None,
        lora_cache=lora_cache,
        quota=quota,
        executor=executor,
        ray_address=ray_address,
        ray_workers=ray_workers,
        ray_object_store_mb=int(value("ray_object_store_mb", 512)),
        ray_temp_dir=_ray_temp_dir(value("ray_temp_dir"), state_dir) if ray_address == "local" else None,
    )


# Ray's unix sockets live at <temp>/session_<date>_<time>_<pid>/sockets/plasma_store: about 64 characters
# after the folder, inside the kernel's 107-byte limit for a socket path.
RAY_SOCKET_SUFFIX = 64
UNIX_PATH_MAX = 107


def _ray_temp_dir(raw: Any, state_dir: Path) -> Path:
    """The private Ray's folder, absolute and short enough for the sockets Ray makes inside it."""
    folder = (Path(str(raw)) if raw else state_dir / "ray").expanduser().absolute()
    if len(str(folder)) + RAY_SOCKET_SUFFIX > UNIX_PATH_MAX:
        raise SystemExit(
            f"--ray-temp-dir {folder} is too long for the unix sockets Ray makes in it: pick a folder of at most "
            f"{UNIX_PATH_MAX - RAY_SOCKET_SUFFIX} characters (--ray-temp-dir /var/lib/distillery/ray)"
        )
    return folder


def _serve_models(flags: list[str] | None, table: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``--serve-model NAME=SOURCE`` flags, else the config file's ``[serve_models]`` table, checked."""
    pairs = [tuple(flag.split("=", 1)) for flag in flags] if flags else list(table.items())
    models: dict[str, str] = {}
    for pair in pairs:
        if len(pair) != 2 or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", str(pair[0])) or not pair[1]:
            raise SystemExit(f"--serve-model takes NAME=SOURCE with a lower-case name, not {'='.join(pair)!r}")
        models[str(pair[0])] = str(pair[1])
    return tuple(models.items())


def _switch(raw: Any, flag: str) -> bool:
    """An on/off setting: the flag itself, a TOML boolean, or an environment value such as 1, true or off."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise SystemExit(f"{flag} is on or off (1/true/yes/on or 0/false/no/off), not {raw!r}")


def _executor(value: Callable[..., Any]) -> tuple[str, str, int]:
    """--executor, --ray-address and --ray-workers, checked together."""
    executor = str(value("executor", "local"))
    if executor not in ("local", "ray"):
        raise SystemExit(f"--executor must be local or ray, not {executor!r}")
    ray_address = str(value("ray_address", "auto"))
    if ray_address.startswith("ray://"):
        raise SystemExit(
            "--ray-address: Ray Client (ray://) cannot stream job events; run the daemon on a machine of the "
            "cluster and pass auto or the head's HOST:PORT"
        )
    ray_workers = int(value("ray_workers", 0))
    if ray_workers < 0:
        raise SystemExit(f"--ray-workers must be 0 (one worker per GPU) or more, not {ray_workers}")
    return executor, ray_address, ray_workers


def _with_overrides(train: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise SystemExit(f"unknown [train] settings: {', '.join(sorted(unknown))}")
    return dataclasses.replace(train, **overrides)


def _read_token(path: str | None, environ: Mapping[str, str]) -> str | None:
    if path:
        return Path(path).read_text().strip() or None
    return environ.get("DISTILLERY_TOKEN") or None


def _check_loopback(address: str, flag: str = "--tcp") -> None:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"{flag} must be a loopback address (127.0.0.1:PORT or [::1]:PORT), not {address!r}")
