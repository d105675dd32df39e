"""Run every benchmark in turn with its default sizes (`make bench`); each prints its own figures.

Each speed target has one script; this runner only sequences them so they never compete for the
two cores. Pass names to run a subset: ``python benchmarks/run_all.py serve score``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["data", "materialize", "online_read", "train", "score", "drift", "serve", "soak", "uplift"]


def main(names: list[str]) -> int:
    failed = []
    for name in names or ORDER:
        print(f"\n=== benchmarks/{name}.py", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"=== {name}: exit {code} after {time.perf_counter() - t0:.0f}s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
