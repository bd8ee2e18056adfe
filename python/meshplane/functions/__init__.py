"""meshplane.functions: Lambda-style functions as mesh targets (docs/functions.md).

A `Function` resource in the mesh config is `$LATEST`; `catalog` keeps published versions and
aliases in the store; `supervisor` runs each function cluster's instances (`worker` processes,
one invocation at a time, each a host of the cluster on a Unix socket); `service` is the
proxy's handle on them (`FunctionService.invoke` for Lambda's Invoke path).

Layer: beside `drivers` (trio, h11, config, store); never the compiled core. `worker` and
`_http_event` import only the standard library and h11: they run in every instance.
"""

from __future__ import annotations

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
