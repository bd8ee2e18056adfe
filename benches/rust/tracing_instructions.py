"""What tracing costs a request in instructions, counted by `valgrind --tool=callgrind`:
repeatable on a shared, noisy machine where requests per second are not.

Runs the `tracing_cost` bench binary in its counting mode (`TRACING_BENCH_VARIANT`,
`TRACING_BENCH_REQUESTS`) under callgrind for each variant at two request counts; the
difference of the two totals divided by the difference of the counts is the instructions per
request, so process start-up, runtime creation and warm-up cancel out.

Two figures per variant:

- *the proxy's threads* (the figure the targets are read against): callgrind runs with
  `--separate-threads=yes`, one profile per thread, numbered in the order the threads were
  created. The bench creates its harness first: thread 1 is the main thread (the load
  generator), 2 the upstream, 3 the OTLP sink; only then the proxy's `Runtime`. Threads 1-3
  are the harness; every later thread is counted as the proxy's: the runtime thread (with one
  worker the proxy runs on it), the exporter thread (`meshplane-trace`: encoding,
  connecting, POSTing) and any thread they start. So what the in-process upstream spends
  parsing a propagated header, or the sink reading a POST, is not charged to the proxy, and
  everything the proxy does is. As a check, a thread counted as the proxy's must not run a
  function of the bench file (`tracing_cost::...`), and the upstream's must.
- *the whole process* (every thread), and the whole process minus `direct` (the load
  generator straight to the upstream), the figure of earlier runs.

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
import tempfile

VARIANTS = {
    "direct": "no proxy (load generator and upstream only)",
    "off": "tracing off",
    "1": "1% sampled",
    "100": "100% sampled",
    "gone": "100%, collector gone",
}
TOTALS = re.compile(r"^(?:totals|summary):\s*(\d+)", re.M)
# A function defined in the bench file: its thread is the harness's, not the proxy's.
HARNESS_FN = re.compile(r"^c?fn=(?:\(\d+\))?\s*tracing_cost::", re.M)
EXPORTER_FN = re.compile(r"^c?fn=.*meshplane::trace::export::send\b", re.M)


def find_binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    found = [p for p in glob.glob(os.path.join(target, "release", "deps", "tracing_cost-*"))
             if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not found:
        sys.exit(f"no tracing_cost bench binary under {target}/release/deps: "
                 "run `cargo bench --bench tracing_cost --no-run` first (or pass --binary)")
    return max(found, key=os.path.getmtime)


def instructions(binary: str, variant: str, requests: int) -> dict[str, int]:
    """Instructions of one run: `whole`, `proxy` (non-harness threads), `exporter`."""
    env = {**os.environ, "TRACING_BENCH_VARIANT": variant, "TRACING_BENCH_REQUESTS": str(requests)}
    with tempfile.TemporaryDirectory(prefix="tracing-cg-") as tmp:
        out = os.path.join(tmp, "cg.out")
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={out}", binary],
            env=env, capture_output=True, text=True, timeout=1800, check=False,
        )
        if run.returncode != 0:
            sys.exit(f"callgrind run of {variant} ({requests} requests) failed:\n{run.stderr[-2000:]}")
        counts = {"whole": 0, "proxy": 0, "exporter": 0, "proxy_threads": 0}
        files = sorted(glob.glob(out + "-*"), key=lambda p: int(p.rsplit("-", 1)[1]))
        if len(files) < 4:
            sys.exit(f"{variant}: {len(files)} thread profiles, expected the harness's 3 and the proxy's")
        for path in files:
            number = int(path.rsplit("-", 1)[1])
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            found = TOTALS.search(text)
            if found is None:
                sys.exit(f"{path}: no totals line")
            n = int(found.group(1))
            counts["whole"] += n
            harness = HARNESS_FN.search(text) is not None
            if number == 2 and not harness:
                sys.exit(f"{path}: thread 2 (the upstream) runs no tracing_cost:: function: "
                         "is the binary built with symbols, are the threads still created in order?")
            if number > 3:
                if harness:
                    sys.exit(f"{path}: a thread counted as the proxy's runs the bench's code")
                counts["proxy"] += n
                counts["proxy_threads"] += 1
                if EXPORTER_FN.search(text):
                    counts["exporter"] += n
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", help="the tracing_cost bench binary (default: newest built)")
    parser.add_argument("--small", type=int, default=1000, help="requests of the short run")
    parser.add_argument("--large", type=int, default=5000, help="requests of the long run")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, variants interleaved")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    args = parser.parse_args()
    binary = args.binary or find_binary()
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            sys.exit(f"unknown variant {v}")
    kinds = ("whole", "proxy", "exporter")
    per_request: dict[str, dict[str, list[float]]] = {v: {k: [] for k in kinds} for v in names}
    for round_ in range(args.repeat):
        for k in range(len(names)):
            variant = names[(k + round_) % len(names)]
            small = instructions(binary, variant, args.small)
            large = instructions(binary, variant, args.large)
            for kind in kinds:
                value = (large[kind] - small[kind]) / (args.large - args.small)
                per_request[variant][kind].append(value)
            print(f"round {round_} {variant:>6}: "
                  f"{per_request[variant]['proxy'][-1]:,.0f} proxy threads, "
                  f"{per_request[variant]['exporter'][-1]:,.0f} of them exporter, "
                  f"{per_request[variant]['whole'][-1]:,.0f} whole process "
                  f"instructions/request", file=sys.stderr)
    med = {v: {k: statistics.median(xs) for k, xs in d.items()} for v, d in per_request.items()}
    # The spread of the proxy's figure (of the whole process for `direct`, which has no proxy).
    spread = {v: (max(d[k]) - min(d[k])) / max(med[v][k], 1)
              for v, d in per_request.items() for k in ["whole" if v == "direct" else "proxy"]}

    def cost(v: str, kind: str) -> str:
        if v in ("off", "direct") or "off" not in med:
            return "-"
        if kind == "minus direct":
            if "direct" not in med:
                return "-"
            own = med[v]["whole"] - med["direct"]["whole"]
            return f"{(own / (med['off']['whole'] - med['direct']['whole']) - 1) * 100:+.2f}%"
        return f"{(med[v][kind] / med['off'][kind] - 1) * 100:+.2f}%"

    print(f"instructions per request, callgrind --separate-threads=yes, "
          f"{args.small} vs {args.large} requests, median of {args.repeat}\n")
    print("| variant | proxy's threads | of which exporter | spread (max-min)/median | cost vs off "
          "| whole process | whole minus direct | cost vs off (whole minus direct) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in names:
        m = med[v]
        minus = f"{m['whole'] - med['direct']['whole']:,.0f}" if "direct" in med and v != "direct" else "-"
        own = "-" if v == "direct" else f"{m['proxy']:,.0f}"
        print(f"| {VARIANTS[v]} | {own} | {m['exporter']:,.0f} | "
              f"{spread[v] * 100:.2f}% | {cost(v, 'proxy')} | {m['whole']:,.0f} | {minus} | "
              f"{cost(v, 'minus direct')} |")


if __name__ == "__main__":
    main()
