"""TLS for the macro benchmark: the certificate every target presents, the HTTPS readiness
probe, the full-handshake load generator and the idle-connection memory measurement.

- `make_certificate`: one self-signed ECDSA P-256 certificate (SANs localhost, 127.0.0.1) made
  with the `openssl` CLI in the work directory; the same files for every target.
- `https_get_ok`: one HTTPS GET on a fresh connection (readiness).
- `s_time_argv` / `parse_s_time`: `openssl s_time -new -www /`: a full handshake (no session
  resumption) and one HTTP/1.0 request per connection, sequentially; the harness runs several
  at once. Why not wrk: it reuses its TLS session when it reconnects (observed with nginx's
  `$ssl_session_reused`), so `Connection: close` measures abbreviated handshakes.
- `idle_memory`: open N plaintext, then N TLS connections (one keep-alive request each, so
  the server has finished every handshake) and read the server's RSS before, between, after.

Standard library plus the `openssl` binary; only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import resource
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_configs import BODY, HOST


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM certificate
    key: Path  # PEM private key (PKCS#8)
    combined: Path  # certificate + key (HAProxy's `crt`)


def make_certificate(openssl: str, workdir: Path) -> TlsFiles:
    """A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1, valid 30 days."""
    folder = workdir / "tls"
    folder.mkdir(exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj",
         "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    combined = folder / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    for path in (cert, key, combined):
        path.chmod(0o644)  # nginx workers may run as another user
    return TlsFiles(cert, key, combined)


def client_context() -> ssl.SSLContext:
    """No verification: the targets present the benchmark's own self-signed certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def https_get_ok(port: int, timeout: float = 2.0) -> bool:
    """One HTTPS GET / on a fresh connection: 200 with the upstream's body?"""
    conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=client_context())
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().decode(errors="replace") == BODY
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def s_time_argv(openssl: str, port: int, duration: int) -> list[str]:
    return [openssl, "s_time", "-connect", f"{HOST}:{port}", "-new", "-www", "/",
            "-time", str(duration)]


_S_TIME = re.compile(r"^(\d+) connections in ([\d.]+)s;", re.M)


def parse_s_time(outputs: list[str], wall_s: float, failures: list[str]) -> dict[str, Any]:
    """One result from the concurrent s_time runs: total connections / wall-clock time."""
    total = 0
    for text in outputs:
        m = _S_TIME.search(text)
        if m is None:
            failures.append("could not parse s_time output: " + text[-200:])
            continue
        total += int(m[1])
    r: dict[str, Any] = {"requests": total, "errors": len(failures),
                         "rps": total / wall_s if total and wall_s > 0 else None}
    if failures:
        r["error"] = "; ".join(failures[:3])
    return r


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def _open_idle(port: int, ctx: ssl.SSLContext | None) -> socket.socket:
    """A connection (TLS when `ctx` is given) that has carried one keep-alive request."""
    sock: socket.socket = socket.create_connection((HOST, port), timeout=10)
    if ctx is not None:
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while not data.endswith(BODY.encode()):
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed before the response ended")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise OSError(f"unexpected response: {data[:40]!r}")
    return sock


def idle_memory(plain_port: int, tls_port: int, rss_kb: Callable[[], int],
                count: int = 1000) -> dict[str, Any]:
    """The server's RSS (`rss_kb()`) as `count` idle plaintext connections open, then `count`
    idle TLS connections on top (each after one keep-alive request; all held until the end,
    so no freed memory is reused by the second set). A few connections open and close first,
    so one-time costs (buffers, session cache) are not counted."""
    raise_fd_limit(2 * count + 256)
    ctx = client_context()
    for port, context in ((plain_port, None), (tls_port, ctx)):
        for s in [_open_idle(port, context) for _ in range(8)]:
            s.close()
    time.sleep(0.2)  # the server finishes closing those before the first reading
    readings = [rss_kb()]
    conns: list[socket.socket] = []
    try:
        for context in (None, ctx):
            port = plain_port if context is None else tls_port
            for _ in range(count):
                conns.append(_open_idle(port, context))
            time.sleep(0.2)  # every response was read; let the server settle
            readings.append(rss_kb())
    except OSError as exc:
        return {"error": f"after {len(conns)} connections: {exc}"}
    finally:
        for s in conns:
            with contextlib.suppress(OSError):
                s.close()
    before, plain, tls = readings
    return {"connections": count, "before_kb": before, "plain_kb": plain, "tls_kb": tls,
            "plain_delta_kb": plain - before, "tls_delta_kb": tls - plain}
