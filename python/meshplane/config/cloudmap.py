"""Which clusters of a config take their endpoints from the service registry (`awsCloudMap`).

`cloud_map_targets(cfg)` lists, for every cluster the proxy's snapshot holds whose virtual node
uses `serviceDiscovery.awsCloudMap`, what to ask the registry: namespace, service, the
attributes every instance must carry, the listener port (the endpoint port unless an instance
says `AWS_INSTANCE_PORT`) and the `ipPreference` (the node's, else the Mesh's). Pure: imports
`model` and `compile` only (the same cluster enumeration as the snapshot).
"""

from __future__ import annotations

from typing import NamedTuple

from meshplane.config.compile import _Snapshot
from meshplane.config.model import MeshConfig

__all__ = ["CloudMapTarget", "cloud_map_targets"]


class CloudMapTarget(NamedTuple):
    """A cluster whose endpoints come from the registry."""

    cluster: str
    node: str
    namespace: str
    service: str
    attributes: tuple[tuple[str, str], ...]  # every instance must carry all of them
    port: int
    ip_preference: str | None


def cloud_map_targets(cfg: MeshConfig) -> list[CloudMapTarget]:
    """The clusters of `cfg`'s snapshot whose endpoints come from the registry, and what to
    ask it (sorted by cluster name)."""
    snapshot = _Snapshot(cfg, {}, static_endpoints=False)
    out = []
    for cluster, (node_name, port) in snapshot.origins.items():
        node = cfg.get("VirtualNode", node_name)
        cloud_map = ((node.spec if node else {}).get("serviceDiscovery") or {}).get("awsCloudMap")
        if cloud_map is None:
            continue
        attributes = tuple((a["key"], a["value"]) for a in cloud_map.get("attributes") or [])
        out.append(CloudMapTarget(
            cluster, node_name, cloud_map["namespaceName"], cloud_map["serviceName"], attributes,
            port, cloud_map.get("ipPreference", snapshot.ip_preference),
        ))
    return sorted(out)
