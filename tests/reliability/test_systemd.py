"""The systemd units pass ``systemd-analyze verify`` and their ExecStart flags exist in the real CLIs."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service"))
# Drop-ins that change a unit's command line (the daemon on a Ray head).
DROP_INS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service.d/*.conf"))
# Where the units expect the installation; the test points them at this checkout's virtual environment.
INSTALLED_BIN = "/opt/distillery/.venv/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"


def exec_start(unit: Path) -> list[str]:
    """The command line of the unit's last non-empty ExecStart= (a drop-in first resets it with an empty one)."""
    commands = re.findall(r"^ExecStart=(.+)$", unit.read_text(), re.MULTILINE)
    assert commands, f"{unit.name} has no ExecStart"
    return str(commands[-1]).split()


def test_there_are_units_for_the_daemon_and_every_bot() -> None:
    assert {unit.name for unit in UNITS} == {
        "distillery-daemon.service",
        "distillery-telegram.service",
        "distillery-slack.service",
        "distillery-discord.service",
        "ray-head.service",
        "ray-worker.service",
    }
    assert [f"{drop_in.parent.name}/{drop_in.name}" for drop_in in DROP_INS] == [
        "distillery-daemon.service.d/ray.conf"
    ]
    for ray_unit in ("ray-head.service", "ray-worker.service", "distillery-daemon.service.d/ray.conf"):
        lines = (UNITS[0].parent / ray_unit).read_text().splitlines()
        # Ray's token authentication is on wherever a Ray process or driver runs.
        assert "Environment=RAY_AUTH_MODE=token" in lines, ray_unit
    daemon = (UNITS[0].parent / "distillery-daemon.service").read_text()
    for line in ("Type=notify", "Restart=on-failure", "RuntimeDirectoryMode=0750", "NoNewPrivileges=yes"):
        assert line in daemon.splitlines()
    # PrivateDevices= would hide /dev/nvidia* from the daemon.
    assert not any(line.startswith("PrivateDevices=") for line in daemon.splitlines())


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        # CI sets DISTILLERY_REQUIRE_SYSTEMD=1 (.ci/run), so the check can only be skipped on a developer's box.
        if os.environ.get("DISTILLERY_REQUIRE_SYSTEMD") == "1":
            pytest.fail("systemd-analyze is not installed (Debian package: systemd)")
        pytest.skip("systemd-analyze is not installed")
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED_BIN, VENV_BIN))
        copies.append(str(copy))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *copies], capture_output=True, text=True, timeout=120
    )
    # Unknown keys are only warnings (exit 0), so any line about our files fails the test too.
    about_ours = [line for line in (done.stdout + done.stderr).splitlines() if "distillery-" in line]
    assert done.returncode == 0 and not about_ours, done.stdout + done.stderr


@pytest.mark.parametrize("unit", UNITS + DROP_INS, ids=lambda unit: unit.stem)
def test_exec_start_flags_exist_in_the_cli(unit: Path) -> None:
    program, *args = exec_start(unit)
    binary = Path(program.replace(INSTALLED_BIN, VENV_BIN))
    assert binary.exists(), f"{binary} is not installed (pip install -e .)"
    # Words before the first flag name a subcommand (``ray start``), whose own --help lists its flags.
    subcommand = list(itertools.takewhile(lambda arg: not arg.startswith("--"), args))
    help_run = subprocess.run([str(binary), *subcommand, "--help"], capture_output=True, text=True, timeout=120)
    help_text = help_run.stdout
    flags = [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]
    assert flags
    for flag in flags:
        assert re.search(rf"(^|\s|\[){re.escape(flag)}\b", help_text), f"{unit.name}: {flag} not in --help"
