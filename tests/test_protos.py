"""The committed stubs are exactly what scripts/gen_protos.py makes from protos/: edit the .proto, regenerate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)

    fresh = {path.relative_to(tmp_path): path.read_text() for path in gen.generate(tmp_path)}
    assert fresh, "the generator produced nothing"
    for relative, text in fresh.items():
        committed = ROOT / "protos" / relative
        assert committed.exists(), f"{relative} is not committed; run scripts/gen_protos.py"
        assert committed.read_text() == text, f"{relative} differs from the protos; run scripts/gen_protos.py"
