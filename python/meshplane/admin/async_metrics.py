"""Asynchronous invocations in Prometheus text: Lambda's async metrics per function and the
queue's depth and oldest event's age, from `stats["async_invocations"]`
(`functions.async_invoke.AsyncInvoker.stats`). A pure function; imports `admin.prometheus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshplane.admin.prometheus import escape_label_value

__all__ = ["async_metrics"]

# Lambda's metric names -> the `event` label of meshplane_function_async_events_total.
EVENTS = {
    "AsyncEventsReceived": "received",
    "AsyncEventsSucceeded": "succeeded",
    "AsyncEventsFailed": "failed",
    "AsyncEventsDropped": "dropped",
    "AsyncRetries": "retried",
}
DELIVERIES = {"DestinationDeliveries": "delivered", "DestinationDeliveryFailures": "failed"}


def async_metrics(stats: Mapping[str, Any]) -> str:
    """The lines, or "" when the proxy runs no asynchronous invocation queue."""
    section = stats.get("async_invocations")
    if not isinstance(section, Mapping):
        return ""
    functions = section.get("functions") or {}
    queue = section.get("queue") or {}
    lines = [
        "# HELP meshplane_function_async_events_total asynchronous invocation events by what "
        "happened to them (Lambda's AsyncEventsReceived, ...Dropped; retried: retries scheduled)",
        "# TYPE meshplane_function_async_events_total counter",
    ]
    for name, counters in sorted(functions.items()):
        label = escape_label_value(name)
        for key, event in EVENTS.items():
            lines.append(f'meshplane_function_async_events_total{{function="{label}",event="{event}"}} '
                         f"{counters.get(key, 0)}")
    lines += [
        "# HELP meshplane_function_destination_deliveries_total records sent to an async "
        "destination (Lambda's DestinationDeliveryFailures as result=\"failed\")",
        "# TYPE meshplane_function_destination_deliveries_total counter",
    ]
    for name, counters in sorted(functions.items()):
        label = escape_label_value(name)
        for key, result in DELIVERIES.items():
            lines.append(f'meshplane_function_destination_deliveries_total{{function="{label}",'
                         f'result="{result}"}} {counters.get(key, 0)}')
    age = queue.get("oldest_age_ms")
    lines += [
        "# HELP meshplane_function_async_queue_events events in the asynchronous invocation queue",
        "# TYPE meshplane_function_async_queue_events gauge",
        f"meshplane_function_async_queue_events {queue.get('depth', 0)}",
        "# HELP meshplane_function_async_queue_running asynchronous invocations running now",
        "# TYPE meshplane_function_async_queue_running gauge",
        f"meshplane_function_async_queue_running {queue.get('running', 0)}",
        "# HELP meshplane_function_async_event_age_seconds age of the oldest queued event "
        "(Lambda's AsyncEventAge), 0 when the queue is empty",
        "# TYPE meshplane_function_async_event_age_seconds gauge",
        f"meshplane_function_async_event_age_seconds {(age or 0) / 1000:.3f}",
    ]
    return "\n".join(lines) + "\n"
