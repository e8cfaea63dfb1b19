"""The operator's CLI end to end on a real daemon: from a portrait to generated images, then managing the LoRA.

Runs the installed ``distillery`` command as a user would, so argument parsing, the shared /serve and /lora
grammar, the printed text and the files written are all the real ones.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import safetensors.torch
from PIL import Image

from daemon.pipeline.denoise import hires_size
from tests.daemon_process import RunningDaemon

DISTILLERY = str(Path(sys.executable).parent / "distillery")


def cli(
    daemon: RunningDaemon, *args: str, user: str = "ann", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [DISTILLERY, "--socket", str(daemon.socket), "--user", user, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, stdin=subprocess.DEVNULL)


def test_from_a_portrait_to_images_and_back_out(
    running_daemon: RunningDaemon, tmp_path: Path, portrait_png: bytes
) -> None:
    portrait = tmp_path / "me.png"
    portrait.write_bytes(portrait_png)
    distilled = cli(running_daemon, "--json", "distill", str(portrait), "--class", "woman", "--follow")
    assert distilled.returncode == 0, distilled.stderr
    events = [json.loads(line) for line in distilled.stdout.splitlines()]
    name = events[0]["accepted"]["loraName"]

    out = tmp_path / "images"
    served = cli(
        running_daemon, "serve", "--out", str(out), "on the moon", "--lora", name, "--n", "2", "--seed", "3"
    )
    assert served.returncode == 0, served.stderr
    assert "Your 2 images are ready" in served.stdout and f"Prompt: {name} woman, on the moon" in served.stdout
    pictures = sorted(out.glob("*.png"))
    assert len(pictures) == 2
    with Image.open(pictures[0]) as first:
        parameters = first.text["parameters"]  # type: ignore[attr-defined]
    assert "Seed: 3" in parameters and f"<lora:{name}:1>" in parameters

    info = cli(running_daemon, "info", pictures[1].name)
    assert info.returncode == 0 and "Seed: 4" in info.stdout

    # The second picture larger: its own seed and settings, with the hires pass's fields added.
    upscaled = cli(running_daemon, "upscale", "--out", str(out), pictures[1].name, "--power=1.5")
    assert upscaled.returncode == 0, upscaled.stderr
    assert f"Upscaled from {pictures[1].name}: 1.5 times, latent" in upscaled.stdout
    [larger] = sorted(set(out.glob("*.png")) - set(pictures))
    with Image.open(larger) as big, Image.open(pictures[1]) as small:
        assert big.size == hires_size(*small.size, 1.5, 8)
        text = big.text["parameters"]  # type: ignore[attr-defined]
        assert text.startswith(small.text["parameters"].split("\n")[0])  # type: ignore[attr-defined]
    assert "Seed: 4" in text and "Hires upscale: 1.5" in text and "Denoising strength: 0.55" in text

    # Ben cannot see Ann's private LoRA, then can use (not change) it once it is public.
    hidden = cli(running_daemon, "lora", name, user="ben")
    assert hidden.returncode == 2 and f"There is no LoRA called {name}" in hidden.stderr
    assert cli(running_daemon, "lora", name, "--makepublic").returncode == 0
    shown = cli(running_daemon, "lora", name, user="ben")
    assert shown.returncode == 0 and "public" in shown.stdout and "Class: woman" in shown.stdout
    refused = cli(running_daemon, "lora", name, "--delete", "--yes", user="ben")
    assert refused.returncode == 2 and f"Only the owner of {name}" in refused.stderr

    downloaded = cli(running_daemon, "lora", name, "--download", user="ben", cwd=tmp_path)
    assert downloaded.returncode == 0, downloaded.stderr
    tensors = safetensors.torch.load_file(tmp_path / f"{name}.safetensors")
    assert any(key.startswith("lora_unet_") for key in tensors)  # kohya keys, as A1111 loads them

    stats = cli(running_daemon, "stats")
    assert (
        stats.returncode == 0
        and "LoRAs: 1 (1 public)" in stats.stdout
        and "Generations: 2, 3 images" in stats.stdout
    )

    # Without a terminal to confirm on, deleting needs --yes; with it, the LoRA and its picture are gone.
    unconfirmed = cli(running_daemon, "lora", name, "--delete")
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    deleted = cli(running_daemon, "lora", name, "--delete", "--yes")
    assert deleted.returncode == 0 and f"Deleted {name}" in deleted.stdout
    assert cli(running_daemon, "image", f"{name}.png", "-o", str(tmp_path / "gone.png")).returncode == 2


def test_usage_mistakes_are_named(running_daemon: RunningDaemon) -> None:
    bad = cli(running_daemon, "serve", "x", "--n", "many")
    assert bad.returncode != 0 and "--n takes a whole number" in bad.stderr
    unknown = cli(running_daemon, "lora", "somename", "--explode")
    assert unknown.returncode != 0 and "Unknown option --explode" in unknown.stderr
    spaced = cli(running_daemon, "upscale", "x-1.png", "--power", "1.5")
    assert spaced.returncode != 0 and "Write the factor after --power with an equals sign" in spaced.stderr
    missing = cli(running_daemon, "upscale", "nothere-1.png")
    assert missing.returncode == 2 and "There is no stored image nothere-1.png" in missing.stderr


def test_an_imported_photo_set_becomes_the_regularization_set(
    running_daemon: RunningDaemon, tmp_path: Path, portrait_png: bytes
) -> None:
    folder = tmp_path / "women"
    folder.mkdir()
    with Image.open(io.BytesIO(portrait_png)) as portrait:
        for number in range(12):
            # Distinct photos: the portrait turned and cropped a little differently each time.
            crop = portrait.rotate(number * 3).crop((number, number, 400 + number, 420 + number))
            crop.save(folder / f"photo-{number:02d}.jpg", quality=90)
    (folder / "notes.txt").write_text("not a photo, and not sent")

    imported = cli(running_daemon, "reg", "import", "--class", "woman", str(folder))
    assert imported.returncode == 0, imported.stderr + imported.stdout
    assert "Sending 12 photos of a woman" in imported.stdout
    assert "12 photos of a woman are now the regularization set" in imported.stdout

    portrait = tmp_path / "me.png"
    portrait.write_bytes(portrait_png)
    distilled = cli(running_daemon, "distill", str(portrait), "--class", "woman", "--follow")
    assert distilled.returncode == 0, distilled.stderr
    assert "Using 12 imported regularization photos of a woman." in distilled.stdout
    # The uploaded photos were only the job's input: once encoded, they are gone from the store.
    job_id = re.search(r"\(job (\w+)\)", imported.stdout)
    assert job_id is not None
    gone = cli(running_daemon, "image", f"{job_id.group(1)}-reg-1.png", "-o", str(tmp_path / "x.png"))
    assert gone.returncode == 2 and "no stored image" in gone.stderr
    assert f"{job_id.group(1)}  regularization import" in cli(running_daemon, "jobs").stdout


def test_an_import_with_a_bad_photo_is_refused_whole(running_daemon: RunningDaemon, tmp_path: Path) -> None:
    folder = tmp_path / "men"
    folder.mkdir()
    for number in range(10):
        Image.new("RGB", (300, 300), (number * 20, 90, 90)).save(folder / f"{number}.png")
    (folder / "5.png").write_bytes(b"this is not a png")
    refused = cli(running_daemon, "reg", "import", "--class", "man", str(folder))
    assert refused.returncode == 2 and "Photo 6:" in refused.stderr
    few = tmp_path / "few"
    few.mkdir()
    Image.new("RGB", (300, 300)).save(few / "one.png")
    too_few = cli(running_daemon, "reg", "import", "--class", "man", str(few))
    assert too_few.returncode == 2 and "at least 10 photos" in too_few.stderr
