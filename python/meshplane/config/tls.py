"""App Mesh TLS -> the snapshot's `ListenerTls` (termination) and `UpstreamTls` (origination).

The core reads certificates from PEM files, so only `file` certificates and trusts can be
served; ACM and SDS sources are App Mesh features that need AWS or an SDS agent.
`unsupported` names them (validation refuses them for the listeners and client policies the
proxy actually uses, rather than serving plaintext); `listener_tls` and `upstream_tls` map the
rest. Origination follows App Mesh's negotiation rules (spec §5 "TLS"): an enforced client
policy covering the port decides; without one, a callee listener in STRICT or PERMISSIVE mode
still gets TLS, unverified. Imports only `addresses`, `model` and `topology`.
"""

from __future__ import annotations

import re
from typing import Any

from meshplane.config.addresses import parse_address
from meshplane.config.model import Resource
from meshplane.config.topology import listener_spec

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
NOT_SERVABLE = "not supported by meshplane: the core reads certificates from PEM files"


def _sans(validation: dict[str, Any]) -> list[str]:
    return list(
        ((validation.get("subjectAlternativeNames") or {}).get("match") or {}).get("exact") or []
    )


def _certificate(file: dict[str, Any]) -> dict[str, Any]:
    return {"certificateChain": file["certificateChain"], "privateKey": file["privateKey"]}


def listener_tls(listener: dict[str, Any]) -> dict[str, Any] | None:
    """A listener's `tls` in snapshot form; None for plaintext (absent or DISABLED)."""
    tls = listener.get("tls")
    if not tls or tls["mode"] == "DISABLED":
        return None
    out: dict[str, Any] = {
        "mode": tls["mode"].lower(),
        "certificates": [_certificate(tls["certificate"]["file"])],
    }
    validation = tls.get("validation")
    if validation:
        out["validation"] = {
            "trust": validation["trust"]["file"]["certificateChain"],
            "subjectAlternativeNames": _sans(validation),
        }
    return out


def server_name(node: Resource) -> str:
    """The name App Mesh expects in a node's certificate: its DNS hostname, or
    `<serviceName>.<namespaceName>` for Cloud Map. Static endpoints have none: the node's name
    when it is a valid host name, else its first endpoint's IP."""
    discovery = node.spec.get("serviceDiscovery") or {}
    if "dns" in discovery:
        return str(discovery["dns"]["hostname"])
    if "awsCloudMap" in discovery:
        cloud_map = discovery["awsCloudMap"]
        return f"{cloud_map['serviceName']}.{cloud_map['namespaceName']}"
    if _HOSTNAME.match(node.name):
        return node.name
    first = ((discovery.get("static") or {}).get("endpoints") or [""])[0]
    try:
        return parse_address(first if isinstance(first, str) else first["address"], default_port=1)[
            0
        ]
    except ValueError:
        return node.name


def upstream_tls(
    node: Resource, port: int, client_policy: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The `tls` of the caller's cluster for `node` on `port`, under the caller's client policy."""
    tls = (client_policy or {}).get("tls")
    if tls and tls.get("enforce", True) and (not tls.get("ports") or port in tls["ports"]):
        out: dict[str, Any] = {"serverName": server_name(node)}
        certificate = (tls.get("certificate") or {}).get("file")
        if certificate:
            out["certificate"] = _certificate(certificate)
        validation = tls["validation"]
        out["validation"] = {
            "trust": validation["trust"]["file"]["certificateChain"],
            "subjectAlternativeNames": _sans(validation),
        }
        return out
    callee = listener_spec(node, port).get("tls")
    if callee and callee["mode"] in ("STRICT", "PERMISSIVE"):
        return {"serverName": server_name(node)}  # App Mesh: encrypted, not verified
    return None


def unsupported(resource: Resource) -> list[tuple[str, str]]:
    """(field, message) for each TLS source of `resource` the core cannot use: ACM or SDS
    certificates on its listeners, ACM or SDS trust or SDS client certificates in the client
    policies it would apply as a caller."""
    out: list[tuple[str, str]] = []
    for i, listener in enumerate(resource.spec.get("listeners") or []):
        tls = listener.get("tls")
        if not tls or tls["mode"] == "DISABLED":
            continue
        base = f"spec.listeners[{i}].tls"
        source = next(iter(tls["certificate"]))
        if source != "file":
            out.append((f"{base}.certificate.{source}", f"{NOT_SERVABLE}; use certificate.file"))
        trust = (tls.get("validation") or {}).get("trust") or {}
        out += [
            (f"{base}.validation.trust.{k}", f"{NOT_SERVABLE}; use trust.file")
            for k in trust
            if k != "file"
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
        for k in tls.get("certificate") or {}:
            if k != "file":
                out.append((f"{base}.tls.certificate.{k}", f"{NOT_SERVABLE}; use certificate.file"))
        for k in tls["validation"]["trust"]:
            if k != "file":
                out.append((f"{base}.tls.validation.trust.{k}", f"{NOT_SERVABLE}; use trust.file"))
    return out
