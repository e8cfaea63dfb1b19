"""Regenerate the Python stubs for protos/ next to the .proto files.

Run from anywhere: ``python scripts/gen_protos.py``. The generated modules live in ``protos/distillery/v1`` and
install as the ``distillery.v1`` package; tests/test_protos.py fails when the committed stubs differ from what
this script produces, so edit the .proto, run this, commit both.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under protos/ into out_dir; return the files written."""
    sources = sorted(PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out_dir.rglob("*") if p.suffix in {".py", ".pyi"} and "_pb2" in p.name)


if __name__ == "__main__":
    written = generate(PROTOS)
    for path in written:
        print(path.relative_to(ROOT))
    sys.exit(0)
