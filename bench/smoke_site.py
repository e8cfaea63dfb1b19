"""A package folder holding only what the GPU machine has: ``python -m bench.smoke_site OUT``.

``gpu_check.sh --smoke`` runs Python without its own site-packages (``-S``) and with this folder on the path, so
the smoke run sees exactly the GPU machine's packages (``bench/gpu_machine_packages.txt``, at this machine's
versions) plus the carried wheels: a part that needed anything else, or this project installed, fails here
rather than on the GPU. The folder is symbolic links into the current environment's site-packages.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).parent
ON_GPU_MACHINE = HERE / "gpu_machine_packages.txt"
CARRIED = HERE / "gpu_wheels.txt"


def normalise(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def names(listing: Path) -> set[str]:
    """The distribution names of a list file: one a line, ``name`` or ``name==version``, ``#`` comments."""
    lines = (line.split("#", 1)[0].strip() for line in listing.read_text().splitlines())
    return {normalise(line.split("==", 1)[0]) for line in lines if line}


def with_requirements(wanted: set[str], installed: dict[str, metadata.Distribution]) -> set[str]:
    """``wanted`` and everything the installed versions of those need (a newer release here may need a package
    the GPU machine's older one did not: that package is part of the release, not an extra)."""
    from packaging.requirements import Requirement

    found, todo = set(), [name for name in wanted if name in installed]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for line in installed[name].requires or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            needed = normalise(requirement.name)
            if needed in installed and needed not in found:
                todo.append(needed)
    return found


def build(out: Path) -> list[str]:
    """Link the top-level entries of every installed distribution the GPU machine has, except the carried ones."""
    installed = {normalise(dist.metadata["Name"]): dist for dist in metadata.distributions()}
    carried = names(CARRIED)
    wanted = with_requirements(names(ON_GPU_MACHINE) - carried, installed) - carried
    out.mkdir(parents=True, exist_ok=True)
    linked: list[str] = []
    for name in sorted(wanted):
        dist = installed[name]
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(file)).parts[0] for file in dist.files or [] if not str(file).startswith("..")}
        for top in sorted(tops):
            source, target = base / top, out / top
            if source.exists() and not target.exists() and not top.endswith(".pth"):
                target.symlink_to(source)
        linked.append(dist.metadata["Name"])
    return sorted(linked)


if __name__ == "__main__":
    print(" ".join(build(Path(sys.argv[1]))))
