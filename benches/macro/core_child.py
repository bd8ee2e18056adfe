"""A bare meshplane Core in its own process: `python core_child.py SNAPSHOT.json [WORKERS]`.

Creates `meshplane._core.Core(workers=WORKERS)` (default 1), applies the snapshot document,
prints one JSON line (`listeners`: name -> bound port, and VmRSS before and after importing the
core), then serves until SIGTERM or SIGINT. No Trio, no control layer: the data plane alone, as
the macro benchmark (run.py) drives it (WORKERS > 1: the scaling measurement in
benches/README.md). Standard library only, so the "interpreter" figure stays a baseline.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def vmrss_kb() -> int | None:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def main(snapshot_path: str, workers: int = 1) -> int:
    # Blocked before the core starts its threads (they inherit the mask): sigwait below then
    # receives the signal, with no race between a handler and a pause.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    rss_start = vmrss_kb()
    import meshplane._core as mc

    rss_import = vmrss_kb()
    core = mc.Core(workers=workers)
    core.apply(Path(snapshot_path).read_bytes())
    print(json.dumps({"listeners": {k: v[1] for k, v in core.listeners().items()},
                      "rss_kb_interpreter": rss_start, "rss_kb_after_import": rss_import,
                      "core_version": getattr(mc, "__version__", "?")}), flush=True)
    signal.sigwait(stop)
    core.shutdown(0)
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: core_child.py SNAPSHOT.json [WORKERS]")
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 1))
