"""Run the Ray cluster tests again and again while other processes keep every core busy.

Not part of CI: it is how the Ray start-up was proven to hold on a loaded machine. Each run is a fresh pytest
process on ``tests/cluster/test_ray_executor.py``; the burners are plain busy loops, one per core, bounded in time
and stopped when the runs end. Prints one line per run and a last line ``cluster under load: P of N passed``;
exits non-zero if any run failed.

    python scripts/cluster_under_load.py --runs 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "tests/cluster/test_ray_executor.py"


def burn(until: float) -> None:
    """Keep one core busy until ``until`` (monotonic seconds)."""
    count = 0
    while time.monotonic() < until:
        count += 1


def main() -> int:
    """Start the burners, run the module ``--runs`` times, stop the burners, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="busy processes (default: cores)")
    parser.add_argument("--max-minutes", type=float, default=90.0, help="the burners stop by then at the latest")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/cluster-under-load"))
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    until = time.monotonic() + args.max_minutes * 60
    burners = [multiprocessing.Process(target=burn, args=(until,), daemon=True) for _ in range(args.burners)]
    for burner in burners:
        burner.start()
    passed = 0
    try:
        for run in range(1, args.runs + 1):
            log = args.log_dir / f"run-{run:02d}.log"
            started = time.monotonic()
            with open(log, "wb") as handle:
                status = subprocess.call(
                    [sys.executable, "-m", "pytest", MODULE, "-q", "-p", "no:cacheprovider"],
                    cwd=ROOT,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            passed += status == 0
            verdict = "passed" if status == 0 else f"FAILED (exit {status}, see {log})"
            print(f"run {run}: {verdict} in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        for burner in burners:
            burner.terminate()
            burner.join()
    print(f"cluster under load: {passed} of {args.runs} passed with {args.burners} busy processes", flush=True)
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
