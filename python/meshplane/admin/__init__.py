"""The admin HTTP API: readiness, Prometheus stats, clusters, config dump, listeners.

See docs/admin.md. `serve_admin(view, host, port)` serves any `AdminView` (a `meshplane.Proxy`
is one); `prometheus.render` is the pure stats-to-text function. Imports nothing from
`meshplane.runtime`.
"""

from meshplane.admin.prometheus import render as render_prometheus
from meshplane.admin.server import AdminAPI, AdminView, serve_admin, serve_http

__all__ = ["AdminAPI", "AdminView", "render_prometheus", "serve_admin", "serve_http"]
