"""`meshplane registry ...`: manage the service registry from a shell or a pipeline.

Subcommands register, deregister, health, list, discover, namespaces, services and serve (the
HTTP API in Cloud Map's shapes). Every one takes `--store URL` (else `MESHPLANE_STORE`, else the
embedded default). Output is one line per item, or JSON with `--json`; errors are one line on
stderr with exit status 1 (the CLI's `_describe`). Part of the CLI layer: imports trio and
`meshplane.registry` when a subcommand runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
from typing import Any

__all__ = [
    "add_registry_parser",
    "check_registry",
    "parse_attr",
    "parse_duration",
    "run_registry",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'10s', '500ms', '2m', '1h' or a number of seconds -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 10s or 500ms, got {text!r}")
    return float(match[1]) * _UNIT_S[match[2]]


def parse_attr(text: str) -> tuple[str, str]:
    """'KEY=VALUE' -> (KEY, VALUE) for argparse."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL",
                        help="etcd://HOST:PORT[,HOST:PORT...] (etcds:// for HTTPS, "
                        "?ca=&cert=&key= for its files) or sqlite:///PATH (default: "
                        "$MESHPLANE_STORE, else the embedded store in ~/.local/state/meshplane)")


def _instance_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", "-n", required=True, metavar="NS")
    parser.add_argument("--service", "-s", required=True, metavar="SVC")
    parser.add_argument("--id", required=True, metavar="ID", help="the instance id (Cloud Map InstanceId)")


def add_registry_parser(sub: Any) -> None:
    reg = sub.add_parser(
        "registry",
        help="register, list and discover service instances (Cloud Map's model)",
        description="The service registry that awsCloudMap virtual nodes resolve against: "
        "namespaces hold services, services hold instances with attributes and a health "
        "status. docs/registry.md describes it.",
    )
    rsub = reg.add_subparsers(dest="registry_command", metavar="SUBCOMMAND", required=True)

    p = rsub.add_parser("register", help="register (or replace) an instance",
                        description="Register an instance (Cloud Map RegisterInstance). --address "
                        "sets AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6, --port AWS_INSTANCE_PORT. "
                        "With --ttl the instance lives on a lease: the command stays in the "
                        "foreground renewing it until SIGINT/SIGTERM, then deregisters; if the "
                        "process dies, the instance disappears when the TTL runs out.")
    _instance_args(p)
    p.add_argument("--address", required=True, metavar="IP", help="the instance's IPv4 or IPv6 address")
    p.add_argument("--port", type=int, metavar="PORT", help="the instance's port (AWS_INSTANCE_PORT)")
    p.add_argument("--attr", type=parse_attr, action="append", default=[], metavar="KEY=VALUE",
                   help="a custom attribute (repeatable), e.g. ECS_TASK_DEFINITION_FAMILY=v2")
    p.add_argument("--ttl", type=parse_duration, metavar="DURATION",
                   help="lease TTL (e.g. 10s); keeps running to renew it")
    p.add_argument("--unhealthy", action="store_true", help="start UNHEALTHY (AWS_INIT_HEALTH_STATUS)")
    _store_arg(p)

    p = rsub.add_parser("deregister", help="remove an instance",
                        description="Deregister an instance (Cloud Map DeregisterInstance).")
    _instance_args(p)
    _store_arg(p)

    p = rsub.add_parser("health", help="set an instance's custom health status",
                        description="Set an instance's health (Cloud Map "
                        "UpdateInstanceCustomHealthStatus). Proxies drop UNHEALTHY instances "
                        "unless every matching instance is unhealthy.")
    _instance_args(p)
    p.add_argument("--status", required=True, choices=["HEALTHY", "UNHEALTHY"])
    _store_arg(p)

    p = rsub.add_parser("list", help="list instances",
                        description="List instances: NAMESPACE SERVICE ID HEALTH ATTRIBUTES.")
    p.add_argument("--namespace", "-n", metavar="NS")
    p.add_argument("--service", "-s", metavar="SVC", help="(needs --namespace)")
    p.add_argument("--json", action="store_true", help="Cloud Map's instance summaries as JSON")
    _store_arg(p)

    p = rsub.add_parser("discover", help="discover instances as a proxy would (DiscoverInstances)",
                        description="Cloud Map DiscoverInstances: instances of a service matching "
                        "every --attr, filtered by --health-status.")
    p.add_argument("--namespace", "-n", required=True, metavar="NS")
    p.add_argument("--service", "-s", required=True, metavar="SVC")
    p.add_argument("--attr", type=parse_attr, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--health-status", default="HEALTHY",
                   choices=["HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL"])
    p.add_argument("--json", action="store_true")
    _store_arg(p)

    p = rsub.add_parser("namespaces", help="list namespaces")
    p.add_argument("--json", action="store_true")
    _store_arg(p)

    p = rsub.add_parser("services", help="list services")
    p.add_argument("--namespace", "-n", metavar="NS")
    p.add_argument("--json", action="store_true")
    _store_arg(p)

    p = rsub.add_parser("serve", help="serve the registry over HTTP in Cloud Map's API shapes",
                        description="Serve RegisterInstance, DeregisterInstance, DiscoverInstances, "
                        "DiscoverInstancesRevision, UpdateInstanceCustomHealthStatus, "
                        "ListNamespaces, ListServices and ListInstances as AWS JSON 1.1 "
                        "(POST / with X-Amz-Target) until SIGINT/SIGTERM. No authentication: "
                        "bind it to a trusted address.")
    p.add_argument("--listen", default="127.0.0.1:8500", metavar="HOST:PORT",
                   help="address to serve on (default: 127.0.0.1:8500; port 0 = ephemeral)")
    _store_arg(p)


def _attributes(args: argparse.Namespace) -> dict[str, str]:
    try:
        ip = ipaddress.ip_address(args.address)
    except ValueError:
        from meshplane.registry import RegistryError

        raise RegistryError("InvalidInput", f"--address: expected an IPv4 or IPv6 address, got {args.address!r}") from None
    attrs = {"AWS_INSTANCE_IPV4" if ip.version == 4 else "AWS_INSTANCE_IPV6": str(ip)}
    if args.port is not None:
        attrs["AWS_INSTANCE_PORT"] = str(args.port)
    if args.unhealthy:
        attrs["AWS_INIT_HEALTH_STATUS"] = "UNHEALTHY"
    attrs.update(dict(args.attr))
    return attrs


def _print_instances(instances: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps([i.to_cloud_map() for i in instances], indent=2))
        return
    for i in instances:
        attrs = " ".join(f"{k}={v}" for k, v in sorted(i.attributes.items()))
        print(f"{i.namespace} {i.service} {i.id} {i.health} {attrs}")


async def run_registry(args: argparse.Namespace) -> int:
    import signal

    import trio

    from meshplane.registry import open_registry

    async with open_registry(args.store) as registry:
        cmd = args.registry_command
        if cmd == "register":
            attrs = _attributes(args)
            if args.ttl is None:
                await registry.register(args.namespace, args.service, args.id, attrs)
                print(f"registered {args.namespace}/{args.service}/{args.id}")
                return 0
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with registry.registered(args.namespace, args.service, args.id, attrs,
                                               ttl=args.ttl):
                    print(f"registered {args.namespace}/{args.service}/{args.id} "
                          f"(lease {args.ttl:g}s; renewing until SIGINT/SIGTERM)", flush=True)
                    async for _ in signals:
                        break
            print(f"deregistered {args.namespace}/{args.service}/{args.id}", flush=True)
            return 0
        if cmd == "deregister":
            await registry.deregister(args.namespace, args.service, args.id)
            print(f"deregistered {args.namespace}/{args.service}/{args.id}")
            return 0
        if cmd == "health":
            await registry.set_health(args.namespace, args.service, args.id, args.status)
            print(f"{args.namespace}/{args.service}/{args.id} {args.status}")
            return 0
        if cmd == "list":
            if args.service and not args.namespace:
                from meshplane.registry import RegistryError

                raise RegistryError("InvalidInput", "--service needs --namespace")
            instances, _ = await registry.instances(args.namespace, args.service)
            _print_instances(instances, args.json)
            return 0
        if cmd == "discover":
            found, revision = await registry.discover(
                args.namespace, args.service, query=dict(args.attr),
                health_status=args.health_status, max_results=None)
            if args.json:
                print(json.dumps({"Instances": [i.to_cloud_map() for i in found],
                                  "InstancesRevision": revision}, indent=2))
            else:
                _print_instances(found, False)
            return 0
        if cmd == "namespaces":
            names = await registry.namespaces()
            print(json.dumps(names) if args.json else "\n".join(names))
            return 0
        if cmd == "services":
            services = await registry.services(args.namespace)
            if args.json:
                print(json.dumps([{"NamespaceName": ns, "Name": s} for ns, s in services]))
            else:
                for ns, s in services:
                    print(f"{ns} {s}")
            return 0
        if cmd == "serve":
            from meshplane.admin.cloudmap_api import serve_registry_api
            from meshplane.config.addresses import parse_address

            try:
                host, port = parse_address(args.listen, min_port=0)
            except ValueError as exc:
                from meshplane.registry import RegistryError

                raise RegistryError("InvalidInput", f"--listen: {exc}") from None
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    bound = await nursery.start(serve_registry_api, registry, host, port)
                    print(f"registry API http://{bound[0]}:{bound[1]}/ (store {registry.store.url})",
                          flush=True)
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        break
            return 0
    raise AssertionError(f"unknown registry command {args.registry_command}")



async def check_registry(config: Any, store_url: str | None) -> list[str]:
    """`validate --registry`: one problem line per awsCloudMap cluster that would have no
    endpoints right now (file: resource: field: why), resolved as a proxy would."""
    from meshplane.config import cloud_map_targets
    from meshplane.registry import endpoints, open_registry
    from meshplane.store import resolve_url

    targets = cloud_map_targets(config)
    if not targets:
        return []
    problems = []
    async with open_registry(resolve_url(store_url, config.proxy.store)) as registry:
        for t in targets:
            instances, _ = await registry.instances(t.namespace, t.service)
            if endpoints(instances, attributes=dict(t.attributes), port=t.port,
                         ip_preference=t.ip_preference):
                continue
            attrs = ", ".join(f"{k}={v}" for k, v in t.attributes) or "none"
            why = (f"no instance registered in {t.namespace}/{t.service}" if not instances else
                   f"none of the {len(instances)} instances of {t.namespace}/{t.service} has an "
                   f"address matching attributes [{attrs}]")
            problems.append(f'{config.source}: VirtualNode "{t.node}": '
                            f"spec.serviceDiscovery.awsCloudMap: {why} "
                            f"(store {registry.store.url}); requests to cluster {t.cluster} would get 503")
    return problems
