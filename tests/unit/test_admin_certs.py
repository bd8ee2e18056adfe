"""admin.certs: the `/certs` document and the TLS families of `/stats` (pure functions)."""

from __future__ import annotations

from meshplane.admin.certs import certs_document, tls_metrics
from meshplane.admin.prometheus import parse

NOW = 1_800_000_000.0
DAY = 86_400
INFO = {
    "listeners": {
        "gateway/edge/8443": {
            "mode": "strict",
            "certificates": [
                {"path": "/c/edge.pem", "subject": "CN=edge", "subject_alt_names": ["DNS:edge"],
                 "not_after": int(NOW) + 10 * DAY + 5},
                {"path": "/c/ca.pem", "subject": "CN=ca1", "subject_alt_names": [],
                 "not_after": int(NOW) + 300 * DAY},
                {"path": "/c/ca.pem", "subject": "CN=ca2", "subject_alt_names": [],
                 "not_after": int(NOW) + 20 * DAY},
            ],
        }
    },
    "clusters": {
        'api"x': {"certificates": [{"path": "/c/old.pem", "subject": "CN=old",
                                    "subject_alt_names": [], "not_after": int(NOW) - DAY}]}
    },
    "reload": {"files": ["/c/edge.pem"], "reloads": 3, "failures": 1, "last_error": None,
               "last_reload": None},
}


def test_certs_document() -> None:
    doc = certs_document(INFO, ["/c/ca.pem"], NOW)
    edge, ca1, _ = doc["listeners"]["gateway/edge/8443"]["certificates"]
    assert doc["listeners"]["gateway/edge/8443"]["mode"] == "strict"
    assert edge["kind"] == "cert_chain" and ca1["kind"] == "ca_cert"
    assert edge["days_until_expiration"] == 10
    assert edge["seconds_until_expiration"] == 10 * DAY + 5
    assert edge["expiration_time"] == "2027-01-25T08:00:05Z"
    (old,) = doc["clusters"]['api"x']["certificates"]
    assert old["days_until_expiration"] == -1  # expired yesterday
    assert doc["reload"]["reloads"] == 3


def test_tls_metrics() -> None:
    samples = parse(tls_metrics(INFO, NOW))
    name = "meshplane_tls_certificate_expiry_seconds"
    assert samples[(name, (("listener", "gateway/edge/8443"), ("path", "/c/edge.pem")))] == (
        10 * DAY + 5
    )
    # a bundle: its earliest expiry
    assert samples[(name, (("listener", "gateway/edge/8443"), ("path", "/c/ca.pem")))] == 20 * DAY
    assert samples[(name, (("cluster", 'api"x'), ("path", "/c/old.pem")))] == -DAY
    assert samples[("meshplane_tls_reload_total", (("result", "success"),))] == 3
    assert samples[("meshplane_tls_reload_total", (("result", "failure"),))] == 1
    assert tls_metrics({"listeners": {}, "clusters": {}, "reload": {"files": []}}, NOW) == ""
