"""The package as users get it: run the installed `meshplane` from a fresh virtual environment.

Run with that environment's interpreter, isolated (`python -I`) and outside the checkout, so
nothing but the installed wheel and its declared dependencies can be imported:

    VENV/bin/python -I .ci/smoke.py EXAMPLES_DIR

It checks `meshplane version` (the compiled core loads), `meshplane validate` of every example,
`meshplane demo --duration 3`, and `meshplane run` of examples/gateway.yaml with one real request
through it to a real upstream (the standard library's HTTP server). Ports are all bound on 0 and
read back. Any failure, such as a run-time import that the wheel does not declare, exits non-zero.
Only the standard library is imported here.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
MESHPLANE = str(BIN / "meshplane")
STEP_TIMEOUT = 120.0


def step(title: str) -> None:
    print(f"smoke: {title}", flush=True)


def check(args: list[str], *, timeout: float = STEP_TIMEOUT) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"smoke: FAILED ({proc.returncode}): {' '.join(args)}\n{out}")
    return out


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = json.dumps({"path": self.path, "host": self.headers.get("host")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def run_example(example: Path, workdir: Path) -> None:
    """`meshplane run` of the gateway example, its catalog nodes pointed at a real upstream."""
    # The example is YAML; the wheel's own YAML dependency reads it (the installed package
    # imports it anyway, so this adds nothing that the wheel does not declare).
    import yaml

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = upstream.server_address[1]

    config = yaml.safe_load(example.read_text())
    config["proxy"]["admin"] = "127.0.0.1:0"
    config["proxy"]["ports"] = {p: 0 for p in config["proxy"].get("ports", {8080: 0})}
    for res in config["resources"]:
        sd = res.get("spec", {}).get("serviceDiscovery", {})
        if "static" in sd:
            sd["static"]["endpoints"] = [f"127.0.0.1:{port}"]
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))

    proc = subprocess.Popen([MESHPLANE, "run", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    listener = None
    deadline = time.monotonic() + STEP_TIMEOUT
    try:
        while listener is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                sys.exit("smoke: FAILED: no listener line from meshplane run\n" + "".join(seen))
            line = proc.stdout.readline()
            if not line:
                sys.exit("smoke: FAILED: meshplane run exited\n" + "".join(seen))
            seen.append(line)
            m = re.match(r"listener \S+ ([\d.]+):(\d+)", line)
            if m:
                listener = (m.group(1), int(m.group(2)))
        req = urllib.request.Request(f"http://{listener[0]}:{listener[1]}/items?x=1",
                                     headers={"host": "www.example.org"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
        if resp.status != 200 or body["path"] != "/items?x=1":
            sys.exit(f"smoke: FAILED: unexpected answer {resp.status} {body}")
        # The catalog route rewrites Host to the service name (App Mesh's default).
        print(f"smoke: GET /items through the gateway -> {resp.status} {body}", flush=True)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        if proc.returncode != 0:
            sys.exit(f"smoke: FAILED: meshplane run exited {proc.returncode}\n{''.join(seen)}{rest}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        upstream.shutdown()


def main() -> None:
    examples = Path(sys.argv[1]).resolve()
    step("the package comes from the virtual environment, not the checkout")
    where = check([str(BIN / "python"), "-I", "-c", "import meshplane, meshplane._core; print(meshplane.__file__)"])
    if Path(sys.prefix).resolve() not in Path(where.strip()).resolve().parents:
        sys.exit(f"smoke: FAILED: meshplane imported from {where.strip()}, not from {sys.prefix}")

    step("meshplane version")
    out = check([MESHPLANE, "version"])
    print(out, end="")
    if "core: not installed" in out:
        sys.exit("smoke: FAILED: the compiled core does not load")

    files = sorted(p for p in examples.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    if not files:
        sys.exit(f"smoke: FAILED: no examples in {examples}")
    step(f"meshplane validate {' '.join(p.name for p in files)}")
    print(check([MESHPLANE, "validate", *map(str, files)]), end="")

    step("meshplane demo --duration 3")
    out = check([MESHPLANE, "demo", "--duration", "3"])
    print("\n".join(out.splitlines()[-8:]))

    step("meshplane run examples/gateway.yaml with one request to a real upstream")
    with tempfile.TemporaryDirectory() as tmp:
        run_example(examples / "gateway.yaml", Path(tmp))
    step("OK")


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)
    main()
