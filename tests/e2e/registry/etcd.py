"""Real etcd servers for the registry tests: `etcd` from Debian's etcd-server, on loopback ports
bound on 0 and read back, data in a temporary directory, readiness awaited by polling `/health`
(a bounded loop), never slept for."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

ETCD = shutil.which("etcd")
SKIP_REASON = "the etcd binary is absent (Debian: apt-get install etcd-server)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdMember:
    def __init__(self, name: str, data_dir: Path, tls: dict[str, str] | None = None) -> None:
        """`tls`: {"cert", "key", "ca"} PEM paths: serve clients over HTTPS and require a
        client certificate signed by `ca`."""
        self.tls = tls
        self.name = name
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{name}.log"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        assert ETCD is not None, SKIP_REASON
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                 "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                 "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                 "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
                 "--heartbeat-interval", "50", "--election-timeout", "500",
                 *(["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                    "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"] if self.tls else [])],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def healthy(self) -> bool:
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=self.tls["ca"])
            context.load_cert_chain(self.tls["cert"], self.tls["key"])
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1, context=context) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class EtcdCluster:
    """`size` etcd members on loopback; `url` is the meshplane store URL naming all of them."""

    def __init__(self, tmp: Path, size: int = 1, tls: dict[str, str] | None = None) -> None:
        self.members = [EtcdMember(f"m{i}", tmp / f"etcd-m{i}", tls) for i in range(size)]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start(self) -> EtcdCluster:
        for m in self.members:
            m.start(self.initial_cluster())
        self.wait_healthy(self.members)
        return self

    def wait_healthy(self, members: list[EtcdMember], deadline_s: float = 30.0) -> None:
        # Bounded polling: etcd reports readiness on /health; nothing here sleeps for it.
        end = time.monotonic() + deadline_s
        pending = list(members)
        while pending:
            for m in list(pending):
                assert m.process is not None and m.process.poll() is None, (
                    f"etcd {m.name} exited: {m.log.read_text(errors='replace')[-2000:]}")
                if m.healthy():
                    pending.remove(m)
            if pending and time.monotonic() > end:
                raise TimeoutError(f"etcd members {[m.name for m in pending]} not healthy")
            if pending:
                time.sleep(0.05)

    def restart(self, member: EtcdMember) -> None:
        member.start(self.initial_cluster(), state="existing")
        self.wait_healthy([member])

    def stop(self) -> None:
        for m in self.members:
            m.stop()
