"""Summaries and the Markdown report of a macro benchmark run (see run.py for the JSON shape)."""

from __future__ import annotations

import statistics
from typing import Any

PEERS = ("nginx", "haproxy", "envoy")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if r.get("rps") is not None]

    def med(key: str) -> float | None:
        values = [r[key] for r in good if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        "rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
        "target_cpu_us_per_req": med("target_cpu_us_per_req"),
        "upstream_cpu_us_per_req": med("upstream_cpu_us_per_req"),
        "target_runqueue_wait_s": med("target_runqueue_wait_s"),
        "upstream_runqueue_wait_s": med("upstream_runqueue_wait_s"),
        "target_cpu_s": med("target_cpu_s"), "upstream_cpu_s": med("upstream_cpu_s"),
        "rps_min": min((r["rps"] for r in good), default=None),
        "rps_max": max((r["rps"] for r in good), default=None),
        "errors": sum(r.get("errors", 0) for r in runs),
        "failed_runs": sum(1 for r in runs if r.get("error")),
        "runs": len(runs),
    }


def fmt_rps(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_spread(s: dict[str, Any]) -> str:
    """(max - min) / median of the runs' req/s, as ±%: how noisy this row was."""
    lo, hi, mid = s.get("rps_min"), s.get("rps_max"), s.get("rps")
    if lo is None or hi is None or not mid or s.get("runs", 0) < 2:
        return "–"
    return f"±{50 * (hi - lo) / mid:.0f}%"


def fmt_cpu(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def fmt_s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def fmt_ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"### meshplane macro benchmark, {result['started']}",
        "",
        f"`{result['command']}`  ",
        f"{result['machine']['cpus']} CPUs ({result['machine']['processor']}), load average "
        f"{result['machine']['loadavg_before']} before / {result['machine']['loadavg_after']} "
        f"after; each figure is the median of {cfg['repeat']} interleaved runs of "
        f"{cfg['duration']:g} s; wrk -t{cfg['threads']} -c{cfg['connections']}, h2load -t1 "
        f"-c{cfg['h2_clients']} -m{cfg['h2_streams']}"
        + ("; load generator pinned to CPU 0, servers to the rest" if cfg["pin"] else "") + ".",
        "",
        "| scenario | target | req/s | spread | p50 ms | p99 ms | errors | CPU µs/req: target "
        "+ upstream |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for sc_name, per_target in result["scenarios"].items():
        for tname, s in per_target["targets"].items():
            if "skipped" in s:
                lines.append(f"| {sc_name} | {tname} | n/a | | | | {s['skipped']} |")
                continue
            err = str(s["errors"]) + (f" ({s['failed_runs']} failed runs)" if s["failed_runs"]
                                      else "")
            lines.append(f"| {sc_name} | {tname} | {fmt_rps(s['rps'])} | {fmt_spread(s)} "
                         f"| {fmt_ms(s['p50_ms'])} | {fmt_ms(s['p99_ms'])} | {err} "
                         f"| {fmt_cpu(s.get('target_cpu_us_per_req'))} + "
                         f"{fmt_cpu(s.get('upstream_cpu_us_per_req'))} |")
    others = ("direct", *PEERS)
    lines += ["", "Throughput ratios, meshplane req/s ÷ other req/s (> 1: meshplane faster; "
              "p99 ratio meshplane ÷ other in brackets, < 1: meshplane lower):", "",
              "| scenario | " + " | ".join(f"meshplane/{o}" for o in others) + " |",
              "| --- | " + " | ".join("---:" for _ in others) + " |"]
    for sc_name, per_target in result["scenarios"].items():
        cells = []
        for o in others:
            r = per_target["ratios"].get(o, {})
            if r.get("rps") is None:
                cells.append("–")
            else:
                p99 = r.get("p99")
                cells.append(fmt_ratio(r["rps"]) + (f" ({fmt_ratio(p99)})" if p99 else ""))
        lines.append(f"| {sc_name} | " + " | ".join(cells) + " |")
    lat = [(n, p) for n, p in result["scenarios"].items() if p.get("tool") == "openloop"]
    for sc_name, per_target in lat:
        direct = per_target["targets"].get("direct", {})
        lines += ["", f"{sc_name}: latency added over direct at {result.get('rate', 0):,} req/s "
                  "(target's percentile minus direct's, ms; from each request's due time):", "",
                  "| target | p50 added | p99 added | achieved req/s | errors (incl. unsent) "
                  "| CPU s: target + upstream | waiting for a CPU s: target + upstream |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for tname, s in per_target["targets"].items():
            if tname == "direct" or "skipped" in s:
                continue
            cells = []
            for f in ("p50_ms", "p99_ms"):
                v, d = s.get(f), direct.get(f)
                cells.append("–" if v is None or d is None else f"{v - d:+.3f}")
            lines.append(f"| {tname} | {cells[0]} | {cells[1]} | {fmt_rps(s['rps'])} "
                         f"| {s['errors']} | {fmt_s(s.get('target_cpu_s'))} + "
                         f"{fmt_s(s.get('upstream_cpu_s'))} | "
                         f"{fmt_s(s.get('target_runqueue_wait_s'))} + "
                         f"{fmt_s(s.get('upstream_runqueue_wait_s'))} |")
    mem = result["memory"]
    lines += ["", "Resident memory (VmRSS):", "", "| process | RSS MiB | notes |",
              "| --- | ---: | --- |"]
    core = mem.get("meshplane_idle", {}).get("core", {})
    if "rss_kb" in core:
        lines.append(f"| meshplane bare Core, idle (1 listener) | {core['rss_kb'] / 1024:.1f} | "
                     f"python alone {core['interpreter_only_kb'] / 1024:.1f}, after import "
                     f"{core['after_import_kb'] / 1024:.1f} |")
    elif core:
        lines.append(f"| meshplane bare Core, idle | – | {core.get('error')} |")
    run = mem.get("meshplane_idle", {}).get("run", {})
    if "rss_kb" in run:
        lines.append(f"| `meshplane run`, idle (1 listener) | {run['rss_kb'] / 1024:.1f} | "
                     "Trio control layer + Core |")
    elif run:
        lines.append(f"| `meshplane run`, idle | – | {run.get('error')} |")
    for tname, rss in mem.get("targets", {}).items():
        if "idle_after_start_kb" not in rss:
            continue
        after = rss.get("after_load_kb")
        lines.append(f"| {tname} as benchmarked (idle after start → after the load) | "
                     f"{rss['idle_after_start_kb'] / 1024:.1f} → "
                     f"{(after or 0) / 1024:.1f} | {rss.get('processes', '?')} process(es)"
                     + (" incl. Python" if tname == "meshplane" else "") + " |")
    for tname, idle in mem.get("tls_idle", {}).items():
        if "tls_delta_kb" not in idle:
            lines.append(f"| {tname}: idle connections | – | {idle.get('error')} |")
            continue
        n = idle["connections"]
        for kind in ("plain", "tls"):
            delta = idle[f"{kind}_delta_kb"]
            lines.append(
                f"| {tname}: + {n:,} idle {'TLS' if kind == 'tls' else 'plaintext'} "
                f"connections (one request each) | +{delta / 1024:.1f} | {delta / n:.1f} KiB "
                "per connection" + ("; opened with the plaintext ones still open |"
                                    if kind == "tls" else " |"))
    if "upstream_kb" in mem:
        lines.append(f"| upstream nginx (after the load) | {mem['upstream_kb'] / 1024:.1f} | "
                     "master + 1 worker |")
    lines += ["", "Versions: " + "; ".join(f"{k} {v}" for k, v in result["versions"].items())
              + f"; meshplane commit {result.get('git_commit') or '?'}"]
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"

