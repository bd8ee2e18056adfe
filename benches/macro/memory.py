"""Memory figures of benches/README.md ("Memory, second pass"), without the full harness.

    python benches/macro/memory.py run          # idle `meshplane run` VmRSS (+ AnonHugePages)
    python benches/macro/memory.py conns [N]    # KiB per idle HTTP/1.1 keep-alive connection
    python benches/macro/memory.py imports      # VmRSS added by each import of `meshplane run`

Upstream: a threaded `http.server` (HTTP/1.1, 5-byte body) on 127.0.0.1. `run` starts
`python -m meshplane.cli run` with `bench_configs.meshplane_run_config` (one listener, admin API
on) and reads VmRSS after one proxied request. `conns` starts a bare Core (`core_child.py`, one
listener), opens and closes 24 warm-up connections, then holds N (1,000) connections open, each
after one keep-alive GET, and divides the VmRSS increase by N. Run from the repository root with
the built extension in python/meshplane (or PYTHONPATH set).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_configs import meshplane_run_config, meshplane_snapshot  # noqa: E402

BODY = b"hello"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def _upstream() -> int:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH") or str(HERE.parent.parent / "python")
    return dict(os.environ, PYTHONPATH=path)


def _status(pid: int, key: str, file: str = "status") -> int:
    m = re.search(rf"^{key}:\s+(\d+)", Path(f"/proc/{pid}/{file}").read_text(), re.MULTILINE)
    return int(m[1]) if m else 0


def run_idle(work: Path) -> None:
    cfg = work / "memory-run.json"
    cfg.write_text(json.dumps(meshplane_run_config(_upstream())))
    cmd = [sys.executable, "-m", "meshplane.cli", "run", str(cfg), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:
            m = re.match(r"^listener \S+ \S+:(\d+)$", line.strip())
            if m:
                port = int(m[1])
                break
        if port is None:
            sys.exit("meshplane run printed no listener line")
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        rss = _status(proc.pid, "VmRSS")
        huge = _status(proc.pid, "AnonHugePages", "smaps_rollup")
        print(f"idle `meshplane run`: VmRSS {rss} kB ({rss / 1024:.1f} MiB), "
              f"AnonHugePages {huge} kB")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def _one_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while not data.endswith(BODY):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed before the response ended")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise OSError(f"unexpected response: {data[:40]!r}")
    return sock


def conns(work: Path, count: int) -> None:
    snap = work / "memory-snapshot.json"
    snap.write_text(json.dumps(meshplane_snapshot(_upstream(), None, two_listeners=False,
                                                  version="memory")))
    proc = subprocess.Popen([sys.executable, str(HERE / "core_child.py"), str(snap)],
                            stdout=subprocess.PIPE, text=True, env=_env())
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = next(iter(json.loads(proc.stdout.readline())["listeners"].values()))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        for _ in range(3):
            for s in [_one_request(port) for _ in range(8)]:
                s.close()
        time.sleep(0.3)
        before = _status(proc.pid, "VmRSS")
        held = [_one_request(port) for _ in range(count)]
        time.sleep(0.3)
        after = _status(proc.pid, "VmRSS")
        print(f"bare Core idle {before} kB; +{count} idle keep-alive connections: "
              f"+{after - before} kB = {(after - before) / count:.1f} KiB each")
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)


def imports() -> None:
    code = (
        "import importlib, re, sys\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
        "print(f'interpreter {rss()} kB')\n"
        "for m in sys.argv[1:]:\n"
        "    a = rss(); importlib.import_module(m)\n"
        "    print(f'{m:28s} +{rss() - a} kB')\n"
        "print(f'total {rss()} kB; loaded:', ' '.join(n for n in ('sqlite3', 'h2', 'rich')\n"
        "      if n in sys.modules) or 'none of sqlite3, h2, rich')\n"
    )
    mods = ["trio", "yaml", "meshplane._core", "meshplane.config", "meshplane.policy",
            "meshplane.admin.server", "meshplane.drivers", "meshplane.runtime", "meshplane.cli"]
    subprocess.run([sys.executable, "-c", code, *mods], env=_env(), check=True)


def main() -> None:
    work = Path(os.environ.get("TMPDIR", "/tmp"))
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "run":
        run_idle(work)
    elif what == "conns":
        conns(work, int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
    elif what == "imports":
        imports()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
