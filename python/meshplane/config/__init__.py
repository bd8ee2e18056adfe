"""meshplane.config: the mesh config model, its loaders, validation and compilation.

A meshplane file names a mesh, says which VirtualGateway or VirtualNode this proxy serves
(`proxy`) and lists App Mesh resources in App Mesh's own shape. Loaders also import resources
from AWS CLI/API JSON, Kubernetes CRDs and CloudFormation. `compile_snapshot` turns a loaded
config into the snapshot document the core applies (schema: rust/src/config/mod.rs).

Layering: imports `meshplane.errors` and the standard library (plus PyYAML) only, never trio
nor the compiled core; no I/O except reading the file the caller names. Inside the package:
model, addresses -> schema -> event_invoke -> specs -> topology -> checks, tls -> validate -> loaders;
routes, tls, resilience -> compile (checks also reads resilience) -> cloudmap. docs/config.md documents the file format.
"""

from __future__ import annotations

from meshplane.config.cloudmap import CloudMapTarget, cloud_map_targets
from meshplane.config.compile import (
    compile_snapshot,
    dns_targets,
    listener_names,
    resilience_targets,
)
from meshplane.config.loaders import from_dict, import_resources, load_file, load_text, to_native
from meshplane.config.model import DnsTarget, MeshConfig, ProxySettings, Resource
from meshplane.config.resilience import ResilienceTarget
from meshplane.config.validate import validate_resources

__all__ = [
    "CloudMapTarget",
    "DnsTarget",
    "MeshConfig",
    "ProxySettings",
    "ResilienceTarget",
    "Resource",
    "cloud_map_targets",
    "compile_snapshot",
    "dns_targets",
    "from_dict",
    "import_resources",
    "listener_names",
    "load_file",
    "load_text",
    "resilience_targets",
    "to_native",
    "validate_resources",
]
