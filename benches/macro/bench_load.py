"""The load generators: wrk (HTTP/1.1) and h2load (cleartext HTTP/2, prior knowledge).

`wrk_argv` / `h2load_argv` build the command lines; `parse_wrk` / `parse_h2load` turn their
output into one result dict: rps, p50/p75/p90/p99 latency in ms, request and error counts.
wrk's percentiles come from `--latency`; h2load prints none, so they are computed from its
per-request `--log-file`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_configs import HOST

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values), max(1, math.ceil(q / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def wrk_argv(wrk: str, *, threads: int, connections: int, duration: int, port: int,
             headers: Sequence[str] = (), scheme: str = "http") -> list[str]:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    return [*argv, f"{scheme}://{HOST}:{port}/"]


def h2load_argv(h2load: str, *, clients: int, streams: int, duration: int, port: int,
                log: Path) -> list[str]:
    return [h2load, "-t1", f"-c{clients}", f"-m{streams}", f"-D{duration}",
            f"--log-file={log}", f"http://{HOST}:{port}/"]


def parse_wrk(text: str) -> dict[str, Any]:
    r: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m[1]) if m else None
    for q, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        r[f"p{q}_ms"] = float(v) * _UNIT_MS[u]
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    r["requests"] = int(m[1]) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, m.groups()), strict=True))
        errors += sum(r["socket_errors"].values())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non_2xx"] = int(m[1])
        errors += int(m[1])
    r["errors"] = errors
    if r["rps"] is None:
        r["error"] = "could not parse wrk output: " + text[-300:]
    return r


def parse_h2load(text: str, log: Path) -> dict[str, Any]:
    r: dict[str, Any] = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    r["rps"] = float(m[3]) if m else None
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    errors = 0
    if m:
        r["requests"] = int(m[4])
        errors += int(m[5]) + int(m[6]) + int(m[7])
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["non_2xx"] = int(m[2]) + int(m[3]) + int(m[4])
        errors += r["non_2xx"]
    r["errors"] = errors
    try:  # columns: start time (µs since epoch), status, µs until the end of the response
        lat = sorted(int(line.split("\t")[2]) / 1000.0
                     for line in log.read_text().splitlines() if line.count("\t") >= 2)
        for q in (50, 75, 90, 99):
            r[f"p{q}_ms"] = percentile(lat, q)
    except (OSError, ValueError, IndexError) as exc:
        r["latency_error"] = str(exc)
    if r["rps"] is None:
        r["error"] = "could not parse h2load output: " + text[-300:]
    return r


def openloop_argv(openloop: str, *, rate: int, connections: int, duration: int,
                  port: int) -> list[str]:
    """The fixed-rate generator of benches/openloop (`cargo build --release --example
    openloop`): HTTP/1.1 keep-alive, latency from each request's due time."""
    return [openloop, "--rate", str(rate), "--connections", str(connections),
            "--duration", str(duration), "--timeout", "5", f"http://{HOST}:{port}/"]


def parse_openloop(text: str) -> dict[str, Any]:
    """Its one JSON line: rps is the achieved rate; errors include requests never sent (the
    target fell behind the fixed rate by more than the timeout)."""
    try:
        j = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"rps": None, "errors": 0, "error": "could not parse openloop output: "
                + text[-300:]}
    r: dict[str, Any] = {"rps": j["achieved_rps"], "rate": j["rate"], "requests": j["completed"],
                         "unsent": j["unsent"], "non_2xx": j["non_2xx"],
                         "errors": j["errors"] + j["non_2xx"] + j["unsent"]}
    for q, key in ((50, "p50_us"), (90, "p90_us"), (99, "p99_us"), (99.9, "p999_us")):
        r[f"p{q:g}_ms".replace(".", "")] = j[key] / 1000.0
    r["max_ms"] = j["max_us"] / 1000.0
    return r
