"""Trio tasks that drive the core from Python: discovery, config and certificate watching,
active health checking and outlier ejection.

Each driver is a thin Trio loop around plain logic, started in the runtime's nursery with
`nursery.start` and reporting readiness with `task_status.started()`. Drivers import trio,
`meshplane.errors`, `meshplane.config`, `meshplane.policy` (health, outlier) and
`meshplane._bridge`, never `meshplane.runtime`.
"""

from meshplane.drivers.cert_watch import CertWatch
from meshplane.drivers.config_watch import ConfigWatch
from meshplane.drivers.discovery import DnsDiscovery
from meshplane.drivers.health import ActiveHealthChecks
from meshplane.drivers.outlier import OutlierEjections
from meshplane.drivers.resilience import Resilience

__all__ = [
    "ActiveHealthChecks",
    "CertWatch",
    "ConfigWatch",
    "DnsDiscovery",
    "OutlierEjections",
    "Resilience",
]
