"""The compiled data plane (Rust, PyO3). Checked against the built module by stubtest in CI.

No method waits on the network or on traffic (`shutdown` drains on the runtime and reports with
an event). Not every method is short: `apply` parses, compiles and binds, and `apply` and
`reload_tls` read certificate files, with the GIL released (`meshplane.Proxy` runs `apply` in a
worker thread). No other method waits for an apply in progress: `set_host_health` and
`set_host_ejected` act at once (a verdict given during an apply carries over to the version it
publishes), endpoint changes given during an apply are made right after it, on the version it
leaves running and in the order given, and `reload_tls` reloads the running version at once and
the apply's version again once published. Rust threads never call into Python; events come back
through `Core.wakeup_fd()` + `Core.drain_events()`.
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Self, final

__all__ = [
    "Balancer",
    "Core",
    "CoreError",
    "HostTable",
    "InstanceWantedEvent",
    "OutlierEvent",
    "RouteTable",
    "StoppedEvent",
    "Text",
    "__version__",
]
__version__: str

class CoreError(Exception):
    """Raised by the core. Every attribute is the Rust error's own (rust/src/error.rs).

    kind: where the error came from: "config" (a snapshot, host update or TLS reload the core
    refuses), "downstream", "upstream" or "internal" (the runtime cannot start). retryable:
    whether another attempt could succeed (True only for upstream connect failures, TLS
    failures, resets and refused streams). status: the local reply the error maps to (400,
    404, 502, 503, 504), or None for an error that is never sent to a client, such as every
    "config" error. path: for a rejected snapshot or TLS reload, where in the document
    ("listeners[1].address", or "line L column C" for a parse error); otherwise None.
    """

    kind: Literal["config", "downstream", "upstream", "internal"]
    retryable: bool
    status: int | None
    path: str | None

@final
class Text:
    """Text the core wrote (UTF-8), kept in the core and read in pieces of bounded size."""

    def __len__(self) -> int: ...
    def piece(self, start: int, size: int) -> bytes:
        """The bytes `[start, start + size)` of the text (fewer at its end, none past it)."""

@final
class HostTable(Mapping[str, dict[str, Any]]):
    """One cluster's hosts in a `Core.stats()` copy: a read-only mapping of host name
    (`IP:PORT`, `unix:/path`) to that host's stats (docs/stats.md), in the cluster's order.

    The core copies every host's numbers at the moment of `stats()` (with the GIL released, no
    Python object per host) and keeps them; a host's dict is made when it is read. Reading all
    of them (`items()`, `values()`, `dict(table)`, `to_dict()`) makes every dict, as a copy
    with hosts did before the table. Equal to a mapping with the same hosts and stats;
    `copy.copy` and `copy.deepcopy` give the table itself (it never changes)."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: str, /) -> dict[str, Any]:
        """The stats of host `key` (a new dict); KeyError if the cluster has no such host."""
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> list[str]:  # type: ignore[override]
        """The host names, in the cluster's order."""
    def values(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Every host's stats (a dict each, made now), in the cluster's order."""
    def items(self) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[override]
        """(host name, its stats) pairs (a dict each, made now), in the cluster's order."""
    def get(self, key: object, default: Any = None) -> Any:  # type: ignore[override]
        """The stats of host `key`, or `default`."""
    def column(self, name: str) -> list[Any]:
        """One stat of every host, in the cluster's order (None for a host without it, such
        as `active_hc` of a host the health checker has not seen): `sum(t.column("rq_total"))`."""
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every host's stats as a plain dict of dicts (for `json.dumps`, a copy to change)."""
    def __eq__(self, value: object, /) -> bool: ...
    def __copy__(self) -> Self: ...
    def __deepcopy__(self, memo: Any) -> Self: ...

@final
class Core:
    """One data plane: a tokio runtime, its listeners, clusters and stats.

    `workers` is the number of tokio worker threads carrying traffic (1 = current-thread).
    """

    def __new__(cls, workers: int = 1) -> Self: ...
    def apply(self, snapshot: bytes) -> str:
        """Parse, build and atomically swap in a snapshot document (docs/snapshot.md; its JSON
        Schema is docs/snapshot.schema.json).

        One transaction: every new listener is bound before anything changes, then the new
        version is published; removed listeners close after draining. A listener whose name
        and address are unchanged keeps its socket, and so does one whose address is unchanged
        but whose protocol or name changed. On any error (an address in use included) nothing
        changes, what was bound is closed again, and CoreError(kind="config") is raised.
        Returns the snapshot's version label.
        """
    def version(self) -> str | None: ...
    def listeners(self) -> dict[str, tuple[str, int]]:
        """Listener name -> bound (host, port), ports read back after binding."""
    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> str | None:
        """Replace a cluster's endpoints as (address, weight) pairs (DNS discovery, function
        instances). An address is "IP:PORT" or "unix:/absolute/path" (HTTP over a Unix domain
        socket). Hosts that stay keep their connections and state; O(hosts). In a function
        cluster, requests waiting for an instance get the idle hosts at once. Returns the
        version whose cluster changed: the `base_version` of later `update_endpoints` deltas.

        During an apply it does not wait: the change is made right after the apply, on the
        version it leaves running (so the apply does not undo it), and None is returned (a
        cluster that version lacks drops the change). A malformed address raises at once."""
    def update_endpoints(
        self,
        cluster: str,
        upsert: Sequence[tuple[str, int]] = ...,
        remove: Sequence[str] = ...,
        base_version: str | None = None,
    ) -> bool:
        """Change some of a cluster's hosts and keep the others: remove the addresses in
        `remove` (one that is not a host is ignored), then add each (address, weight) of
        `upsert`, or set its weight if it is a host already. Addresses as for
        `set_endpoints`; in a function cluster, waiting requests get the idle hosts at once.

        Costs O(changes), not O(hosts), except that unequal weights rebuild the weighted
        schedule (O(hosts)). A malformed address raises CoreError(kind="config") and changes
        nothing.

        With `base_version` (the version the caller's view of the hosts came from, e.g. what
        `set_endpoints` returned), the change is made only if that version still runs,
        checked under the apply lock: otherwise nothing changes and it returns False (an apply
        since has set the hosts its snapshot lists; send the whole list). During an apply
        it never waits: with `base_version` it returns False (that apply sets the hosts), without
        it the change is made right after the apply, as `set_endpoints` does. Else True.
        """
    def set_host_health(self, cluster: str, address: str, healthy: bool) -> None:
        """Active health checking's verdict (False sets Envoy's FAILED_ACTIVE_HC). `address`
        is the endpoint's text as given to `set_endpoints` or the snapshot."""
    def set_host_ejected(self, cluster: str, address: str, ejected: bool) -> None:
        """The outlier detector's verdict (True sets FAILED_OUTLIER_CHECK); `address` as for
        `set_host_health`."""
    def take_outlier_samples(self) -> dict[str, dict[str, list[int]]]:
        """cluster -> host -> [success, total, local_success, local_total] since the last call.

        Only clusters with outlier detection appear, and only hosts with traffic since the
        last call (a host left out had none); counters restart at zero.
        """
    def reload_tls(self) -> int:
        """Re-read every certificate, key and trust file in use and swap them in.

        New handshakes use the new material; established connections keep theirs. If any file
        is bad nothing changes and CoreError(kind="config") names it. Returns how many TLS
        contexts were rebuilt. During an apply it does not wait: it reloads the version still
        running, and the apply's version re-reads the files once published (a bad file then
        leaves it the material it read when it was built). The GIL is released while files
        are read; with no TLS material in use there is none to read, and it is kept.
        """
    def tls_info(self) -> dict[str, Any]:
        """Certificates in use per listener and cluster: path, subject, SANs, not_after."""
    def stats(
        self,
        hosts: bool = True,
        health: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], bytes, tuple[str | None, ...]]]
        | None = None,
        outliers: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], dict[str, Any], dict[str, dict[str, Any]]]]
        | None = None,
        health_flags: bool = False,
    ) -> dict[str, Any]:
        """A copy of every counter, gauge and histogram (see docs/stats.md).

        Each cluster's "hosts" is a `HostTable` (no Python object per host until one is read);
        `health`, `outliers` and `health_flags` add the control layer's view of each host as
        for `stats_hosts_json`. With `hosts=False` each cluster has no "hosts" but
        "membership": {"total", "healthy"} host counts (`host_metrics` has the hosts' stats).
        """
    def host_metrics(self) -> bytes:
        """Every host's stats as the `meshplane_host_*` families of the Prometheus text format
        (UTF-8), exactly as `meshplane.admin.prometheus.render` writes the hosts of `stats()`;
        written with the GIL released straight into the bytes object (from 4,096 hosts on, in
        two halves, one on a thread of its own), without a Python object per host."""
    def host_metrics_text(self) -> Text:
        """`host_metrics()` kept in the core as a `Text` (written with the GIL released), to be
        read in pieces: no bytes object of the whole text is made."""
    def stats_hosts_json(
        self,
        health: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], bytes, tuple[str | None, ...]]]
        | None = None,
        outliers: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], dict[str, Any], dict[str, dict[str, Any]]]]
        | None = None,
        health_flags: bool = False,
    ) -> dict[str, Any]:
        """`stats(hosts=False)`, but each cluster has "hosts" (where "membership" would be):
        bytes, that value exactly as `json.dumps(stats(), indent=2)` writes it at its place in
        the document, written with the GIL released (the admin API splices it in).

        `health` and `outliers` are the control layer's per-host views (cluster -> host ->
        dict: `HealthChecks.hosts()`, `OutlierEjections.hosts()`); with them each host gets
        `active_hc` and `outlier` as `ResilienceView.annotate` adds them, and with
        `health_flags` its `health_flags`. A cluster's health view may instead be compact,
        `(keys, records, names)` (`ActiveHealthChecks.packed()`: five native 8-byte
        numbers per key): then no Python object is read per host, and the view is unpacked
        with the GIL released. ValueError if its sizes disagree. A cluster's outlier view may
        instead be sparse, `(keys, clean, entries)` (`OutlierEjections.sparse()`): every
        tracked host's key, the entry of a host that is as new, and the entries of the others;
        a key without an entry has `clean`. Keys given as a tuple are kept by the core (with
        the tuple) until the next view: the same tuple again is not read again."""
    def clusters_text(
        self,
        health: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], bytes, tuple[str | None, ...]]]
        | None = None,
        outliers: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], dict[str, Any], dict[str, dict[str, Any]]]]
        | None = None,
    ) -> bytes:
        """Every host's lines of the admin API's `/clusters` text (`cluster::host::stat::value`,
        clusters and hosts sorted by name, each line ending in a newline), written with the
        GIL released; `health` and `outliers` as for `stats_hosts_json`."""
    def host_statuses_json(
        self,
        health: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], bytes, tuple[str | None, ...]]]
        | None = None,
        outliers: Mapping[str, Mapping[str, Mapping[str, Any]] | tuple[Sequence[str], dict[str, Any], dict[str, dict[str, Any]]]]
        | None = None,
    ) -> list[tuple[str, bytes]]:
        """`[(cluster, host_statuses)]`, clusters sorted by name: each cluster's hosts as
        `/clusters?format=json` lists them, as JSON text for its place in that document
        (`json.dumps(..., indent=2)`), written with the GIL released."""
    def recent_spans(self) -> list[dict[str, Any]]:
        """The most recent recorded spans (`proxy.tracing`), newest first: ids, timings
        (`duration_ms`, `marks_ms`), route, cluster, upstream host, status (docs/admin.md)."""
    def wakeup_fd(self) -> int:
        """Readable when events are queued; drain with drain_events()."""
    def drain_events(self) -> list[OutlierEvent | InstanceWantedEvent | StoppedEvent]:
        """Every queued event, oldest first (rust/src/notify.rs, one class per kind)."""
    def events_dropped(self) -> int:
        """Events dropped so far because 65,536 were queued unread (oldest first).

        The same count is `core_events_dropped` in `stats()`.
        """
    def shutdown(self, drain_ms: int = 5000) -> None:
        """Stop accepting, let in-flight requests finish for up to drain_ms, then stop.

        Returns at once; completion is reported as a StoppedEvent.
        """

@final
class OutlierEvent:
    """A host reached one of its cluster's consecutive-failure thresholds (the control layer
    decides whether to eject it)."""

    def __new__(cls, cluster: str, host: str, type: str) -> Self: ...
    @property
    def kind(self) -> Literal["outlier"]: ...
    @property
    def cluster(self) -> str: ...
    @property
    def host(self) -> str:
        """The endpoint, "IP:PORT" or "unix:/path"."""
    @property
    def type(self) -> str:
        """"consecutive_5xx", "consecutive_gateway_failure" or "consecutive_local_origin_failure"."""

@final
class InstanceWantedEvent:
    """A request of a function cluster (snapshot `function`) found no idle instance and waits
    for one, up to the cluster's `instanceWaitMs` (then it is answered 503). The control layer
    may start an instance and add it with `Core.set_endpoints`: the oldest waiting request
    gets it at once. One event per request that starts waiting; the counts are taken then.
    """

    def __new__(cls, cluster: str, waiting: int, busy: int, hosts: int) -> Self: ...
    @property
    def kind(self) -> Literal["instance_wanted"]: ...
    @property
    def cluster(self) -> str: ...
    @property
    def waiting(self) -> int:
        """Requests waiting for an instance, the one that caused this event included."""
    @property
    def busy(self) -> int:
        """Hosts serving a request."""
    @property
    def hosts(self) -> int:
        """Hosts in the cluster: busy, idle or unhealthy."""

@final
class StoppedEvent:
    """The runtime stopped after `Core.shutdown`."""

    def __new__(cls, clean: bool, open: int) -> Self: ...
    @property
    def kind(self) -> Literal["stopped"]: ...
    @property
    def clean(self) -> bool:
        """Every connection finished within the drain."""
    @property
    def open(self) -> int:
        """Connections still open when the runtime stopped."""

@final
class RouteTable:
    """A compiled route table (the `routeTables` entry of a snapshot), for tests and tools."""

    def __new__(cls, table: str | bytes) -> Self: ...
    def match(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        authority: str = "",
        scheme: str = "http",
        port: int = 0,
    ) -> str | None:
        """Name of the first matching route, or None."""
    def __len__(self) -> int: ...

@final
class Balancer:
    """A load balancer over hosts 0..n-1 with the given weights.

    policy: "least_request" (Envoy WLR, default), "round_robin" or "random".
    """

    def __new__(
        cls,
        weights: Sequence[int],
        policy: str = "least_request",
        active_request_bias: float = 1.0,
        seed: int | None = None,
    ) -> Self: ...
    def pick(self, exclude: Sequence[int] = ...) -> int | None:
        """Pick a healthy host (any host in panic) not in `exclude`, the hosts a retry tried.

        When every such host is excluded, one of them is picked again (as Envoy's retry host
        predicate falls back to its last pick); an unhealthy host is never picked outside panic.
        None only when no host has a weight.
        """
    def start(self, host: int) -> None:
        """A request to `host` began (raises its active count)."""
    def end(self, host: int) -> None: ...
    def active(self, host: int) -> int: ...
    def set_healthy(self, host: int, healthy: bool) -> None: ...
    def __len__(self) -> int: ...
