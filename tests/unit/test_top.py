"""`meshplane.top`'s sans-I/O part: rows from successive stats snapshots (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from meshplane.top import TopModel, parse_address, quantile, render
from rich.console import Console

BOUNDS = [1.0, 5.0, 10.0]


def snapshot(total: int, fives: int, counts: list[int], *, ejected: bool = False) -> dict[str, Any]:
    return {
        "version": "1-abc",
        "listeners": {"inbound/a/8080": {"rq_total": total, "rq_active": 2, "rq_2xx": total - fives, "rq_5xx": fives}},
        "routes": {"r": {"rq_total": total, "rq_2xx": total - fives, "rq_5xx": fives}},
        "clusters": {
            "busy": {"rq_total": total, "rq_active": 1, "rq_retry": 3, "rq_2xx": total - fives, "rq_5xx": fives,
                     "rq_time_ms": {"bounds": BOUNDS, "counts": counts, "sum": 1.0, "count": sum(counts)},
                     "hosts": {"10.0.0.1:80": {"healthy": True, "ejected": ejected, "health_flags":
                                               "/failed_outlier_check" if ejected else "healthy",
                                               "outlier": {"ejected": ejected, "reason": "consecutive_5xx",
                                                           "ejected_for_s": 29.6}},
                               "10.0.0.2:80": {"healthy": False, "failed_active_hc": True,
                                               "health_flags": "/failed_active_hc",
                                               "active_hc": {"last_result": "timeout"}}}},
            "idle": {"rq_total": 0, "hosts": {}},
        },
    }


def test_rates_success_and_latency_come_from_the_deltas() -> None:
    model = TopModel()
    model.add(snapshot(100, 0, [100, 0, 0, 0]), at=10.0)
    model.add(snapshot(150, 5, [100, 40, 10, 0]), at=12.0)
    busy, idle = model.rows("clusters")
    assert busy.name == "busy" and idle.name == "idle"
    assert busy.rate == 25.0  # 50 requests in 2 s
    assert busy.success == pytest.approx(0.9)  # 5 of the window's 50 responses were 5xx
    assert busy.p50 == pytest.approx(1.0 + 4.0 * 25 / 40)  # inside (1, 5], interpolated
    assert busy.p99 is not None and 5.0 < busy.p99 <= 10.0
    assert busy.active == 1 and busy.retries == 3
    assert idle.rate == 0.0 and idle.success is None and idle.p50 is None


def test_unhealthy_hosts_say_why_and_rows_count_them() -> None:
    model = TopModel()
    model.add(snapshot(10, 0, [10, 0, 0, 0], ejected=True), at=1.0)
    (busy, _) = model.rows("clusters", sort="name")
    assert busy.hosts == "0/2"
    assert busy.why == "1 ejected, 1 failed hc"
    bad = {h.host: h for h in model.unhealthy_hosts()}
    assert bad["10.0.0.1:80"].why == "ejected (consecutive_5xx) 30s left"
    assert bad["10.0.0.1:80"].flags == "/failed_outlier_check"
    assert bad["10.0.0.2:80"].why == "failed health check (timeout)"


def test_sorting_by_any_column_and_reversed() -> None:
    model = TopModel()
    model.add(snapshot(100, 0, [100, 0, 0, 0]), at=0.0)
    model.add(snapshot(110, 0, [100, 10, 0, 0]), at=1.0)
    assert [r.name for r in model.rows("clusters", sort="rate")] == ["busy", "idle"]
    assert [r.name for r in model.rows("clusters", sort="rate", reverse=True)] == ["idle", "busy"]
    assert [r.name for r in model.rows("clusters", sort="name")] == ["busy", "idle"]
    for column in ("success", "p50", "p99", "active", "retries"):
        assert len(model.rows("clusters", sort=column)) == 2


def test_quantile_of_empty_and_overflow() -> None:
    assert quantile(0.5, BOUNDS, [0, 0, 0, 0]) is None
    assert quantile(0.99, BOUNDS, [0, 0, 0, 5]) == 10.0


@pytest.mark.parametrize(("text", "expected"), [
    ("", ("127.0.0.1", 9901)), ("9902", ("127.0.0.1", 9902)), (":9903", ("127.0.0.1", 9903)),
    ("10.0.0.5:9901", ("10.0.0.5", 9901)), ("http://[::1]:9901/", ("::1", 9901)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:", "host:http", "1.2.3.4:70000"])
def test_parse_address_refuses_what_is_not_an_address(text: str) -> None:
    with pytest.raises(ValueError, match="not an admin address"):
        parse_address(text)


def test_render_names_every_section_and_the_unreachable_message() -> None:
    model = TopModel()
    model.add(snapshot(10, 1, [10, 0, 0, 0], ejected=True), at=1.0)
    console = Console(width=200, record=True)
    console.print(render(model, "127.0.0.1:9901", "p99", False, 7, "connection refused"))
    text = console.export_text()
    for expected in ("Listeners", "Routes", "Clusters", "inbound/a/8080", "busy", "refresh #7", "sort: p99",
                     "cannot reach meshplane admin at 127.0.0.1:9901: connection refused",
                     "ejected (consecutive_5xx)", "failed health check (timeout)"):
        assert expected in text
