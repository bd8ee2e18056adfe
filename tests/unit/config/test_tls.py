"""meshplane.config.tls: certificate sources (file, SDS mapping, ACM refused), SNI certificates on
gateways, App Mesh's negotiation rules and default SAN, and the files a snapshot reads."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from meshplane.config import compile_snapshot, from_dict
from meshplane.config.tls import secret_dir, secret_files, tls_files

from .builders import find, gateway_doc, problems_of, sidecar_doc
from .snapshot_contract import assert_valid_snapshot

GW = 'VirtualGateway "edge"'
FILE_CERT = {"file": {"certificateChain": "/certs/chain.pem", "privateKey": "/certs/key.pem"}}
CA_FILE = {"file": {"certificateChain": "/certs/ca.pem"}}


def compiled(doc: dict[str, Any]) -> dict[str, Any]:
    snapshot = json.loads(compile_snapshot(from_dict(doc), version="v1"))
    assert_valid_snapshot(snapshot)
    return snapshot


def gateway_tls(doc: dict[str, Any], tls: dict[str, Any]) -> None:
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["tls"] = tls


def cluster(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in snapshot["clusters"] if c["name"] == name)


# --- SDS mapping --------------------------------------------------------------------------------


def test_secret_names_map_into_the_directory_safely() -> None:
    assert secret_dir("edge-cert") == "edge-cert"
    assert secret_dir("spiffe://example.org/web") == "spiffe___example.org_web"
    assert secret_dir("..") == "__"
    assert secret_dir("../../etc") == ".._.._etc"
    sds = {"secretsDir": "/run/secrets", "secrets": {"ca": {"trust": "/pki/ca.pem"}}}
    assert secret_files(sds, "edge") == {
        "certificateChain": "/run/secrets/edge/cert.pem",
        "privateKey": "/run/secrets/edge/key.pem",
        "trust": "/run/secrets/edge/ca.pem",
    }
    assert secret_files(sds, "ca") == {"trust": "/pki/ca.pem"}  # explicit beats the directory
    assert secret_files(None, "edge") == {}


def test_sds_certificate_and_trust_resolve_through_proxy_sds() -> None:
    doc = gateway_doc()
    doc["proxy"]["sds"] = {
        "secretsDir": "/run/secrets",
        "secrets": {"bundle": {"trust": "/pki/bundle.pem"}},
    }
    gateway_tls(
        doc,
        {
            "mode": "STRICT",
            "certificate": {"sds": {"secretName": "edge-cert"}},
            "validation": {"trust": {"sds": {"secretName": "bundle"}}},
        },
    )
    (listener,) = compiled(doc)["listeners"]
    assert listener["tls"] == {
        "mode": "strict",
        "certificates": [
            {
                "certificateChain": "/run/secrets/edge-cert/cert.pem",
                "privateKey": "/run/secrets/edge-cert/key.pem",
            }
        ],
        "validation": {"trust": "/pki/bundle.pem", "subjectAlternativeNames": []},
    }
    # the mapping survives the native round trip
    assert from_dict(from_dict(doc).to_native()).proxy.sds == doc["proxy"]["sds"]


def test_sds_client_policy_resolves_too() -> None:
    doc = sidecar_doc()
    doc["proxy"]["sds"] = {"secretsDir": "secrets"}
    find(doc, "VirtualNode", "web")["spec"]["backendDefaults"] = {
        "clientPolicy": {
            "tls": {
                "certificate": {"sds": {"secretName": "spiffe://shop/web"}},
                "validation": {"trust": {"sds": {"secretName": "spiffe://shop"}}},
            }
        }
    }
    assert cluster(compiled(doc), "v1")["tls"] == {
        "serverName": "svc.local",
        "certificate": {
            "certificateChain": "secrets/spiffe___shop_web/cert.pem",
            "privateKey": "secrets/spiffe___shop_web/key.pem",
        },
        "validation": {"trust": "secrets/spiffe___shop/ca.pem", "subjectAlternativeNames": []},
    }


def test_unmapped_or_incomplete_sds_secrets_are_named() -> None:
    doc = gateway_doc()
    doc["proxy"]["sds"] = {"secrets": {"half": {"certificateChain": "/c.pem"}}}
    gateway_tls(
        doc,
        {
            "mode": "PERMISSIVE",
            "certificate": {"sds": {"secretName": "half"}},
            "validation": {"trust": {"sds": {"secretName": "nowhere"}}},
        },
    )
    problems = problems_of(doc)
    by_field = {p.field: p for p in problems}
    half = by_field["spec.listeners[0].tls.certificate.sds.secretName"]
    assert half.resource == GW
    assert 'SDS secret "half" in proxy.sds.secrets has no certificateChain and privateKey' in (
        half.message
    )
    nowhere = by_field["spec.listeners[0].tls.validation.trust.sds.secretName"]
    assert 'SDS secret "nowhere" is not mapped to files' in nowhere.message
    assert "<secretsDir>/nowhere/ca.pem" in nowhere.message
    assert "mesh.yaml" in str(nowhere)


def test_proxy_sds_shape_is_checked() -> None:
    doc = gateway_doc()
    doc["proxy"]["sds"] = {"secretDir": "/x", "secrets": {"a": {"cert": "/c"}}}
    fields = {p.field for p in problems_of(doc)}
    assert "proxy.sds.secretDir" in fields  # did you mean secretsDir
    assert "proxy.sds.secrets.a.cert" in fields


def test_a_disabled_listener_needs_no_usable_source() -> None:
    doc = gateway_doc()
    gateway_tls(doc, {"mode": "DISABLED", "certificate": {"sds": {"secretName": "x"}}})
    assert "tls" not in compiled(doc)["listeners"][0]


# --- ACM ----------------------------------------------------------------------------------------


def test_acm_is_refused_with_the_reason() -> None:
    doc = gateway_doc()
    gateway_tls(doc, {"mode": "STRICT", "certificate": {"acm": {"certificateArn": "arn:c"}}})
    find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {
        "clientPolicy": {
            "tls": {"validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:ca"]}}}}
        }
    }
    by_field = {p.field: p.message for p in problems_of(doc)}
    cert = by_field["spec.listeners[0].tls.certificate.acm"]
    assert "AWS Certificate Manager" in cert and "not available outside AWS" in cert
    assert "certificate.file" in cert
    trust = by_field["spec.backendDefaults.clientPolicy.tls.validation.trust.acm"]
    assert "not available outside AWS" in trust and "trust.file" in trust


def test_an_unenforced_acm_client_policy_is_not_used_so_not_refused() -> None:
    doc = gateway_doc()
    find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {
        "clientPolicy": {
            "tls": {
                "enforce": False,
                "validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:ca"]}}},
            }
        }
    }
    assert "tls" not in cluster(compiled(doc), "v1")


# --- SNI certificates (gateway extension) -------------------------------------------------------


def test_gateway_sni_certificates_follow_the_default() -> None:
    doc = gateway_doc()
    doc["proxy"]["sds"] = {"secretsDir": "/s"}
    gateway_tls(
        doc,
        {
            "mode": "STRICT",
            "certificate": FILE_CERT,
            "sniCertificates": [
                {"serverNames": ["API.example.com"], "certificate": {"sds": {"secretName": "api"}}},
                {
                    "serverNames": ["*.shop.example", "shop.example"],
                    "certificate": {
                        "file": {"certificateChain": "/s/shop.pem", "privateKey": "/s/shop.key"}
                    },
                },
            ],
        },
    )
    (listener,) = compiled(doc)["listeners"]
    assert listener["tls"]["certificates"] == [
        {"certificateChain": "/certs/chain.pem", "privateKey": "/certs/key.pem"},
        {
            "certificateChain": "/s/api/cert.pem",
            "privateKey": "/s/api/key.pem",
            "serverNames": ["api.example.com"],
        },
        {
            "certificateChain": "/s/shop.pem",
            "privateKey": "/s/shop.key",
            "serverNames": ["*.shop.example", "shop.example"],
        },
    ]


def test_sni_names_must_be_host_names() -> None:
    doc = gateway_doc()
    gateway_tls(
        doc,
        {
            "mode": "STRICT",
            "certificate": FILE_CERT,
            "sniCertificates": [
                {"serverNames": ["ok.example", "bad name", "a.*.example"], "certificate": FILE_CERT}
            ],
        },
    )
    fields = [p.field for p in problems_of(doc)]
    assert fields == [
        "spec.listeners[0].tls.sniCertificates[0].serverNames[1]",
        "spec.listeners[0].tls.sniCertificates[0].serverNames[2]",
    ]


def test_sni_certificates_are_a_gateway_extension_only() -> None:
    doc = sidecar_doc()
    find(doc, "VirtualNode", "web")["spec"]["listeners"][0]["tls"] = {
        "mode": "STRICT",
        "certificate": FILE_CERT,
        "sniCertificates": [{"serverNames": ["a.example"], "certificate": FILE_CERT}],
    }
    (problem,) = problems_of(doc)
    assert problem.field == "spec.listeners[0].tls.sniCertificates"
    assert "unknown field" in problem.message


# --- origination --------------------------------------------------------------------------------


def test_default_san_for_static_endpoints_is_the_service_the_caller_uses() -> None:
    doc = gateway_doc()
    find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {
        "clientPolicy": {"tls": {"validation": {"trust": CA_FILE}}}
    }
    tls = cluster(compiled(doc), "v1")["tls"]
    assert tls == {
        "serverName": "svc.local",
        "validation": {"trust": "/certs/ca.pem", "subjectAlternativeNames": []},
    }


def test_callee_strict_listener_without_client_policy_gets_unverified_tls() -> None:
    doc = gateway_doc()
    find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]["tls"] = {
        "mode": "STRICT",
        "certificate": FILE_CERT,
    }
    assert cluster(compiled(doc), "v1")["tls"] == {"serverName": "svc.local"}


# --- the files a snapshot reads -----------------------------------------------------------------


def test_tls_files_lists_every_certificate_key_and_trust_in_use() -> None:
    doc = gateway_doc()
    gateway_tls(
        doc,
        {
            "mode": "STRICT",
            "certificate": FILE_CERT,
            "validation": {"trust": CA_FILE},
            "sniCertificates": [
                {
                    "serverNames": ["b.example"],
                    "certificate": {
                        "file": {"certificateChain": "/b/chain.pem", "privateKey": "/b/key.pem"}
                    },
                }
            ],
        },
    )
    policy = {
        "tls": {
            "certificate": {
                "file": {"certificateChain": "/client/chain.pem", "privateKey": "/client/key.pem"}
            },
            "validation": {"trust": {"file": {"certificateChain": "/upstream/ca.pem"}}},
        }
    }
    find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {"clientPolicy": policy}
    assert tls_files(compiled(doc)) == [
        "/b/chain.pem",
        "/b/key.pem",
        "/certs/ca.pem",
        "/certs/chain.pem",
        "/certs/key.pem",
        "/client/chain.pem",
        "/client/key.pem",
        "/upstream/ca.pem",
    ]
    plain = copy.deepcopy(gateway_doc())
    assert tls_files(compiled(plain)) == []


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE"])
def test_inbound_listener_modes(mode: str) -> None:
    doc = sidecar_doc()
    find(doc, "VirtualNode", "web")["spec"]["listeners"][0]["tls"] = {
        "mode": mode,
        "certificate": FILE_CERT,
        "validation": {
            "trust": CA_FILE,
            "subjectAlternativeNames": {"match": {"exact": ["spiffe://shop/front"]}},
        },
    }
    inbound = compiled(doc)["listeners"][0]
    assert inbound["tls"]["mode"] == mode.lower()
    assert inbound["tls"]["validation"]["subjectAlternativeNames"] == ["spiffe://shop/front"]
