"""Building blocks of the TLS end-to-end tests: certificates made by the tests, App Mesh-shaped
configs, a TLS upstream, and clients (Python ssl, curl, openssl s_client).

- `Pki`: a CA (trustme) that issues server and client certificates into a temporary directory,
  including SPIFFE URI SANs (trustme cannot; those are signed with `cryptography` directly).
  Nothing is committed: every key is generated when the test runs.
- `gateway_config` / `sidecar_config`: meshplane files with App Mesh resources in front of an
  upstream, with the TLS blocks under test.
- `TlsUpstream`: the data-plane tests' h11 echo server behind `trio.SSLStream`, recording each
  handshake's peer certificate and ALPN protocol.
- `handshake`, `run_tool`: one TLS handshake (peer certificate, version, ALPN) and an external
  client run with a bound.

Everything binds 127.0.0.1 port 0; readiness is awaited, never slept for.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..common import LOCALHOST
from ..dataplane.support import H1Upstream

GATEWAY_PORT = 8443
NODE_PORT = 8080
SERVICE = "api.shop.local"


# ---------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate written to disk: `chain` (leaf first) and `key` as separate PEM files, and
    `combined` (key + chain) for curl `--cert` and openssl `-cert`."""

    chain: Path
    key: Path
    combined: Path
    serial: int

    def snapshot(self) -> dict[str, str]:
        return {"certificateChain": str(self.chain), "privateKey": str(self.key)}

    def app_mesh(self) -> dict[str, Any]:
        """As an App Mesh `certificate` source."""
        return {"file": self.snapshot()}


def serial_of(der: bytes | None) -> int:
    assert der, "no peer certificate"
    return x509.load_der_x509_certificate(der).serial_number


def sans_of(der: bytes | None) -> list[str]:
    assert der, "no peer certificate"
    ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return [str(n.value) for n in ext.value]


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename over `path` (a reader sees old or new, not half)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Pki:
    """One CA and the certificates it issues, as PEM files under `root`."""

    def __init__(self, root: Path, name: str = "ca") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name=f"meshplane tests {name}")
        self.ca_path = root / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self._ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        self._ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())

    def issue(
        self, name: str, *sans: str, into: Issued | None = None, not_after: dt.datetime | None = None
    ) -> Issued:
        """A certificate for DNS names / IP addresses `sans` (trustme), written under `name`,
        or over the files of `into` (atomically, key first) to rotate them."""
        leaf = self.ca.issue_cert(*sans, not_after=not_after)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return self._write(name, chain, leaf.private_key_pem.bytes(), into)

    def issue_spiffe(self, name: str, uri: str, *dns: str) -> Issued:
        """A client/server certificate whose SANs are the URI `uri` (a SPIFFE ID) plus DNS names,
        signed by this CA with `cryptography` (trustme issues DNS and IP SANs only)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
        names += [x509.DNSName(d) for d in dns]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.OID_CLIENT_AUTH, x509.OID_SERVER_AUTH]  # type: ignore[attr-defined]
                ),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        chain = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self._write(name, chain, key_pem, None)

    def _write(self, name: str, chain: bytes, key: bytes, into: Issued | None) -> Issued:
        if into is None:
            into = Issued(
                self.root / f"{name}.crt",
                self.root / f"{name}.key",
                self.root / f"{name}.both.pem",
                0,
            )
        _write_atomically(into.key, key)
        _write_atomically(into.chain, chain)
        _write_atomically(into.combined, key + chain)
        serial = x509.load_pem_x509_certificate(chain).serial_number
        return Issued(into.chain, into.key, into.combined, serial)

    def client_context(
        self, cert: Issued | None = None, alpn: tuple[str, ...] = ("http/1.1",)
    ) -> ssl.SSLContext:
        """A client context trusting this CA, presenting `cert` if given."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        if cert is not None:
            ctx.load_cert_chain(str(cert.chain), str(cert.key))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def server_context(self, cert: Issued, *, require_client: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert.chain), str(cert.key))
        ctx.set_alpn_protocols(["http/1.1"])
        if require_client:
            ctx.load_verify_locations(str(self.ca_path))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


# ---------------------------------------------------------------------------------------------
# App Mesh-shaped configs
# ---------------------------------------------------------------------------------------------


def listener_tls(
    mode: str,
    cert: Issued | dict[str, Any],
    *,
    trust: Path | None = None,
    sans: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An App Mesh listener `tls` block (`cert` an Issued file pair or a source dict)."""
    tls: dict[str, Any] = {
        "mode": mode,
        "certificate": cert.app_mesh() if isinstance(cert, Issued) else cert,
        **extra,
    }
    if trust is not None:
        tls["validation"] = {"trust": {"file": {"certificateChain": str(trust)}}}
        if sans:
            tls["validation"]["subjectAlternativeNames"] = {"match": {"exact": sans}}
    return tls


def client_policy(
    trust: Path, *, cert: Issued | None = None, sans: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """An App Mesh `clientPolicy` with TLS validation against `trust`."""
    validation: dict[str, Any] = {"trust": {"file": {"certificateChain": str(trust)}}}
    if sans:
        validation["subjectAlternativeNames"] = {"match": {"exact": sans}}
    tls: dict[str, Any] = {"validation": validation, **extra}
    if cert is not None:
        tls["certificate"] = cert.app_mesh()
    return {"tls": tls}


def _resources(
    upstream: str, node_tls: dict[str, Any] | None, routes: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    listener: dict[str, Any] = {"portMapping": {"port": NODE_PORT, "protocol": "http"}}
    if node_tls:
        listener["tls"] = node_tls
    host, _, port = upstream.rpartition(":")
    gateway_routes = routes or [
        {
            "kind": "GatewayRoute",
            "name": "all",
            "virtualGatewayName": "edge",
            "spec": {
                "httpRoute": {
                    "match": {"prefix": "/"},
                    "action": {"target": {"virtualService": {"virtualServiceName": SERVICE}}},
                }
            },
        }
    ]
    return [
        *gateway_routes,
        {
            "kind": "VirtualService",
            "name": SERVICE,
            "spec": {"provider": {"virtualNode": {"virtualNodeName": "api"}}},
        },
        {
            "kind": "VirtualNode",
            "name": "api",
            "spec": {
                "listeners": [listener],
                "serviceDiscovery": {
                    "static": {"endpoints": [{"address": host, "port": int(port)}]}
                },
            },
        },
    ]


def gateway_config(
    upstream: str,
    tls: dict[str, Any] | None = None,
    *,
    policy: dict[str, Any] | None = None,
    node_tls: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
    sds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Gateway "edge" (listener 8443 with `tls`) -> api.shop.local -> node "api" (static
    endpoint `upstream`, listener `node_tls`); `policy` is the gateway's backendDefaults
    clientPolicy."""
    gw_listener: dict[str, Any] = {"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}
    if tls:
        gw_listener["tls"] = tls
    gw_spec: dict[str, Any] = {"listeners": [gw_listener]}
    if policy:
        gw_spec["backendDefaults"] = {"clientPolicy": policy}
    proxy: dict[str, Any] = {
        "gateway": "edge",
        "admin": "127.0.0.1:0",
        "bind": LOCALHOST,
        "ports": {GATEWAY_PORT: 0},
    }
    if sds is not None:
        proxy["sds"] = sds
    return {
        "mesh": "shop",
        "proxy": proxy,
        "resources": [
            {"kind": "VirtualGateway", "name": "edge", "spec": gw_spec},
            *_resources(upstream, node_tls, routes),
        ],
    }


def sidecar_config(app: str, node_tls: dict[str, Any]) -> dict[str, Any]:
    """Sidecar for node "api": inbound listener 8080 (`node_tls`) forwarding to `app`."""
    resources = _resources(app, node_tls, None)[1:]  # no gateway route
    return {
        "mesh": "shop",
        "proxy": {
            "node": "api",
            "admin": "127.0.0.1:0",
            "bind": LOCALHOST,
            "ports": {NODE_PORT: 0},
            "app": app,
            "outbound": f"{LOCALHOST}:0",
        },
        "resources": resources,
    }


# ---------------------------------------------------------------------------------------------
# A TLS upstream
# ---------------------------------------------------------------------------------------------


@dataclass
class TlsUpstream(H1Upstream):
    """The h11 echo upstream behind TLS; records each handshake (peer certificate DER or None,
    ALPN) and counts failed ones."""

    context: ssl.SSLContext | None = None
    peer_certs: list[bytes | None] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)
    handshake_failures: int = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        assert self.context is not None
        listeners = await trio.open_ssl_over_tcp_listeners(
            0, self.context, host=LOCALHOST, https_compatible=True
        )
        self.port = listeners[0].transport_listener.socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._serve_tls, listeners)

    async def _serve_tls(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            with trio.fail_after(10):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, OSError):
            self.handshake_failures += 1
            await trio.aclose_forcefully(stream)
            return
        self.peer_certs.append(stream.getpeercert(binary_form=True))
        self.alpn.append(stream.selected_alpn_protocol())
        await self._serve(stream)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    peer_cert: bytes | None
    version: str | None
    alpn: str | None


async def handshake(
    port: int, context: ssl.SSLContext, server_hostname: str | None = None
) -> Handshake:
    """One TLS handshake with 127.0.0.1:`port` (bounded); raises on failure."""
    with trio.fail_after(5):
        tcp = await trio.open_tcp_stream(LOCALHOST, port)
        stream = trio.SSLStream(tcp, context, server_hostname=server_hostname or LOCALHOST)
        try:
            await stream.do_handshake()
            return Handshake(
                stream.getpeercert(binary_form=True),
                stream.version(),
                stream.selected_alpn_protocol(),
            )
        finally:
            await trio.aclose_forcefully(stream)


@dataclass(frozen=True)
class ToolRun:
    returncode: int
    stdout: str
    stderr: str


def tool(name: str) -> str:
    """The path of an external client, or skip the test saying why."""
    import pytest

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed (Debian package: {name}); this client is skipped")
    return path


async def run_tool(args: list[str], *, stdin: bytes = b"", timeout: float = 15) -> ToolRun:
    """Run an external client to completion; a hang fails the test after `timeout` s."""
    with trio.fail_after(timeout):
        proc = await trio.run_process(args, stdin=stdin, capture_stdout=True, capture_stderr=True,
                                      check=False)
    return ToolRun(
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
