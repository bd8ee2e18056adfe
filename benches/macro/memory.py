"""Memory figures of benches/README.md ("Memory, second pass"), without the full harness.

    python benches/macro/memory.py run [--smaps] [--yaml]  # idle `meshplane run` VmRSS (+
                                   # AnonHugePages; --smaps: by component and the largest
                                   # mappings; --yaml: the config file in YAML instead of JSON)
    python benches/macro/memory.py conns [N]    # KiB per idle HTTP/1.1 keep-alive connection
    python benches/macro/memory.py conns tls [N]        # the same over TLS (trustme certificates)
    python benches/macro/memory.py conns nginx-tls [N]  # nginx (one worker) measured the same way
    python benches/macro/memory.py growth [tls] [N]     # bare Core VmRSS after 100k, +N, +N requests
    python benches/macro/memory.py imports      # VmRSS added by each import of `meshplane run`

Upstream: a threaded `http.server` (HTTP/1.1, 5-byte body) on 127.0.0.1. `run` starts
`python -m meshplane.cli run` with `bench_configs.meshplane_run_config` (one listener, admin API
on; JSON, or YAML with --yaml) and reads VmRSS after one proxied request (the package is
byte-compiled first, as pip does). `conns` starts a bare Core (`core_child.py`, one
listener), opens and closes 24 warm-up connections, then holds N (1,000) connections open, each
after one keep-alive GET, and divides the VmRSS increase by N (`tls`: through a STRICT TLS
listener, TLS 1.3, certificates from trustme; `nginx-tls`: an nginx worker proxying to the same
upstream, its VmRSS measured the same way). Run from the repository root with
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
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_configs import (  # noqa: E402
    HOST,
    meshplane_run_config,
    meshplane_snapshot,
    proxy_nginx_conf,
    upstream_nginx_conf,
)

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


def _print_smaps(pid: int, top: int = 25) -> None:
    """Rss / Private_Dirty / Anonymous per mapping (summed by file name and permissions)."""
    agg: dict[tuple[str, str], dict[str, int]] = {}
    cur = ("?", "?")
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            path = parts[5] if len(parts) > 5 else "[anon]"
            cur = (path.rsplit("/", 1)[-1], parts[1])
            agg.setdefault(cur, {"Rss": 0, "Private_Dirty": 0, "Anonymous": 0})
        elif len(parts) >= 2 and parts[0][:-1] in agg[cur]:
            agg[cur][parts[0][:-1]] += int(parts[1])
    print(f"{'mapping':40s} {'perm':5s} {'Rss':>7s} {'PrivDirty':>9s} {'Anon':>7s}  (kB)")
    for (name, perm), c in sorted(agg.items(), key=lambda kv: -kv[1]["Rss"])[:top]:
        print(f"{name[:40]:40s} {perm:5s} {c['Rss']:7d} {c['Private_Dirty']:9d} "
              f"{c['Anonymous']:7d}")


def _components(pid: int) -> None:
    """VmRSS by component (kB): anonymous memory by what owns it, file-backed pages and the
    pages relocated at load (the anonymous part of a library's mapping) by library."""
    total: dict[str, int] = {}
    name, perm, size = "[anon]", "", 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            name, perm, size = (parts[5] if len(parts) > 5 else "[anon]"), parts[1], end - start
            continue
        if parts[0] not in ("Rss:", "Anonymous:"):
            continue
        kb = int(parts[1])
        lib = re.sub(r"(\.cpython-\d+[^.]*)?\.so.*$", "", name.rsplit("/", 1)[-1])
        if name == "[anon]" and parts[0] == "Rss:":
            # mimalloc reserves its arena as one 1 GiB mapping; thread stacks are 8 MiB (glibc)
            # or 2 MiB (Rust std) mappings with a few pages touched; the rest is Python's
            # obmalloc arenas (1 MiB each) and blocks over 512 bytes that glibc mmapped.
            key = ("anon: mimalloc arena (Rust core)" if size >= 1 << 30 else
                   "anon: thread stacks" if size in (8 << 20, 2 << 20) and kb < 512 else
                   "anon: Python obmalloc arenas")
        elif name == "[heap]" and parts[0] == "Rss:":
            key = "anon: [heap] (glibc malloc: Python objects > 512 B, C libraries)"
        elif name == "[stack]" and parts[0] == "Rss:":
            key = "anon: main thread stack"
        elif name.startswith("/") and parts[0] == "Rss:":
            key = f"file: {lib} ({'text' if 'x' in perm else 'data'})"
        elif name.startswith("/") and parts[0] == "Anonymous:":
            # counted under Rss above as file-backed; moved here: written at load (relocations)
            total[f"file: {lib} ({'text' if 'x' in perm else 'data'})"] -= kb
            key = f"anon: relocated/.data of {lib}"
        else:
            continue
        total[key] = total.get(key, 0) + kb
    print(f"{'component':66s} {'kB':>7s}")
    for key, kb in sorted(total.items(), key=lambda kv: -kv[1]):
        if kb >= 40:
            print(f"{key:66s} {kb:7d}")
    print(f"{'(smaller ones)':66s} {sum(v for v in total.values() if v < 40):7d}")


def _compile_package() -> None:
    """Byte-compile the meshplane package that `meshplane run` will import, as `pip install`
    does for a wheel: without .pyc files (a checkout run with PYTHONDONTWRITEBYTECODE=1) every
    run compiles the modules from source, which leaves ~0.5 MiB more resident."""
    code = "import compileall, os, meshplane; compileall.compile_dir(os.path.dirname(meshplane.__file__), quiet=1)"
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True)


def run_idle(work: Path, smaps: bool = False, as_yaml: bool = False) -> None:
    _compile_package()
    doc = meshplane_run_config(_upstream())
    if as_yaml:
        import yaml  # a runtime dependency of meshplane

        cfg = work / "memory-run.yaml"
        cfg.write_text(yaml.safe_dump(doc))
    else:
        cfg = work / "memory-run.json"
        cfg.write_text(json.dumps(doc))
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
        threads = _status(proc.pid, "Threads")
        print(f"idle `meshplane run`: VmRSS {rss} kB ({rss / 1024:.1f} MiB), "
              f"AnonHugePages {huge} kB, {threads} threads")
        if smaps:
            _components(proc.pid)
            _print_smaps(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def _one_request(port: int, tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
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


def _certificates(work: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A throw-away CA and a `localhost` certificate (trustme, from the test extra)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    cert, key = work / "memory-cert.pem", work / "memory-key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["http/1.1"])
    return cert, key, client


def _hold(pid: int, port: int, count: int, what: str,
          tls: ssl.SSLContext | None = None) -> None:
    """Warm up, then hold `count` connections open after one request each; print the delta."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(3):
            for s in [_one_request(port, tls) for _ in range(8)]:
                s.close()
        time.sleep(0.3)
        before = _status(pid, "VmRSS")
        held = [_one_request(port, tls) for _ in range(count)]
        time.sleep(0.3)
        after = _status(pid, "VmRSS")
        print(f"{what} idle {before} kB; +{count} idle keep-alive connections: "
              f"+{after - before} kB = {(after - before) / count:.1f} KiB each")
    finally:
        for s in held:
            s.close()


def conns(work: Path, count: int, mode: str) -> None:
    tls = None
    if mode in ("tls", "nginx-tls"):
        cert, key, tls = _certificates(work)
    if mode == "nginx-tls":
        return _nginx_tls(work, count, cert, key, tls)
    snap = work / "memory-snapshot.json"
    doc = meshplane_snapshot(_upstream(), None, two_listeners=False, version="memory",
                             tls=None if tls is None else (0, cert, key))
    snap.write_text(json.dumps(doc))
    proc = subprocess.Popen([sys.executable, str(HERE / "core_child.py"), str(snap)],
                            stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())["listeners"]
        port = ports["h1tls" if tls is not None else "h1"]
        _hold(proc.pid, port, count, "bare Core" + (" (TLS listener)" if tls else ""), tls)
    finally:
        proc.terminate()
        proc.wait(10)


def _nginx_tls(work: Path, count: int, cert: Path, key: Path, tls: ssl.SSLContext) -> None:
    """The same measurement against nginx (one worker) proxying to the same upstream."""
    prefix = work / "memory-nginx"
    for d in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    port = listen.getsockname()[1]
    listen.close()  # nginx binds it next; a race with another process is unlikely here
    conf = prefix / "nginx.conf"
    conf.write_text(proxy_nginx_conf(prefix, 0, 0, _upstream(), (port, cert, key))
                    .replace(f"listen {HOST}:0;", "").replace(f"listen {HOST}:0 http2;", ""))
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        _hold(int(children[0]), port, count, "nginx worker (TLS)", tls)
    finally:
        proc.terminate()
        proc.wait(10)


def growth(work: Path, count: int, tls_on: bool) -> None:
    """VmRSS of a bare Core after 100,000 requests, then after each of two runs of `count`
    (`h2load --h1 -c 50 -t1`, an nginx upstream as in run.py)."""
    prefix = work / "memory-growth"
    for d in ("", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind((HOST, 0))
        ports.append(s.getsockname()[1])
        s.close()  # nginx binds it next; a race with another process is unlikely here
    (prefix / "nginx.conf").write_text(upstream_nginx_conf(prefix, ports[0], ports[1]))
    nginx = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
    tls = _certificates(work)[:2] if tls_on else None
    snap = work / "memory-growth.json"
    snap.write_text(json.dumps(meshplane_snapshot(
        ports[0], None, two_listeners=False, version="memory",
        tls=None if tls is None else (0, tls[0], tls[1]))))
    proc = subprocess.Popen([sys.executable, str(HERE / "core_child.py"), str(snap)],
                            stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["listeners"]["h1tls" if tls_on else "h1"]
        url = f"{'https' if tls_on else 'http'}://{HOST}:{port}/"
        for n in (100_000, count, count):
            out = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "50", "-t1", url],
                                 capture_output=True, text=True, check=True).stdout
            done = re.search(r"(\d+) succeeded, (\d+) failed", out)
            print(f"+{n} requests ({done[1] if done else '?'} succeeded, "
                  f"{done[2] if done else '?'} failed): VmRSS {_status(proc.pid, 'VmRSS')} kB",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        nginx.terminate()
        nginx.wait(10)


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
        run_idle(work, smaps="--smaps" in sys.argv[2:], as_yaml="--yaml" in sys.argv[2:])
    elif what == "conns":
        rest = sys.argv[2:]
        mode = rest.pop(0) if rest and not rest[0].isdigit() else "h1"
        if mode not in ("h1", "tls", "nginx-tls"):
            sys.exit(__doc__)
        conns(work, int(rest[0]) if rest else 1000, mode)
    elif what == "growth":
        rest = sys.argv[2:]
        tls_on = bool(rest) and rest[0] == "tls"
        rest = rest[1:] if tls_on else rest
        growth(work, int(rest[0]) if rest else 1_000_000, tls_on)
    elif what == "imports":
        imports()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
