"""Certificates for the admin API: the `/certs` document and the expiry metrics of `/stats`.

Pure: takes what `Proxy.tls_info()` returns (the core's certificates per listener and cluster,
plus the certificate watcher's reload counts), the trust bundle paths and the time; no I/O, no
trio. Imports only `admin.prometheus` and the standard library.

    meshplane_tls_certificate_expiry_seconds{listener="...",path="..."}   seconds to not_after
    meshplane_tls_certificate_expiry_seconds{cluster="...",path="..."}    (negative: expired)
    meshplane_tls_reload_total{result="success"|"failure"}                certificate reloads

A file holding several certificates (a CA bundle) gets the earliest expiry among them: the one
that matters first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from meshplane.admin.prometheus import escape_label_value

__all__ = ["certs_document", "tls_metrics"]

DAY_S = 86_400
_EXPIRY = "meshplane_tls_certificate_expiry_seconds"
_RELOADS = "meshplane_tls_reload_total"


def _iso(unix: int) -> str:
    import datetime as dt  # here: an idle proxy never loads it (~0.3 MiB; benches/README.md)

    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(cert: Mapping[str, Any], trust: set[str], now: float) -> dict[str, Any]:
    not_after = int(cert.get("not_after") or 0)
    left = not_after - now
    return {
        "kind": "ca_cert" if cert.get("path") in trust else "cert_chain",
        "path": cert.get("path", ""),
        "subject": cert.get("subject", ""),
        "subject_alt_names": list(cert.get("subject_alt_names") or []),
        "not_after": not_after,
        "expiration_time": _iso(not_after),
        "seconds_until_expiration": int(left),
        "days_until_expiration": int(left // DAY_S),
    }


def certs_document(info: Mapping[str, Any], trust: Iterable[str], now: float) -> dict[str, Any]:
    """`/certs`: every certificate in use, per listener and per cluster, with its subject, SANs,
    expiry (unix `not_after`, ISO 8601 `expiration_time`, seconds and whole days left) and
    `kind` (`cert_chain`: presented; `ca_cert`: trusted to verify the peer), plus `reload`."""
    trusted = set(trust)
    doc: dict[str, Any] = {"listeners": {}, "clusters": {}}
    for section in ("listeners", "clusters"):
        for name, entry in sorted((info.get(section) or {}).items()):
            out = {k: v for k, v in entry.items() if k != "certificates"}
            out["certificates"] = [
                _describe(c, trusted, now) for c in entry.get("certificates") or []
            ]
            doc[section][name] = out
    if "reload" in info:
        doc["reload"] = dict(info["reload"])
    return doc


def tls_metrics(info: Mapping[str, Any], now: float) -> str:
    """The TLS families of `/stats` in Prometheus text 0.0.4 ('' when nothing uses TLS)."""
    expiry: dict[tuple[str, str, str], int] = {}
    for section, label in (("listeners", "listener"), ("clusters", "cluster")):
        for name, entry in (info.get(section) or {}).items():
            for cert in entry.get("certificates") or []:
                key = (label, name, str(cert.get("path", "")))
                not_after = int(cert.get("not_after") or 0)
                expiry[key] = min(expiry.get(key, not_after), not_after)
    lines = []
    if expiry:
        lines.append(f"# HELP {_EXPIRY} seconds until the certificate expires (negative once expired)")
        lines.append(f"# TYPE {_EXPIRY} gauge")
        for (label, name, path), not_after in sorted(expiry.items()):
            labels = f'{label}="{escape_label_value(name)}",path="{escape_label_value(path)}"'
            lines.append(f"{_EXPIRY}{{{labels}}} {int(not_after - now)}")
    reload = info.get("reload")
    if reload and reload.get("files"):
        lines.append(f"# HELP {_RELOADS} certificate reloads by result")
        lines.append(f"# TYPE {_RELOADS} counter")
        lines.append(f'{_RELOADS}{{result="success"}} {int(reload.get("reloads", 0))}')
        lines.append(f'{_RELOADS}{{result="failure"}} {int(reload.get("failures", 0))}')
    return "\n".join(lines) + "\n" if lines else ""
