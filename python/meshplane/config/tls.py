"""App Mesh TLS -> the snapshot's `ListenerTls` (termination) and `UpstreamTls` (origination).

The core reads certificates, keys and trust bundles from PEM files. A source is either a file
(`certificate.file`, `trust.file`) or an SDS secret name resolved through the proxy's local
mapping `proxy.sds` (a directory `secretsDir/<name>/cert.pem|key.pem|ca.pem`, or explicit files
in `proxy.sds.secrets`; docs/tls.md). ACM sources are refused where the proxy would use them:
ACM is an AWS service that is not reachable outside AWS, and serving plaintext instead of the
TLS the config asks for would be worse than failing the load.

Origination follows App Mesh's negotiation rules (spec §5 "TLS"): an enforced client policy
covering the port decides (its trust, SANs and client certificate); without one, a callee
listener in STRICT or PERMISSIVE mode still gets TLS, unverified. The name the callee's
certificate must carry when the policy lists no SANs (also sent as SNI) is its discovery name.

`tls_files` lists every file a compiled snapshot reads, for the certificate watcher;
`trust_files` the trust bundles among them, for the admin API.
Pure: no I/O (paths are joined, never opened). Imports only `addresses`, `model`, `topology`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from meshplane.config.addresses import parse_address
from meshplane.config.model import Resource
from meshplane.config.topology import listener_spec

__all__ = [
    "NOT_SERVABLE",
    "SECRET_FILES",
    "listener_tls",
    "secret_dir",
    "secret_files",
    "server_name",
    "tls_files",
    "trust_files",
    "unsupported",
    "upstream_tls",
]

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_SNI_NAME = re.compile(rf"^(\*\.)?(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
NOT_SERVABLE = "not supported by meshplane"
_ACM = f"{NOT_SERVABLE}: ACM (AWS Certificate Manager) is an AWS service, not available outside AWS"
# The files of a secret under `proxy.sds.secretsDir/<name>/`.
SECRET_FILES = {"certificateChain": "cert.pem", "privateKey": "key.pem", "trust": "ca.pem"}

Sds = Mapping[str, Any] | None


# --- sources ------------------------------------------------------------------------------


def secret_dir(name: str) -> str:
    """The directory name of SDS secret `name` under `secretsDir`: every character outside
    `A-Z a-z 0-9 . _ -` becomes `_` (so `spiffe://example.org/web` -> `spiffe___example.org_web`
    and no name can leave the directory)."""
    safe = _UNSAFE.sub("_", name)
    return "_" * len(safe) if safe in (".", "..") else safe


def secret_files(sds: Sds, name: str) -> dict[str, str]:
    """The files SDS secret `name` maps to ({} when unmapped): `proxy.sds.secrets[name]` if it
    is listed, else `secretsDir/<secret_dir(name)>/{cert,key,ca}.pem`."""
    sds = sds or {}
    explicit = (sds.get("secrets") or {}).get(name)
    if explicit is not None:
        return dict(explicit)
    base = sds.get("secretsDir")
    if not base:
        return {}
    folder = os.path.join(base, secret_dir(name))
    return {key: os.path.join(folder, file) for key, file in SECRET_FILES.items()}


def _certificate(source: Mapping[str, Any], sds: Sds) -> dict[str, Any]:
    """A validated `certificate` (file or sds) -> the snapshot's CertificateSpec."""
    if "file" in source:
        files = source["file"]
    else:
        files = secret_files(sds, source["sds"]["secretName"])
    return {"certificateChain": files["certificateChain"], "privateKey": files["privateKey"]}


def _trust(source: Mapping[str, Any], sds: Sds) -> str:
    if "file" in source:
        return str(source["file"]["certificateChain"])
    return secret_files(sds, source["sds"]["secretName"])["trust"]


def _validation(validation: Mapping[str, Any], sds: Sds) -> dict[str, Any]:
    sans = ((validation.get("subjectAlternativeNames") or {}).get("match") or {}).get("exact")
    return {"trust": _trust(validation["trust"], sds), "subjectAlternativeNames": list(sans or [])}


# --- termination ----------------------------------------------------------------------------


def listener_tls(listener: Mapping[str, Any], sds: Sds = None) -> dict[str, Any] | None:
    """A listener's `tls` in snapshot form; None for plaintext (absent or DISABLED).

    The listener's `certificate` is the default; a gateway's `sniCertificates` (extension)
    follow with their `serverNames`, chosen by the client's SNI.
    """
    tls = listener.get("tls")
    if not tls or tls["mode"] == "DISABLED":
        return None
    certificates = [_certificate(tls["certificate"], sds)]
    for extra in tls.get("sniCertificates") or []:
        spec = _certificate(extra["certificate"], sds)
        spec["serverNames"] = [name.lower() for name in extra["serverNames"]]
        certificates.append(spec)
    out: dict[str, Any] = {"mode": tls["mode"].lower(), "certificates": certificates}
    if tls.get("validation"):
        out["validation"] = _validation(tls["validation"], sds)
    return out


# --- origination ----------------------------------------------------------------------------


def server_name(node: Resource, service: str | None = None) -> str:
    """The name App Mesh expects in a node's certificate: its DNS hostname, or
    `<serviceName>.<namespaceName>` for Cloud Map. Static endpoints (a meshplane extension) have
    no discovery name: the virtual service the caller reaches the node through stands in for it
    (then the node's name, then the first endpoint's IP, when that is not a valid host name)."""
    discovery = node.spec.get("serviceDiscovery") or {}
    if "dns" in discovery:
        return str(discovery["dns"]["hostname"])
    if "awsCloudMap" in discovery:
        cloud_map = discovery["awsCloudMap"]
        return f"{cloud_map['serviceName']}.{cloud_map['namespaceName']}"
    for name in (service, node.name):
        if name and _HOSTNAME.match(name):
            return name
    first = ((discovery.get("static") or {}).get("endpoints") or [""])[0]
    try:
        address = first if isinstance(first, str) else first["address"]
        return parse_address(address, default_port=1)[0]
    except ValueError:
        return node.name


def client_policy_applies(client_policy: Mapping[str, Any] | None, port: int) -> bool:
    """Whether a client policy's TLS governs calls to `port` (enforced; `ports` empty or
    listing it)."""
    tls = (client_policy or {}).get("tls") or {}
    return bool(tls) and tls.get("enforce", True) and (not tls.get("ports") or port in tls["ports"])


def upstream_tls(
    node: Resource,
    port: int,
    client_policy: Mapping[str, Any] | None,
    sds: Sds = None,
    service: str | None = None,
) -> dict[str, Any] | None:
    """The `tls` of the caller's cluster for `node` on `port`, under the caller's client policy;
    `service` is the virtual service the caller reaches the node through."""
    name = server_name(node, service)
    if client_policy_applies(client_policy, port):
        assert client_policy is not None
        tls = client_policy["tls"]
        out: dict[str, Any] = {"serverName": name}
        if tls.get("certificate"):
            out["certificate"] = _certificate(tls["certificate"], sds)
        out["validation"] = _validation(tls["validation"], sds)
        return out
    callee = listener_spec(node, port).get("tls")
    if callee and callee["mode"] in ("STRICT", "PERMISSIVE"):
        return {"serverName": name}  # App Mesh: encrypted, not verified
    return None


# --- what the core will read ------------------------------------------------------------------


def tls_files(snapshot: Mapping[str, Any]) -> list[str]:
    """Every certificate, key and trust file a compiled snapshot document uses, sorted."""
    paths: set[str] = set()

    def certificate(spec: Mapping[str, Any] | None) -> None:
        if spec:
            paths.update((spec["certificateChain"], spec["privateKey"]))

    def validation(spec: Mapping[str, Any] | None) -> None:
        if spec:
            paths.add(spec["trust"])

    for listener in snapshot.get("listeners") or []:
        tls = listener.get("tls")
        if tls and tls.get("mode") != "disabled":
            for spec in tls.get("certificates") or []:
                certificate(spec)
            validation(tls.get("validation"))
    for cluster in snapshot.get("clusters") or []:
        tls = cluster.get("tls")
        if tls:
            certificate(tls.get("certificate"))
            validation(tls.get("validation"))
    return sorted(paths)


def trust_files(snapshot: Mapping[str, Any]) -> list[str]:
    """The trust bundles (CA certificates) among `tls_files(snapshot)`, sorted."""
    paths = {
        tls["validation"]["trust"]
        for item in [*(snapshot.get("listeners") or []), *(snapshot.get("clusters") or [])]
        if (tls := item.get("tls")) and tls.get("validation")
    }
    return sorted(paths)


# --- validation ---------------------------------------------------------------------------------


def _unmapped(sds: Sds, name: str, needs: tuple[str, ...], instead: str) -> str | None:
    files = secret_files(sds, name)
    if all(files.get(k) for k in needs):
        return None
    wanted = " and ".join(needs)
    if ((sds or {}).get("secrets") or {}).get(name) is not None:
        return (
            f'SDS secret "{name}" in proxy.sds.secrets has no {wanted}; add them, or use {instead}'
        )
    where = " and ".join(f"<secretsDir>/{secret_dir(name)}/{SECRET_FILES[k]}" for k in needs)
    return (
        f'SDS secret "{name}" is not mapped to files: set proxy.sds.secretsDir (then read from '
        f"{where}) or list it in proxy.sds.secrets with {wanted}, or use {instead}"
    )


def _certificate_problems(source: Mapping[str, Any], base: str, sds: Sds) -> list[tuple[str, str]]:
    if "acm" in source:
        return [
            (
                f"{base}.acm",
                f"{_ACM}; export the certificate and its key to PEM files and use "
                "certificate.file (or certificate.sds with proxy.sds): see docs/config.md, "
                '"ACM certificates: export them to PEM files"',
            )
        ]
    if "sds" in source:
        name = source["sds"]["secretName"]
        msg = _unmapped(sds, name, ("certificateChain", "privateKey"), "certificate.file")
        return [(f"{base}.sds.secretName", msg)] if msg else []
    return []


def _trust_problems(source: Mapping[str, Any], base: str, sds: Sds) -> list[tuple[str, str]]:
    if "acm" in source:
        return [
            (
                f"{base}.acm",
                f"{_ACM}; put the private CA's certificate in a PEM file and use trust.file "
                "(or trust.sds with proxy.sds): see docs/config.md, "
                '"ACM certificates: export them to PEM files"',
            )
        ]
    if "sds" in source:
        msg = _unmapped(sds, source["sds"]["secretName"], ("trust",), "trust.file")
        return [(f"{base}.sds.secretName", msg)] if msg else []
    return []


def unsupported(resource: Resource, sds: Sds = None) -> list[tuple[str, str]]:
    """(field, message) for each TLS source of `resource` the proxy cannot use: ACM anywhere,
    SDS names `proxy.sds` does not map, and malformed SNI names, on its listeners and in the
    client policies it applies as a caller. Other resources may keep theirs."""
    out: list[tuple[str, str]] = []
    for i, listener in enumerate(resource.spec.get("listeners") or []):
        tls = listener.get("tls")
        if not tls or tls["mode"] == "DISABLED":
            continue
        base = f"spec.listeners[{i}].tls"
        out += _certificate_problems(tls["certificate"], f"{base}.certificate", sds)
        if tls.get("validation"):
            out += _trust_problems(tls["validation"]["trust"], f"{base}.validation.trust", sds)
        for j, extra in enumerate(tls.get("sniCertificates") or []):
            where = f"{base}.sniCertificates[{j}]"
            out += _certificate_problems(extra["certificate"], f"{where}.certificate", sds)
            out += [
                (
                    f"{where}.serverNames[{k}]",
                    f'expected a host name or "*." and a host name, got "{name}"',
                )
                for k, name in enumerate(extra["serverNames"])
                if not _SNI_NAME.match(name)
            ]
    policies = [
        (
            "spec.backendDefaults.clientPolicy",
            (resource.spec.get("backendDefaults") or {}).get("clientPolicy"),
        )
    ]
    for i, backend in enumerate(resource.spec.get("backends") or []):
        policies.append(
            (
                f"spec.backends[{i}].virtualService.clientPolicy",
                backend["virtualService"].get("clientPolicy"),
            )
        )
    for base, policy in policies:
        tls = (policy or {}).get("tls")
        if not tls or not tls.get("enforce", True):
            continue
        if tls.get("certificate"):
            out += _certificate_problems(tls["certificate"], f"{base}.tls.certificate", sds)
        out += _trust_problems(tls["validation"]["trust"], f"{base}.tls.validation.trust", sds)
    return out
