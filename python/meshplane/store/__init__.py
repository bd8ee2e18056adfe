"""meshplane.store: where the proxies of a mesh share state (registry, config versions).

One URL names a store:

- `etcd://HOST:PORT[,HOST:PORT...]`: an etcd v3 cluster (`EtcdStore`), for a fleet;
  `etcds://...` speaks HTTPS (system trust), and `?ca=CA.pem[&cert=CERT.pem&key=KEY.pem]`
  (on either scheme) trusts that CA and presents a client certificate;
- `sqlite:///PATH`, or a plain file path: the embedded store (`SqliteStore`), for one machine,
  shared by every meshplane process on it;
- nothing: `MESHPLANE_STORE` if set, else the embedded store at `default_path()`.

Layer: beside `drivers` (imports trio and h11, never the compiled core). `Store` documents the
semantics both back-ends share.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from meshplane.store._base import (
    Change,
    KeyValue,
    Store,
    StoreError,
    StoreUnavailable,
    WatchExpired,
    prefix_end,
)

if TYPE_CHECKING:
    import ssl

    from meshplane.store.etcd import EtcdStore
    from meshplane.store.sqlite import SqliteStore

__all__ = [
    "ENV",
    "Change",
    "EtcdStore",
    "KeyValue",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WatchExpired",
    "default_path",
    "open_store",
    "prefix_end",
    "resolve_url",
]

ENV = "MESHPLANE_STORE"


def __getattr__(name: str) -> Any:
    # The back-ends load when first used (`sqlite3` alone is ~0.9 MiB resident): a proxy
    # without a registry or a store never imports either.
    if name == "EtcdStore":
        from meshplane.store.etcd import EtcdStore

        return EtcdStore
    if name == "SqliteStore":
        from meshplane.store.sqlite import SqliteStore

        return SqliteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_path() -> str:
    """The embedded store's file: `$XDG_STATE_HOME/meshplane/store.db` (~/.local/state/...)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "meshplane", "store.db")


def resolve_url(*candidates: str | None) -> str:
    """The first non-empty of `candidates` (e.g. --store, then proxy.store), else
    `MESHPLANE_STORE`, else the embedded default."""
    for url in (*candidates, os.environ.get(ENV)):
        if url:
            return url
    return f"sqlite://{default_path()}"


def _tls_context(url: str, options: dict[str, str]) -> ssl.SSLContext:
    import ssl

    unknown = sorted(set(options) - {"ca", "cert", "key"})
    if unknown:
        raise StoreError(url, f"unknown option {unknown[0]!r}: expected ca, cert, key")
    if ("cert" in options) != ("key" in options):
        raise StoreError(url, "give both cert= and key= for a client certificate")
    try:
        context = ssl.create_default_context(cafile=options.get("ca"))
        if "cert" in options:
            context.load_cert_chain(options["cert"], options["key"])
    except (OSError, ssl.SSLError) as exc:
        raise StoreError(url, f"TLS files: {exc}") from None
    return context


def parse_etcd_endpoints(url: str) -> list[tuple[str, int]]:
    rest = url.split("://", 1)[1].split("?", 1)[0].rstrip("/")
    endpoints = []
    for part in rest.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, "2379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(url, f"bad etcd endpoint {part!r}: expected HOST:PORT")
        endpoints.append((host, int(port)))
    if not endpoints:
        raise StoreError(url, "no etcd endpoint: expected etcd://HOST:PORT[,HOST:PORT...]")
    return endpoints


def open_store(url: str | None = None) -> Store:
    """The store `url` names (see the module docstring). Opening connects lazily: the first
    operation raises `StoreUnavailable` if the store cannot be reached."""
    url = resolve_url(url)
    if url.startswith(("etcd://", "etcds://")):
        query = url.split("?", 1)[1] if "?" in url else ""
        options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        tls = None
        if url.startswith("etcds://") or options:
            tls = _tls_context(url, options)
        from meshplane.store.etcd import EtcdStore

        return EtcdStore(url, parse_etcd_endpoints(url), tls=tls)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path:
            raise StoreError(url, "expected sqlite:///PATH")
        from meshplane.store.sqlite import SqliteStore

        return SqliteStore(path)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(url, f"unknown store scheme {scheme!r}: expected etcd://, etcds:// or sqlite://")
    from meshplane.store.sqlite import SqliteStore

    return SqliteStore(url)
