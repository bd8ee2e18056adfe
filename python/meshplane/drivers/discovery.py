"""DNS service discovery: resolve virtual nodes' `serviceDiscovery.dns` into cluster endpoints.

App Mesh semantics (spec/appmesh.md §3.3): `LOADBALANCER` (the default) uses only the first
resolved address, `ENDPOINTS` makes every address a host. `ipPreference` orders or filters the
families. Static endpoints need no driver: they are compiled into the snapshot.

Owns `DnsDiscovery`, the last resolved endpoints of every DNS cluster, which the runtime both
compiles into each snapshot and refreshes in place with `Core.set_endpoints`. Imports trio and
`meshplane.config` types only; the core is any object with `set_endpoints`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import trio

from meshplane._bridge import TaskStatus
from meshplane.config.addresses import format_address

__all__ = ["DnsDiscovery", "DnsTargetLike", "Endpoints", "order_addresses", "resolve"]

log = logging.getLogger("meshplane.discovery")

Endpoints = list[tuple[str, int]]
"""A cluster's endpoints as ("IP:PORT", weight) pairs, the shape `Core.set_endpoints` takes."""


class DnsTargetLike(Protocol):
    """The fields of `meshplane.config.DnsTarget` this driver reads."""

    @property
    def cluster(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def response_type(self) -> str: ...
    @property
    def ip_preference(self) -> str | None: ...


class EndpointSink(Protocol):
    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> object: ...


def order_addresses(
    addresses: Iterable[tuple[int, str]], ip_preference: str | None
) -> list[str]:
    """Order (family, ip) pairs per App Mesh `ipPreference`, dropping duplicates.

    No preference resolves IPv6 first, then IPv4, as Envoy's default did under App Mesh.
    """
    v4 = [ip for fam, ip in addresses if fam == socket.AF_INET]
    v6 = [ip for fam, ip in addresses if fam == socket.AF_INET6]
    pref = (ip_preference or "").upper()
    if pref == "IPV4_ONLY":
        ordered = v4
    elif pref == "IPV6_ONLY":
        ordered = v6
    elif pref == "IPV4_PREFERRED":
        ordered = v4 + v6
    else:
        ordered = v6 + v4
    return list(dict.fromkeys(ordered))


async def resolve(target: DnsTargetLike) -> Endpoints:
    """Resolve one target into endpoints (weight 1 each).

    Raises OSError (`socket.gaierror`) when the name does not resolve. Cancellation abandons the
    lookup (it runs in a worker thread, as trio's getaddrinfo does).
    """
    infos = await trio.socket.getaddrinfo(
        target.hostname, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    # NOTE: scope ids (fe80::1%eth0) are dropped: the snapshot's "IP:PORT" has no place for them.
    pairs = [(int(fam), str(sockaddr[0]).split("%")[0]) for fam, *_, sockaddr in infos]
    ips = order_addresses(pairs, target.ip_preference)
    if (target.response_type or "LOADBALANCER").upper() != "ENDPOINTS":
        ips = ips[:1]
    return [(format_address(ip, target.port), 1) for ip in ips]


class DnsDiscovery:
    """The DNS-discovered endpoints of the running config, kept fresh.

    `prepare(targets)` resolves a config's targets before it is compiled; `commit(targets,
    endpoints)` records them once the core took the snapshot; `run` re-resolves every
    `interval` seconds and pushes changes with `set_endpoints`. A lookup that fails keeps the
    cluster's last endpoints (Envoy keeps hosts when DNS fails) and is logged.
    """

    def __init__(self, sink: EndpointSink, *, interval: float = 5.0) -> None:
        self._sink = sink
        self.interval = interval
        self._targets: dict[str, DnsTargetLike] = {}
        self._endpoints: dict[str, Endpoints] = {}

    async def prepare(self, targets: Sequence[DnsTargetLike]) -> dict[str, Endpoints]:
        """Endpoints for `targets`, concurrently resolved; last known ones where a lookup fails.

        A target unchanged from the running config whose lookup fails keeps its endpoints; a
        new one that fails gets none (its cluster answers 503 until the next refresh resolves).
        """
        result: dict[str, Endpoints] = {}

        async def one(target: DnsTargetLike) -> None:
            try:
                result[target.cluster] = await resolve(target)
            except OSError as exc:
                known = self._targets.get(target.cluster) == target
                result[target.cluster] = self._endpoints.get(target.cluster, []) if known else []
                log.warning(
                    "DNS lookup of %s for cluster %s failed: %s", target.hostname, target.cluster, exc
                )

        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(one, target)
        return result

    def commit(self, targets: Sequence[DnsTargetLike], endpoints: Mapping[str, Endpoints]) -> None:
        """Record what the core now runs: these targets, with these endpoints."""
        self._targets = {t.cluster: t for t in targets}
        self._endpoints = {c: list(endpoints.get(c, [])) for c in self._targets}

    async def refresh(self) -> None:
        """Re-resolve every target once and push the clusters whose endpoints changed."""
        targets = list(self._targets.values())
        resolved = await self.prepare(targets)
        for target in targets:
            cluster = target.cluster
            # A config applied while we were resolving may have replaced this target.
            if self._targets.get(cluster) != target:
                continue
            new = resolved.get(cluster, [])
            if new == self._endpoints.get(cluster):
                continue
            try:
                self._sink.set_endpoints(cluster, new)
            except Exception as exc:  # the core refusing one cluster must not stop discovery
                log.warning("set_endpoints(%s) failed: %s", cluster, exc)
                continue
            self._endpoints[cluster] = new
            log.info("cluster %s endpoints now %s", cluster, [a for a, _ in new])

    async def run(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh every `interval` seconds until cancelled (a lookup in flight is abandoned)."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            if self._targets:
                await self.refresh()
