"""meshplane: a service-mesh data plane with a Rust core and a Trio control layer.

Layering (lowest first; a module imports only from layers below it):
errors -> config -> policy -> _bridge -> drivers -> runtime -> admin, cli.
`config` and `policy` import neither trio nor the compiled core, so `meshplane validate`
works without either.
"""

from __future__ import annotations

from meshplane.errors import ConfigError, MeshplaneError, Problem

__all__ = ["ConfigError", "MeshplaneError", "Problem"]
__version__ = "0.1.0"
