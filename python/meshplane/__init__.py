"""meshplane: a service-mesh data plane with a Rust core and a Trio control layer.

    import meshplane, trio

    async def main() -> None:
        async with meshplane.Proxy("mesh.yaml") as proxy:
            print(proxy.ports, proxy.admin_address)
            await trio.sleep_forever()

The public API is the names in `__all__`; everything else is private or lives in a documented
subpackage (`meshplane.config`, `meshplane.admin`, `meshplane.store`, `meshplane.registry`).
docs/library.md describes it.

Layering (lowest first; a module imports only from layers below it):
errors -> config -> policy -> store -> registry -> _bridge -> drivers -> admin -> runtime -> cli.
`config` and `policy` import neither trio nor the compiled core, so `meshplane validate`
works without either. `admin` serves any object with its `AdminView` protocol, so it sits below
`runtime`, whose `Proxy` starts it. This module imports the runtime, the config model and the
core lazily, on first use of one of their names, so `import meshplane` stays cheap and works
without the compiled core.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from meshplane.errors import ConfigError, MeshplaneError, Problem

if TYPE_CHECKING:
    from meshplane._core import CoreError, HostTable
    from meshplane.config import MeshConfig, from_dict, load_file, load_text
    from meshplane.runtime import Proxy, serve

__all__ = [
    "ConfigError",
    "CoreError",
    "HostTable",
    "MeshConfig",
    "MeshplaneError",
    "Problem",
    "Proxy",
    "from_dict",
    "load_file",
    "load_text",
    "serve",
]
__version__ = "0.1.0"

_LAZY = {
    "CoreError": "meshplane._core",
    "HostTable": "meshplane._core",
    "MeshConfig": "meshplane.config",
    "from_dict": "meshplane.config",
    "load_file": "meshplane.config",
    "load_text": "meshplane.config",
    "Proxy": "meshplane.runtime",
    "serve": "meshplane.runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'meshplane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
