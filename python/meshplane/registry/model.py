"""Cloud Map's data model and query semantics, sans I/O: instances, validation, filtering.

`discover` is DiscoverInstances' filter (spec/appmesh.md §6): every `QueryParameters` pair must
match; `HealthStatus` HEALTHY, UNHEALTHY, ALL or HEALTHY_OR_ELSE_ALL (healthy ones if any, else
all: App Mesh's fail-open); `OptionalParameters` narrow the result only when at least one
instance matches them too. `endpoints` turns the instances of a VirtualNode's `awsCloudMap`
selection into ("IP:PORT", weight) pairs: address per `ipPreference`, port from
`AWS_INSTANCE_PORT`, else the node's listener port.

Imports only the standard library and `meshplane.errors`: no trio, no store.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshplane.errors import MeshplaneError

__all__ = [
    "HEALTH_FILTERS",
    "HEALTH_STATUSES",
    "Instance",
    "RegistryError",
    "discover",
    "endpoint_address",
    "endpoints",
    "filter_health",
    "matches",
    "validate_attributes",
    "validate_instance_id",
    "validate_name",
]

HEALTH_STATUSES = ("HEALTHY", "UNHEALTHY")
HEALTH_FILTERS = ("HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL")
IPV4, IPV6, PORT = "AWS_INSTANCE_IPV4", "AWS_INSTANCE_IPV6", "AWS_INSTANCE_PORT"
INIT_HEALTH = "AWS_INIT_HEALTH_STATUS"
_INSTANCE_ID = re.compile(r"^[0-9a-zA-Z_/:.@-]{1,64}$")
MAX_ATTRIBUTES = 30
MAX_ATTRIBUTE_CHARS = 5000


class RegistryError(MeshplaneError):
    """A registry request was refused. `code` is Cloud Map's error name (InvalidInput,
    NamespaceNotFound, ServiceNotFound, InstanceNotFound)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Instance:
    """One registered instance, as DiscoverInstances returns it (plus bookkeeping)."""

    namespace: str
    service: str
    id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    health: str = "HEALTHY"
    ttl: float | None = None  # seconds; None = no lease, the instance stays until deregistered
    registered_at: float = 0.0

    def to_cloud_map(self) -> dict[str, Any]:
        """DiscoverInstances' `HttpInstanceSummary` shape."""
        return {"InstanceId": self.id, "NamespaceName": self.namespace, "ServiceName": self.service,
                "HealthStatus": self.health, "Attributes": dict(self.attributes)}

    def to_json(self) -> dict[str, Any]:
        doc = self.to_cloud_map()
        doc["Ttl"] = self.ttl
        doc["RegisteredAt"] = self.registered_at
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Instance:
        return cls(doc["NamespaceName"], doc["ServiceName"], doc["InstanceId"],
                   dict(doc.get("Attributes") or {}), doc.get("HealthStatus", "HEALTHY"),
                   doc.get("Ttl"), float(doc.get("RegisteredAt") or 0.0))


def validate_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 1024 or "\0" in name:
        raise RegistryError("InvalidInput", f"{kind} name must be 1-1024 characters, got {name!r}")
    return name


def validate_instance_id(instance_id: object) -> str:
    if not isinstance(instance_id, str) or not _INSTANCE_ID.match(instance_id):
        raise RegistryError(
            "InvalidInput",
            f"instance id must be 1-64 characters of [0-9a-zA-Z_/:.@-], got {instance_id!r}",
        )
    return instance_id


def validate_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """Cloud Map's limits on RegisterInstance attributes; the reserved address keys checked."""
    out = {}
    for key, value in attributes.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise RegistryError("InvalidInput", f"attribute key must be 1-255 characters: {key!r}")
        if not isinstance(value, str) or len(value) > 1024:
            raise RegistryError("InvalidInput", f"attribute {key}: value must be a string of at most 1024 characters")
        out[key] = value
    custom = [k for k in out if not k.startswith("AWS_")]
    if len(custom) > MAX_ATTRIBUTES:
        raise RegistryError("InvalidInput", f"at most {MAX_ATTRIBUTES} custom attributes, got {len(custom)}")
    if sum(len(k) + len(v) for k, v in out.items()) > MAX_ATTRIBUTE_CHARS:
        raise RegistryError("InvalidInput", f"attributes total more than {MAX_ATTRIBUTE_CHARS} characters")
    for key, version in ((IPV4, 4), (IPV6, 6)):
        if key in out:
            try:
                ok = ipaddress.ip_address(out[key]).version == version
            except ValueError:
                ok = False
            if not ok:
                raise RegistryError("InvalidInput", f"{key} must be an IPv{version} address, got {out[key]!r}")
    if PORT in out and not (out[PORT].isdigit() and 0 < int(out[PORT]) < 65536):
        raise RegistryError("InvalidInput", f"{PORT} must be a port 1-65535, got {out[PORT]!r}")
    if INIT_HEALTH in out and out[INIT_HEALTH] not in HEALTH_STATUSES:
        raise RegistryError("InvalidInput", f"{INIT_HEALTH} must be HEALTHY or UNHEALTHY")
    if IPV4 not in out and IPV6 not in out:
        raise RegistryError("InvalidInput", f"an instance needs an address: {IPV4} or {IPV6}")
    return out


def matches(instance: Instance, query: Mapping[str, str]) -> bool:
    """Whether every query pair is one of the instance's attributes."""
    attrs = instance.attributes
    return all(attrs.get(k) == v for k, v in query.items())


def filter_health(instances: Sequence[Instance], health_status: str) -> list[Instance]:
    if health_status not in HEALTH_FILTERS:
        raise RegistryError("InvalidInput", f"HealthStatus must be one of {', '.join(HEALTH_FILTERS)}")
    if health_status == "ALL":
        return list(instances)
    healthy = [i for i in instances if i.health == "HEALTHY"]
    if health_status == "HEALTHY":
        return healthy
    if health_status == "UNHEALTHY":
        return [i for i in instances if i.health == "UNHEALTHY"]
    return healthy or list(instances)


def discover(
    instances: Iterable[Instance],
    *,
    query: Mapping[str, str] | None = None,
    optional: Mapping[str, str] | None = None,
    health_status: str = "HEALTHY",
    max_results: int | None = None,
) -> list[Instance]:
    """DiscoverInstances' selection over a service's instances, in instance-id order (the HTTP
    API shuffles, as Cloud Map does)."""
    selected = filter_health([i for i in instances if matches(i, query or {})], health_status)
    if optional:
        narrowed = [i for i in selected if matches(i, optional)]
        selected = narrowed or selected
    selected.sort(key=lambda i: i.id)
    return selected[:max_results] if max_results is not None else selected


def endpoint_address(instance: Instance, ip_preference: str | None) -> str | None:
    """The instance's IP per App Mesh `ipPreference` for Cloud Map (§3.3): none and
    IPv4_PREFERRED: IPv4 else IPv6; IPv6_PREFERRED: IPv6 else IPv4; *_ONLY: that family."""
    v4, v6 = instance.attributes.get(IPV4), instance.attributes.get(IPV6)
    pref = (ip_preference or "").upper()
    if pref == "IPV4_ONLY":
        return v4
    if pref == "IPV6_ONLY":
        return v6
    if pref == "IPV6_PREFERRED":
        return v6 or v4
    return v4 or v6


def endpoints(
    instances: Iterable[Instance],
    *,
    attributes: Mapping[str, str],
    port: int,
    ip_preference: str | None = None,
) -> list[tuple[str, int]]:
    """A Cloud Map node's endpoints: instances matching every attribute, healthy ones (all of
    them if none is healthy), as sorted ("IP:PORT", 1) pairs without duplicates."""
    out = set()
    for instance in discover(instances, query=attributes, health_status="HEALTHY_OR_ELSE_ALL"):
        ip = endpoint_address(instance, ip_preference)
        if ip is None:
            continue
        raw_port = instance.attributes.get(PORT)
        ep_port = int(raw_port) if raw_port and raw_port.isdigit() else port
        out.add((f"[{ip}]:{ep_port}" if ":" in ip else f"{ip}:{ep_port}", 1))
    return sorted(out)
