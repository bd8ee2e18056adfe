"""Discovery's endpoint lists reach the core as deltas (`EndpointFanout` → `Core.update_endpoints`
with `base_version`), and an apply landing between two pushes makes the core refuse the stale
delta, so the whole list goes instead: the core's hosts always equal the last list pushed.
A real `Core`, snapshots compiled as `Proxy` compiles them.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

from meshplane._core import Core
from meshplane.config import from_dict
from meshplane.drivers.resilience import EndpointFanout, Resilience
from meshplane.runtime import _compile

from .test_admin import mesh

CLUSTER = "api-v1"


class Recording:
    """Forwards to the core and records which endpoint calls were made and what they returned."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.calls: list[tuple[str, Any]] = []

    def set_endpoints(self, cluster: str, endpoints: Any) -> str:
        version = self.core.set_endpoints(cluster, endpoints)
        self.calls.append(("set", len(endpoints)))
        return version

    def update_endpoints(self, cluster: str, upsert: Any, remove: Any, base_version: str | None = None) -> bool:
        done = self.core.update_endpoints(cluster, upsert, remove, base_version=base_version)
        self.calls.append(("update" if done else "stale", (len(upsert), len(remove))))
        return done


def hosts(core: Core) -> dict[str, int]:
    return {a: h["weight"] for a, h in core.stats()["clusters"][CLUSTER]["hosts"].items()}


def endpoints(first: int, count: int, weight: int = 1) -> list[tuple[str, int]]:
    return [(f"127.0.1.{i}:80", weight) for i in range(first, first + count)]


def test_deltas_are_sent_and_an_apply_between_makes_the_whole_list_go() -> None:
    config = from_dict(mesh(9000), source="<test>")
    core = Core()
    try:
        core.apply(_compile(config, {}, 1)[2])
        sink = Recording(core)
        fanout = EndpointFanout(sink, Resilience(core))
        fanout.set_endpoints(CLUSTER, endpoints(1, 50))
        assert sink.calls == [("set", 50)]
        # One host gone, one new, one reweighted: a delta of three.
        changed = [e for e in endpoints(2, 50) if e[0] != "127.0.1.10:80"] + [("127.0.1.10:80", 3)]
        fanout.set_endpoints(CLUSTER, changed)
        assert sink.calls[-1] == ("update", (2, 1))
        assert hosts(core) == dict(changed)
        # An apply replaces the cluster with the snapshot's own hosts and a new version.
        core.apply(_compile(config, {}, 2)[2])
        assert hosts(core) != dict(changed)
        latest = endpoints(5, 40)
        fanout.set_endpoints(CLUSTER, latest)
        assert [kind for kind, _ in sink.calls[-2:]] == ["stale", "set"]
        assert hosts(core) == dict(latest)
        fanout.set_endpoints(CLUSTER, endpoints(6, 40))
        assert sink.calls[-1] == ("update", (1, 1))
        assert hosts(core) == dict(endpoints(6, 40))
        # A list that repeats an address goes whole, as does the one after it.
        fanout.set_endpoints(CLUSTER, [*endpoints(6, 40), ("127.0.1.6:80", 1)])
        assert len(core.stats()["clusters"][CLUSTER]["hosts"]) == 40  # stats key by address
        assert core.stats(hosts=False)["clusters"][CLUSTER]["membership"]["total"] == 41
        fanout.set_endpoints(CLUSTER, endpoints(6, 40))
        assert [kind for kind, _ in sink.calls[-2:]] == ["set", "set"]
        assert hosts(core) == dict(endpoints(6, 40))
    finally:
        core.shutdown(0)
