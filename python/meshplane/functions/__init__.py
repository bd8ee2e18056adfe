"""meshplane.functions: Lambda-style functions as mesh targets (docs/functions.md).

A `Function` resource in the mesh config is `$LATEST`; `catalog` keeps published versions and
aliases in the store; `supervisor` runs each function cluster's instances (`worker` processes,
one invocation at a time, each a host of the cluster on a Unix socket); `service` is the
proxy's handle on them (`FunctionService.invoke` for Lambda's Invoke path). The Invoke API's
request model is `invocation` (the HTTP side is `meshplane.admin.lambda_api`); asynchronous
invocations wait in `event_queue` (a SQLite file) and `async_invoke` runs them, retries them
(`policy.async_retry`) and sends their records to destinations.

Layer: beside `drivers` (trio, h11, sqlite3, config, policy, store); never the compiled core. `worker` and
`_http_event` import only the standard library and h11: they run in every instance.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshplane.functions.catalog import (
        FunctionCatalogError,
        load_catalog,
        materialize,
        publish,
        set_alias,
    )
    from meshplane.functions.service import (
        FunctionNotFound,
        FunctionService,
        Invocation,
        split_name,
    )
    from meshplane.functions.supervisor import Supervisor

__all__ = [
    "FunctionCatalogError",
    "FunctionNotFound",
    "FunctionService",
    "Invocation",
    "Supervisor",
    "load_catalog",
    "materialize",
    "publish",
    "set_alias",
    "split_name",
]

# NOTE: each name loads its module on first use, so a proxy without functions (which imports
# `service` and `supervisor` only) never loads the code catalog nor the worker's module
# (benches/README.md, "Memory, fourth pass").
_LAZY = {
    "FunctionCatalogError": "catalog", "load_catalog": "catalog", "materialize": "catalog",
    "publish": "catalog", "set_alias": "catalog", "FunctionNotFound": "service",
    "FunctionService": "service", "Invocation": "service", "split_name": "service",
    "Supervisor": "supervisor",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
