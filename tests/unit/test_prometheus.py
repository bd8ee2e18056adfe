"""meshplane.admin.prometheus: stats dict -> Prometheus text 0.0.4 (pure, no sockets)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from meshplane.admin.prometheus import escape_label_value, parse, render

BOUNDS = [0.5, 1.0, 5.0, 10.0]


def _stats(cluster: str = "api") -> dict[str, Any]:
    return {
        "version": "3-0123456789ab",
        "listeners": {"gateway/edge/8080": {"cx_total": 5, "cx_active": 2, "rq_total": 9, "rq_2xx": 8, "rq_5xx": 1}},
        "routes": {"split": {"rq_total": 9, "rq_2xx": 8}},
        "clusters": {
            cluster: {
                "rq_total": 9,
                "rq_active": 1,
                "rq_2xx": 8,
                "rq_5xx": 1,
                "cx_connect_fail": 0,
                "rq_time_ms": {"bounds": BOUNDS, "counts": [2, 0, 3, 1, 3], "sum": 123.25, "count": 9},
                "hosts": {
                    "127.0.0.1:9001": {"rq_total": 6, "rq_active": 1, "rq_2xx": 6, "healthy": True, "weight": 1},
                    "[::1]:9002": {"rq_total": 3, "rq_active": 0, "rq_5xx": 1, "healthy": False, "weight": 2},
                },
            }
        },
    }


def test_names_labels_and_values() -> None:
    samples = parse(render(_stats()))
    c = (("cluster", "api"),)
    assert samples[("meshplane_cluster_upstream_rq_total", c)] == 9
    assert samples[("meshplane_cluster_upstream_rq_active", c)] == 1
    assert samples[("meshplane_cluster_upstream_rq_xx_total", c + (("response_code_class", "2"),))] == 8
    assert samples[("meshplane_cluster_upstream_rq_xx_total", c + (("response_code_class", "5"),))] == 1
    host = (("cluster", "api"), ("host", "127.0.0.1:9001"))
    assert samples[("meshplane_host_rq_active", host)] == 1
    assert samples[("meshplane_host_healthy", host)] == 1
    assert samples[("meshplane_host_healthy", (("cluster", "api"), ("host", "[::1]:9002")))] == 0
    assert samples[("meshplane_host_weight", (("cluster", "api"), ("host", "[::1]:9002")))] == 2
    assert samples[("meshplane_listener_downstream_cx_active", (("listener", "gateway/edge/8080"),))] == 2
    assert samples[("meshplane_route_rq_total", (("route", "split"),))] == 9
    assert samples[("meshplane_config_info", (("version", "3-0123456789ab"),))] == 1


def test_exact_text_of_a_small_cluster() -> None:
    text = render({"clusters": {"c": {"rq_total": 2, "rq_active": 0, "hosts": {}}}})
    assert text == (
        "# HELP meshplane_cluster_upstream_rq_total cluster upstream: requests\n"
        "# TYPE meshplane_cluster_upstream_rq_total counter\n"
        'meshplane_cluster_upstream_rq_total{cluster="c"} 2\n'
        "# HELP meshplane_cluster_upstream_rq_active cluster upstream: requests in flight\n"
        "# TYPE meshplane_cluster_upstream_rq_active gauge\n"
        'meshplane_cluster_upstream_rq_active{cluster="c"} 0\n'
    )


def test_every_family_has_one_type_line_and_its_samples_together() -> None:
    text = render(_stats())
    families: list[str] = []
    types: dict[str, str] = {}
    helps: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"second HELP line for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"second TYPE line for {name}"
            assert kind in {"counter", "gauge", "histogram"}
            assert name in helps, f"no HELP line for {name}"
            assert kind != "counter" or name.endswith("_total"), f"counter {name} does not end in _total"
            types[name] = kind
            families.append(name)
            continue
        match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        assert match is not None, line
        sample, family = match[0], families[-1]
        assert sample == family or (
            types[family] == "histogram" and sample in {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
        ), f"{sample} is outside its family block ({family})"
    assert text.endswith("\n")


def test_histogram_buckets_are_cumulative_and_end_in_inf() -> None:
    samples = parse(render(_stats()))
    c = (("cluster", "api"),)
    name = "meshplane_cluster_upstream_rq_time_seconds"

    def bucket(le: str) -> float:
        return samples[(f"{name}_bucket", tuple(sorted(c + (("le", le),))))]

    # per-bucket counts [2, 0, 3, 1] + 3 above the last bound; milliseconds become seconds
    assert [bucket(le) for le in ("0.0005", "0.001", "0.005", "0.01", "+Inf")] == [2, 2, 5, 6, 9]
    assert samples[(f"{name}_count", c)] == 9
    assert samples[(f"{name}_sum", c)] == 0.12325
    assert "# TYPE meshplane_cluster_upstream_rq_time_seconds histogram" in render(_stats())


def test_histogram_without_count_sums_its_buckets() -> None:
    hist = {"bounds": [1.0], "counts": [1, 4], "sum": 9.0}
    samples = parse(render({"clusters": {"c": {"rq_time_ms": hist}}}))
    assert samples[("meshplane_cluster_upstream_rq_time_seconds_count", (("cluster", "c"),))] == 5
    assert samples[("meshplane_cluster_upstream_rq_time_seconds_bucket", (("cluster", "c"), ("le", "+Inf")))] == 5


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("plain", "plain"), ('a"b', 'a\\"b'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb"), ('\\"\n', '\\\\\\"\\n')],
)
def test_label_values_are_escaped(raw: str, escaped: str) -> None:
    assert escape_label_value(raw) == escaped
    text = render({"clusters": {raw: {"rq_total": 1}}})
    assert f'{{cluster="{escaped}"}} 1' in text
    assert parse(text) == {("meshplane_cluster_upstream_rq_total", (("cluster", raw),)): 1}


def test_unknown_stats_follow_the_same_rules_and_odd_values_are_skipped() -> None:
    stats = {"clusters": {"c": {"new_thing_active": 3, "new_counter": 4, "note": "text", "nested": {"a": 1}}}}
    text = render(stats)
    assert "# TYPE meshplane_cluster_upstream_new_thing_active gauge" in text
    assert "# TYPE meshplane_cluster_upstream_new_counter_total counter" in text
    assert "note" not in text and "nested" not in text


def test_levels_are_gauges_and_top_level_numbers_are_server_stats() -> None:
    stats = {
        "downstream_cx_open": 4,
        "clusters": {"c": {"protocol": "http1", "circuit_breakers": {"maxConnections": 9},
                           "hosts": {"127.0.0.1:1": {"idle_connections": 2, "cx_total": 3}}}},
    }
    text = render(stats)
    assert "# TYPE meshplane_server_downstream_cx_open gauge\nmeshplane_server_downstream_cx_open 4\n" in text
    assert "# TYPE meshplane_host_idle_connections gauge" in text
    assert "# TYPE meshplane_host_cx_total counter" in text
    assert "protocol" not in text and "maxConnections" not in text


def test_empty_and_missing_sections() -> None:
    assert render({}) == ""
    assert render({"version": None, "listeners": {}, "clusters": {"c": {"hosts": {}}}}) == ""


def test_parse_rejects_malformed_lines() -> None:
    with pytest.raises(ValueError):
        parse("not a sample line at all\n")
    with pytest.raises(ValueError):
        parse('m{cluster="unterminated} 1\n')


def test_access_log_lines_written_and_dropped() -> None:
    text = render({"access_logs": {"/var/log/a.log": {"written": 7, "dropped": 2}}})
    samples = parse(text)
    key = ("meshplane_access_log_lines_total", (("path", "/var/log/a.log"), ("result", "written")))
    assert samples[key] == 7
    key = ("meshplane_access_log_lines_total", (("path", "/var/log/a.log"), ("result", "dropped")))
    assert samples[key] == 2
    assert "# TYPE meshplane_access_log_lines_total counter" in text


def test_the_control_layers_losses_are_labelled_counters() -> None:
    stats = {"control": {"events_dropped": {"outlier": 3, "stopped": 0},
                         "driver_errors": {"health_check": 0, "outlier_detection": 2}}}
    text = render(stats)
    assert "# TYPE meshplane_control_events_dropped_total counter" in text
    assert "# TYPE meshplane_control_driver_errors_total counter" in text
    assert parse(text) == {
        ("meshplane_control_events_dropped_total", (("kind", "outlier"),)): 3,
        ("meshplane_control_events_dropped_total", (("kind", "stopped"),)): 0,
        ("meshplane_control_driver_errors_total", (("driver", "health_check"),)): 0,
        ("meshplane_control_driver_errors_total", (("driver", "outlier_detection"),)): 2,
    }
    assert "meshplane_server_" not in text


def test_exact_status_codes_are_one_labelled_family() -> None:
    stats = {"clusters": {"c": {"rq_codes": {"200": 3, "503": 1},
                                "hosts": {"127.0.0.1:1": {"rq_codes": {"200": 3}}}}}}
    text = render(stats)
    assert "# TYPE meshplane_cluster_upstream_rq_code_total counter" in text
    assert parse(text) == {
        ("meshplane_cluster_upstream_rq_code_total", (("cluster", "c"), ("response_code", "200"))): 3,
        ("meshplane_cluster_upstream_rq_code_total", (("cluster", "c"), ("response_code", "503"))): 1,
        ("meshplane_host_rq_code_total", (("cluster", "c"), ("host", "127.0.0.1:1"), ("response_code", "200"))): 3,
    }


def test_the_cores_tracing_counters_are_counters_with_help() -> None:
    text = render({"tracing": {"spans_sampled": 7, "spans_dropped": 2, "export_failures": 1}})
    values = parse(text)
    assert values[("meshplane_tracing_spans_sampled_total", ())] == 7
    assert values[("meshplane_tracing_spans_dropped_total", ())] == 2
    assert values[("meshplane_tracing_export_failures_total", ())] == 1
    assert "# TYPE meshplane_tracing_spans_dropped_total counter" in text
    assert "# HELP meshplane_tracing_spans_dropped_total spans dropped because the export queue was full" in text
    assert "meshplane_server_tracing" not in text


def test_a_function_clusters_levels_are_gauges_and_its_throttles_a_counter() -> None:
    stats = {"clusters": {"fn": {
        "rq_throttled": 2, "rq_waiting": 1, "rq_instance_wait_timeout": 0,
        "function": {"concurrency": 4, "instance_wait_ms": 10000, "in_flight": 3, "busy_hosts": 3,
                     "idle_hosts": 1},
        "hosts": {"unix:/run/fn/a.sock": {"busy": True, "rq_total": 5}},
    }}}
    text = render(stats)
    samples = parse(text)
    c = (("cluster", "fn"),)
    assert samples[("meshplane_cluster_upstream_rq_throttled_total", c)] == 2
    assert "# TYPE meshplane_cluster_upstream_rq_throttled_total counter" in text
    assert "# TYPE meshplane_cluster_upstream_rq_waiting gauge" in text
    for key, value in (("concurrency", 4), ("in_flight", 3), ("busy_hosts", 3), ("idle_hosts", 1)):
        assert f"# TYPE meshplane_cluster_function_{key} gauge" in text
        assert samples[(f"meshplane_cluster_function_{key}", c)] == value
    host = (("cluster", "fn"), ("host", "unix:/run/fn/a.sock"))
    assert samples[("meshplane_host_busy", host)] == 1
    assert "# TYPE meshplane_host_busy gauge" in text
