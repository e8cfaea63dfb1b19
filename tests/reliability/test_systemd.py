"""The systemd units pass ``systemd-analyze verify`` and their ExecStart flags exist in the real CLIs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service"))
# Where the units expect the installation; the test points them at this checkout's virtual environment.
INSTALLED_BIN = "/opt/distillery/.venv/bin/"
VENV_BIN = str(Path(sys.executable).parent) + "/"


def exec_start(unit: Path) -> list[str]:
    match = re.search(r"^ExecStart=(.+)$", unit.read_text(), re.MULTILINE)
    assert match, f"{unit.name} has no ExecStart"
    return match.group(1).split()


def test_there_are_units_for_the_daemon_and_every_bot() -> None:
    assert {unit.name for unit in UNITS} == {
        "distillery-daemon.service",
        "distillery-telegram.service",
        "distillery-slack.service",
        "distillery-discord.service",
    }
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


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.stem)
def test_exec_start_flags_exist_in_the_cli(unit: Path) -> None:
    program, *args = exec_start(unit)
    binary = Path(program.replace(INSTALLED_BIN, VENV_BIN))
    assert binary.exists(), f"{binary} is not installed (pip install -e .)"
    help_text = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=120).stdout
    flags = [arg for arg in args if arg.startswith("--")]
    assert flags
    for flag in flags:
        assert re.search(rf"(^|\s|\[){re.escape(flag)}\b", help_text), f"{unit.name}: {flag} not in --help"
