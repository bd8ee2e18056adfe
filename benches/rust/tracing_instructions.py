"""What tracing costs a request in instructions, counted by `valgrind --tool=callgrind`:
repeatable on a shared, noisy machine where requests per second are not.

Runs the `tracing_cost` bench binary in its counting mode (`TRACING_BENCH_VARIANT`,
`TRACING_BENCH_REQUESTS`) under callgrind for each variant at two request counts; the
difference of the two totals divided by the difference of the counts is the instructions per
request, so process start-up, runtime creation and warm-up cancel out. Everything in the
process is counted (proxy worker, exporter thread, load generator, upstream, OTLP sink);
`direct` (load generator straight to the upstream) measures the part that is not the proxy,
which is subtracted to give the proxy's own instructions per request.

    CARGO_PROFILE_BENCH_LTO=false CARGO_PROFILE_BENCH_CODEGEN_UNITS=16 \\
        cargo bench --bench tracing_cost --no-run
    python3 benches/rust/tracing_instructions.py [--binary PATH] [--small 1000 --large 5000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys

VARIANTS = {
    "direct": "no proxy (load generator and upstream only)",
    "off": "tracing off",
    "1": "1% sampled",
    "100": "100% sampled",
    "gone": "100%, collector gone",
}
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def find_binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    found = [p for p in glob.glob(os.path.join(target, "release", "deps", "tracing_cost-*"))
             if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not found:
        sys.exit(f"no tracing_cost bench binary under {target}/release/deps: "
                 "run `cargo bench --bench tracing_cost --no-run` first (or pass --binary)")
    return max(found, key=os.path.getmtime)


def instructions(binary: str, variant: str, requests: int) -> int:
    env = {**os.environ, "TRACING_BENCH_VARIANT": variant, "TRACING_BENCH_REQUESTS": str(requests)}
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", binary],
        env=env, capture_output=True, text=True, timeout=1800, check=False,
    )
    found = COLLECTED.search(run.stderr)
    if run.returncode != 0 or found is None:
        sys.exit(f"callgrind run of {variant} ({requests} requests) failed:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", help="the tracing_cost bench binary (default: newest built)")
    parser.add_argument("--small", type=int, default=1000, help="requests of the short run")
    parser.add_argument("--large", type=int, default=5000, help="requests of the long run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, variants interleaved")
    args = parser.parse_args()
    binary = args.binary or find_binary()
    per_request: dict[str, list[float]] = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for round_ in range(args.repeat):
        for k in range(len(names)):
            variant = names[(k + round_) % len(names)]
            small = instructions(binary, variant, args.small)
            large = instructions(binary, variant, args.large)
            value = (large - small) / (args.large - args.small)
            per_request[variant].append(value)
            print(f"round {round_} {variant:>6}: {value:,.0f} instructions/request", file=sys.stderr)
    median = {v: statistics.median(xs) for v, xs in per_request.items()}
    spread = {v: (max(xs) - min(xs)) / median[v] for v, xs in per_request.items()}
    proxy = {v: median[v] - median["direct"] for v in VARIANTS if v != "direct"}
    print(f"instructions per request, callgrind, {args.small} vs {args.large} requests, "
          f"median of {args.repeat}\n")
    print("| variant | whole process | spread | the proxy's (minus direct) | tracing cost vs off |")
    print("|---|---:|---:|---:|---:|")
    for v, label in VARIANTS.items():
        own = f"{proxy[v]:,.0f}" if v in proxy else "-"
        cost = f"{(proxy[v] / proxy['off'] - 1) * 100:+.2f}%" if v in proxy and v != "off" else "-"
        print(f"| {label} | {median[v]:,.0f} | {spread[v] * 100:.2f}% | {own} | {cost} |")


if __name__ == "__main__":
    main()
