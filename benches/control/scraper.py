"""The control-plane bench's admin client, run as a process of its own (as Prometheus is).

Reads one URL per line on stdin; for each, GETs it on a new connection, reads the whole body
and writes `<seconds> <status> <body bytes>` on a line of stdout. Ends at end of input.
Standard library only, so its startup and parsing share nothing with the proxy's process.
"""

from __future__ import annotations

import sys
import time
import urllib.request


def main() -> None:
    for line in sys.stdin:
        url = line.strip()
        if not url:
            continue
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (loopback admin URL)
            size = len(response.read())
            status = response.status
        sys.stdout.write(f"{time.perf_counter() - start:.6f} {status} {size}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
