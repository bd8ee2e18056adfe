"""Functions in the config: Lambda's rules for a `Function` resource, and what it compiles to.

A `Function` resource (docs/functions.md) is `$LATEST`; published versions and aliases live in
the store (`meshplane.functions.catalog`) and reach compilation as a plain `Catalog`:
`{name: {"versions": {"1": settings, ...}, "aliases": {"live": {"functionVersion": "1",
"additionalVersionWeights": {"2": 0.1}}}}}`. `resolve` turns every (function, qualifier) the
proxy can be asked for into `FunctionTarget`s: one cluster per (qualifier, version), named
`function/<name>/<qualifier>/<version>`, so an alias with a second weighted version is two
clusters the route layer splits by weight, and each alias, version and `$LATEST` has its own
instances, counters and provisioned instances (Lambda allocates provisioned concurrency to an
alias or version the same way).

Pure: no I/O (code paths are only joined to the config file's directory). Imports only
`schema`, `model`, `topology` and `event_invoke`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshplane.config.event_invoke import check_event_invoke
from meshplane.config.model import MeshConfig, Resource
from meshplane.config.topology import duration_ms, listeners

Issue = tuple[str, str]
Catalog = Mapping[str, Mapping[str, Any]]

LATEST = "$LATEST"
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ALIAS_NAME = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")
HANDLER = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*\.[A-Za-z_]\w*$")
ENV_KEY = re.compile(r"^[a-zA-Z]([a-zA-Z0-9_])+$")
# Lambda sets these itself; a function may not.
RESERVED_ENV = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})
ENV_LIMIT_BYTES = 4096
DEFAULT_TIMEOUT_MS = 3_000
DEFAULT_MEMORY_MB = 128
# Lambda's default account limit: functions with reserved concurrency take theirs out of it,
# the rest share what is left (the unreserved pool), which never falls below 100.
ACCOUNT_CONCURRENCY = 1000
MIN_UNRESERVED = 100
UNRESERVED_GROUP = "unreserved"
DEFAULT_IDLE_MS = 300_000
# Lambda limits an on-demand Init to 10 s; a request waits that long (plus a margin) for one.
DEFAULT_INSTANCE_WAIT_MS = 12_000
INVOKE_LISTENER = "functions/invoke"
INVOKE_TABLE = "functions/invoke"
TARGET_HEADER = "x-meshplane-function"


def cluster_name(function: str, qualifier: str, version: str) -> str:
    return f"function/{function}/{qualifier}/{version}"


def reserved_total(functions: list[Resource]) -> int:
    """The concurrency the functions reserve between them."""
    return sum(int(r.spec.get("reservedConcurrency") or 0) for r in functions)


def concurrency_of(r: Resource, functions: list[Resource]) -> tuple[str, int]:
    """(concurrency group, limit) of a function's clusters: every version and alias of a
    function with reserved concurrency shares it (Lambda reserves it for the function, not per
    version); functions without share the unreserved pool (the account's 1,000 less every
    reservation)."""
    reserved = r.spec.get("reservedConcurrency")
    if reserved is not None:
        return f"function/{r.name}", int(reserved)
    return UNRESERVED_GROUP, max(MIN_UNRESERVED, ACCOUNT_CONCURRENCY - reserved_total(functions))


# --- validation -----------------------------------------------------------------------------


def check_function(r: Resource, graph: Any) -> list[Issue]:
    """Lambda's rules a shape cannot say (spec/lambda.md §1)."""
    out: list[Issue] = []
    spec = r.spec
    if not FUNCTION_NAME.match(r.name):
        out.append(("name", f"expected 1..64 letters, digits, '-' or '_' (Lambda's function "
                            f"names), got {r.name!r}"))
    if not HANDLER.match(spec["handler"]):
        out.append(("spec.handler", f"expected module.function (e.g. app.handler), got "
                                    f"{spec['handler']!r}"))
    if "timeout" in spec:
        ms = duration_ms(spec["timeout"])
        if not 1000 <= ms <= 900_000:
            out.append(("spec.timeout", f"expected 1..900 seconds (Lambda's limit), got {ms} ms"))
    for key in ("idleTimeout", "instanceWait"):
        if key in spec and duration_ms(spec[key]) < 1000:
            out.append((f"spec.{key}", "expected at least 1 second"))
    variables = (spec.get("environment") or {}).get("variables") or {}
    size = 0
    for key, value in variables.items():
        path = f"spec.environment.variables.{key}"
        if not ENV_KEY.match(key):
            out.append((path, "expected a name of letters, digits and '_' starting with a letter"
                              " (at least 2 characters)"))
        elif key in RESERVED_ENV:
            out.append((path, "reserved: Lambda sets this variable itself"))
        size += len(key.encode()) + len(value.encode())
    if size > ENV_LIMIT_BYTES:
        out.append(("spec.environment.variables",
                    f"expected at most {ENV_LIMIT_BYTES} bytes in total (Lambda's limit), got "
                    f"{size}"))
    provisioned = spec.get("provisionedConcurrency") or []
    seen: set[str] = set()
    for i, entry in enumerate(provisioned):
        path = f"spec.provisionedConcurrency[{i}].qualifier"
        if entry["qualifier"] == LATEST:
            out.append((path, "provisioned concurrency applies to a version or an alias, never "
                              "$LATEST (Lambda's rule)"))
        if entry["qualifier"] in seen:
            out.append((path, f"duplicate qualifier {entry['qualifier']!r}"))
        seen.add(entry["qualifier"])
    out += check_event_invoke(spec.get("eventInvokeConfig"), graph)
    reserved = spec.get("reservedConcurrency")
    total = sum(e["count"] for e in provisioned)
    if reserved is not None and total > reserved:
        out.append(("spec.provisionedConcurrency",
                    f"expected at most reservedConcurrency ({reserved}) instances in total, got "
                    f"{total}"))
    if reserved:
        everyone = reserved_total(graph.index.of_kind("Function"))
        if everyone > ACCOUNT_CONCURRENCY - MIN_UNRESERVED:
            out.append(("spec.reservedConcurrency",
                        f"the functions reserve {everyone} between them (this one {reserved}): "
                        f"expected at most {ACCOUNT_CONCURRENCY - MIN_UNRESERVED}, as Lambda "
                        f"keeps {MIN_UNRESERVED} of the account's {ACCOUNT_CONCURRENCY} for "
                        f"functions without a reservation"))
    return out


def check_function_node(r: Resource, graph: Any) -> list[Issue]:
    """A VirtualNode discovered as a function: the function exists; it serves HTTP/1.1."""
    out: list[Issue] = []
    ref = (r.spec.get("serviceDiscovery") or {}).get("function")
    if not ref:
        return out
    if graph.get("Function", ref["functionName"]) is None:
        out.append(("spec.serviceDiscovery.function.functionName",
                    graph.unresolved("Function", ref["functionName"])))
    qualifier = ref.get("qualifier", LATEST)
    if qualifier != LATEST and not (qualifier.isdigit() or ALIAS_NAME.match(qualifier)):
        out.append(("spec.serviceDiscovery.function.qualifier",
                    f"expected $LATEST, a version number or an alias name, got {qualifier!r}"))
    for i, (_port, protocol) in enumerate(listeners(r)):
        if protocol != "http":
            out.append((f"spec.listeners[{i}].portMapping.protocol",
                        f"a function serves HTTP/1.1: expected http, got {protocol}"))
    return out


# --- resolution -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionTarget:
    """One function cluster: the instances of `version` serving invocations of `qualifier`.

    `settings` is what an instance needs (handler, timeoutMs, memoryMB, environment, code and
    layers as {"path": DIR|ZIP} for $LATEST or {"sha256": ...} for a published version);
    `weight` its share of the qualifier's invocations (1.0 unless an alias splits).
    """

    cluster: str
    function: str
    qualifier: str
    version: str
    weight: float
    settings: Mapping[str, Any]
    concurrency: int
    instance_wait_ms: int
    idle_ms: int
    provisioned: int = 0
    labels: tuple[str, ...] = field(default=())
    # The clusters sharing `concurrency` (`concurrency_of`).
    group: str = UNRESERVED_GROUP


def config_dir(cfg: MeshConfig) -> str:
    """The directory relative paths in `cfg` start from: its file's, else the working one."""
    return os.path.dirname(os.path.abspath(cfg.source)) if os.path.sep in cfg.source or \
        os.path.exists(cfg.source) else os.getcwd()


def latest_settings(cfg: MeshConfig, r: Resource) -> dict[str, Any]:
    """The settings of a Function resource ($LATEST), code paths made absolute."""
    base = config_dir(cfg)

    def where(code: Any) -> dict[str, str]:
        path = code if isinstance(code, str) else code["path"]
        return {"path": os.path.normpath(os.path.join(base, os.path.expanduser(path)))}

    spec = r.spec
    return {
        "handler": spec["handler"],
        "description": spec.get("description", ""),
        "timeoutMs": duration_ms(spec["timeout"]) if "timeout" in spec else DEFAULT_TIMEOUT_MS,
        "memoryMB": spec.get("memorySize", DEFAULT_MEMORY_MB),
        "environment": dict((spec.get("environment") or {}).get("variables") or {}),
        "code": where(spec["code"]),
        "layers": [where(layer) for layer in spec.get("layers") or []],
    }


def versions_of(catalog: Catalog, name: str, qualifier: str) -> list[tuple[str, float]] | str:
    """(version, weight) pairs a qualifier invokes, or why it cannot be resolved."""
    if qualifier == LATEST:
        return [(LATEST, 1.0)]
    record = catalog.get(name) or {}
    versions = record.get("versions") or {}
    if qualifier.isdigit():
        return [(qualifier, 1.0)] if qualifier in versions else (
            f"function {name!r} has no version {qualifier} (published: "
            f"{', '.join(sorted(versions, key=int)) or 'none'}; `meshplane fn publish`)")
    alias = (record.get("aliases") or {}).get(qualifier)
    if alias is None:
        known = sorted(record.get("aliases") or {})
        return (f"function {name!r} has no alias {qualifier!r} (aliases: "
                f"{', '.join(known) or 'none'}; `meshplane fn alias`)")
    extra = alias.get("additionalVersionWeights") or {}
    share = sum(float(w) for w in extra.values())
    out = [(str(alias["functionVersion"]), 1.0 - share)]
    out += [(str(v), float(w)) for v, w in extra.items()]
    return [(v, w) for v, w in out if w > 0]


def resolve(cfg: MeshConfig, catalog: Catalog) -> tuple[dict[tuple[str, str], list[FunctionTarget]], list[Issue]]:
    """Every (function, qualifier) this proxy serves: `$LATEST`, each published version and
    alias of each Function resource, and the qualifiers its nodes name. Problems are
    (resource label, message) pairs: qualifiers nodes name that do not resolve."""
    out: dict[tuple[str, str], list[FunctionTarget]] = {}
    problems: list[Issue] = []
    wanted: list[tuple[str, str, Resource | None]] = []
    functions = cfg.of_kind("Function")
    for r in functions:
        record = catalog.get(r.name) or {}
        wanted.append((r.name, LATEST, None))
        wanted += [(r.name, v, None) for v in sorted(record.get("versions") or {}, key=int)]
        wanted += [(r.name, a, None) for a in sorted(record.get("aliases") or {})]
    for vn in cfg.of_kind("VirtualNode"):
        ref = (vn.spec.get("serviceDiscovery") or {}).get("function")
        if ref:
            wanted.append((ref["functionName"], ref.get("qualifier", LATEST), vn))
    for name, qualifier, node in wanted:
        found = cfg.get("Function", name)
        if found is None or (name, qualifier) in out:
            continue
        fn = found
        resolved = versions_of(catalog, name, qualifier)
        if isinstance(resolved, str):
            if node is not None:
                problems.append((node.label, resolved))
            continue
        spec = fn.spec
        group, concurrency = concurrency_of(fn, functions)
        provisioned = {e["qualifier"]: e["count"] for e in spec.get("provisionedConcurrency") or []}
        targets = []
        count = provisioned.get(qualifier, 0)
        for i, (version, weight) in enumerate(resolved):
            settings = (latest_settings(cfg, fn) if version == LATEST
                        else dict((catalog[name]["versions"])[version]))
            # Provisioned instances of an alias are split by weight (the main version keeps
            # the rounding), as Lambda allocates them.
            share = round(count * weight) if i else count - sum(
                round(count * w) for _, w in resolved[1:])
            targets.append(FunctionTarget(
                cluster=cluster_name(name, qualifier, version),
                function=name, qualifier=qualifier, version=version, weight=weight,
                settings=settings,
                concurrency=concurrency, group=group,
                instance_wait_ms=(duration_ms(spec["instanceWait"]) if "instanceWait" in spec
                                  else DEFAULT_INSTANCE_WAIT_MS),
                idle_ms=duration_ms(spec["idleTimeout"]) if "idleTimeout" in spec
                else DEFAULT_IDLE_MS,
                provisioned=max(0, share),
            ))
        out[(name, qualifier)] = targets
    for r in cfg.of_kind("Function"):
        for i, entry in enumerate(r.spec.get("provisionedConcurrency") or []):
            if (r.name, entry["qualifier"]) not in out:
                resolved = versions_of(catalog, r.name, entry["qualifier"])
                problems.append((r.label, f"spec.provisionedConcurrency[{i}].qualifier: "
                                           f"{resolved}"))
    return out, problems


def weighted(targets: list[FunctionTarget], weight: int) -> list[dict[str, Any]]:
    """Route clusters for a target weight `weight`: an alias's split scaled to integers."""
    if len(targets) == 1:
        return [{"cluster": targets[0].cluster, "weight": weight}]
    out = []
    for t in targets:
        share = round(weight * 10_000 * t.weight)
        if share > 0:
            out.append({"cluster": t.cluster, "weight": share})
    return out


def cluster_document(target: FunctionTarget, endpoints: list[tuple[str, int]]) -> dict[str, Any]:
    """The snapshot cluster of a function target (`function` marks it: one request per host)."""
    return {
        "name": target.cluster,
        "protocol": "http1",
        "lb": "round_robin",
        "endpoints": [{"address": a, "weight": int(w)} for a, w in sorted(endpoints)],
        "connectTimeoutMs": 1000,
        "function": {"concurrency": target.concurrency,
                     "concurrencyGroup": target.group,
                     "instanceWaitMs": target.instance_wait_ms},
    }
