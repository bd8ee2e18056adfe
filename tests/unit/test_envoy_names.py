"""`admin.envoy_names`: the stats under Envoy's Prometheus names and labels (pure, no sockets)."""

from __future__ import annotations

from typing import Any

from meshplane.admin.envoy_names import EnvoyContext, render_envoy
from meshplane.admin.prometheus import parse


def _stats() -> dict[str, Any]:
    hist = {"bounds": [0.5, 1.0, 5.0], "counts": [1, 2, 3, 4], "sum": 50.5, "count": 10}
    return {
        "version": "1-abc",
        "listeners": {
            "inbound/api-v1/8080": {"cx_total": 3, "cx_active": 1, "rq_total": 10, "rq_active": 0,
                                    "rq_2xx": 9, "rq_5xx": 1, "no_route": 0, "tls_handshakes": 0,
                                    "rq_time_ms": {"bounds": [0.5, 1.0, 5.0], "counts": [4, 0, 5, 1],
                                                   "sum": 31.25, "count": 10}},
            "inbound/api-v1/9090": {"cx_total": 1, "cx_active": 0, "rq_total": 2, "rq_2xx": 2},
            "outbound/api-v1": {"cx_total": 2, "cx_active": 2, "rq_total": 4, "rq_4xx": 4},
        },
        "clusters": {
            "api": {
                "rq_total": 10, "rq_active": 1, "rq_2xx": 9, "rq_5xx": 1, "rq_retry": 2, "rq_reset": 1,
                "rq_codes": {"200": 8, "204": 1, "503": 1},
                "rq_time_ms": hist, "protocol": "http1",
                "health_check": {"attempt": 5, "success": 4, "failure": 1, "network_failure": 1,
                                 "timeout": 0, "healthy": 1},
                "outlier_detection": {"ejections_active": 1, "ejections_enforced_total": 3,
                                      "ejections_enforced_consecutive_5xx": 3},
                "hosts": {
                    "127.0.0.1:9001": {"healthy": True, "ejected": False},
                    "127.0.0.1:9002": {"healthy": True, "ejected": True},
                    "127.0.0.1:9003": {"healthy": False, "failed_active_hc": True},
                },
            },
        },
    }


CTX = EnvoyContext(
    mesh="shop",
    addresses={"inbound/api-v1/8080": ("0.0.0.0", 15000), "inbound/api-v1/9090": ("::1", 15001),
               "outbound/api-v1": ("127.0.0.1", 15002)},
    protocols={"inbound/api-v1/9090": "http2"},
)


def lbl(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_cluster_families_keep_envoys_names_and_labels() -> None:
    s = parse(render_envoy(_stats(), CTX))
    c = lbl(envoy_cluster_name="api")
    assert s[("envoy_cluster_upstream_rq_total", c)] == 10
    assert s[("envoy_cluster_upstream_rq_active", c)] == 1
    assert s[("envoy_cluster_upstream_rq_retry", c)] == 2
    assert s[("envoy_cluster_upstream_rq_rx_reset", c)] == 1
    assert s[("envoy_cluster_upstream_rq_xx", lbl(envoy_cluster_name="api", envoy_response_code_class="5"))] == 1
    assert s[("envoy_cluster_upstream_rq", lbl(envoy_cluster_name="api", envoy_response_code="200"))] == 8
    assert s[("envoy_cluster_upstream_rq", lbl(envoy_cluster_name="api", envoy_response_code="503"))] == 1
    # Envoy's histogram is in milliseconds with Envoy's bounds, cumulative
    assert s[("envoy_cluster_upstream_rq_time_bucket", lbl(envoy_cluster_name="api", le="1"))] == 3
    assert s[("envoy_cluster_upstream_rq_time_bucket", lbl(envoy_cluster_name="api", le="+Inf"))] == 10
    assert s[("envoy_cluster_upstream_rq_time_sum", c)] == 50.5
    assert s[("envoy_cluster_membership_total", c)] == 3
    assert s[("envoy_cluster_membership_healthy", c)] == 1  # ejected and failed hosts are not healthy
    assert s[("envoy_cluster_health_check_attempt", c)] == 5
    assert s[("envoy_cluster_health_check_network_failure", c)] == 1
    assert s[("envoy_cluster_outlier_detection_ejections_active", c)] == 1
    assert s[("envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", c)] == 3
    assert s[("envoy_cluster_manager_active_clusters", ())] == 1


def test_http_families_carry_app_mesh_dimensions_and_listeners_their_address() -> None:
    text = render_envoy(_stats(), CTX)
    s = parse(text)
    ingress = {"appmesh_mesh": "shop", "appmesh_virtual_node": "api-v1",
               "envoy_http_conn_manager_prefix": "ingress"}
    first = lbl(**ingress, appmesh_listener_protocol="http", appmesh_listener_port="8080")
    second = lbl(**ingress, appmesh_listener_protocol="http2", appmesh_listener_port="9090")
    egress = lbl(appmesh_mesh="shop", appmesh_virtual_node="api-v1", envoy_http_conn_manager_prefix="egress")
    assert s[("envoy_http_downstream_rq_total", first)] == 10
    assert s[("envoy_http_downstream_rq_total", second)] == 2
    assert s[("envoy_http_downstream_rq_total", egress)] == 4
    assert s[("envoy_http_downstream_rq_xx", tuple(sorted(first + (("envoy_response_code_class", "2"),))))] == 9
    assert s[("envoy_http_downstream_rq_xx", tuple(sorted(egress + (("envoy_response_code_class", "4"),))))] == 4
    assert s[("envoy_listener_downstream_cx_total", lbl(envoy_listener_address="0.0.0.0_15000"))] == 3
    assert s[("envoy_listener_downstream_cx_active", lbl(envoy_listener_address="[__1]_15001"))] == 0
    # The connection manager's request time, per prefix and listener dimensions, cumulative ms.
    assert s[("envoy_http_downstream_rq_time_bucket", tuple(sorted(first + (("le", "0.5"),))))] == 4
    assert s[("envoy_http_downstream_rq_time_bucket", tuple(sorted(first + (("le", "5"),))))] == 9
    assert s[("envoy_http_downstream_rq_time_bucket", tuple(sorted(first + (("le", "+Inf"),))))] == 10
    assert s[("envoy_http_downstream_rq_time_sum", first)] == 31.25
    assert s[("envoy_http_downstream_rq_time_count", first)] == 10
    assert ("envoy_http_downstream_rq_time_count", egress) not in s  # no histogram in its stats
    assert '# TYPE envoy_http_downstream_rq_time histogram\n' in text
    assert '# TYPE envoy_http_downstream_rq_xx counter\n' in text
    assert '# TYPE envoy_cluster_upstream_rq_time histogram\n' in text
    assert '# TYPE envoy_cluster_upstream_rq_active gauge\n' in text


def test_without_context_listeners_have_no_address_families_and_no_mesh_label() -> None:
    text = render_envoy(_stats())
    assert "envoy_listener_" not in text
    assert "appmesh_mesh" not in text
    assert "envoy_http_downstream_rq_total{" in text


def test_every_family_is_whole_with_help_and_type() -> None:
    text = render_envoy(_stats(), CTX)
    seen: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            family = line.split(" ")[2]
            assert family not in seen
            seen.append(family)
        elif line.startswith("# TYPE "):
            assert line.split(" ")[2] == seen[-1]
        else:
            assert line.startswith(seen[-1]), f"{line} outside {seen[-1]}"
