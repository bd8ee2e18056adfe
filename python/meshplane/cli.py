"""`meshplane ...`: run, validate, import, registry, apply/history/diff/rollback/status/rollout,
fn, top, demo, version.

The top of the layering. Each command imports what it needs when it runs: `validate` and
`import` use only `meshplane.config` (no trio, no compiled core); `run` and `demo` start trio.
A user error (bad config, missing file, port in use) is printed to stderr as one paragraph with
exit status 1, never as a traceback; `validate` and `import` print no traceback whatever the
file holds (an unexpected error is reported as a bug in meshplane, naming the file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from meshplane import __version__
from meshplane._cli_fn_invoke import add_invoke_parser, run_invoke
from meshplane._cli_functions import EXTRA_COMMANDS, add_function_parser, run_functions
from meshplane._cli_lifecycle import (
    EXIT_CODES,
    EXIT_NONCOMPLIANT,
    add_lifecycle_parsers,
    add_run_follow_args,
    emit_violations,
    policy_arg,
)
from meshplane._cli_registry import (
    add_registry_parser,
    parse_attr,
    parse_duration,
    run_registry,
)
from meshplane.errors import ConfigError, MeshplaneError, Problem

if TYPE_CHECKING:
    from meshplane.config.loaders import Imported
    from meshplane.config.model import Resource
    from meshplane.runtime import Proxy

__all__ = ["main"]

FORMAT_HELP = """\
config file format (YAML or JSON; docs/config.md has the full reference):

  mesh: NAME                    # the App Mesh mesh these resources belong to
  proxy:
    gateway: NAME               # the VirtualGateway this proxy runs, or: node: NAME
    admin: 127.0.0.1:9901       # admin API (docs/admin.md)
    ports: {8080: 0}            # declared listener port -> port to bind (0 = ephemeral)
    store: etcd://10.0.0.5:2379 # registry of awsCloudMap nodes (docs/registry.md; optional)
  resources:                    # App Mesh resources, with App Mesh's own field names
    - {kind: VirtualGateway, name: edge, spec: {...}}
    - {kind: VirtualNode, name: api-v1, spec: {serviceDiscovery: {static: {endpoints: [...]}}}}
"""


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshplane",
        description="A service-mesh data plane: App Mesh compatible config, Rust core, Trio control.",
        epilog=FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser(
        "run",
        help="run a proxy for a config file (or the store's desired version) until SIGINT/SIGTERM",
        description="Run the gateway or sidecar proxy described by FILE, or, with --mesh M and "
        "--gateway G or --node N instead of FILE, the desired config version of mesh M in "
        "--store, following each new version (docs/lifecycle.md). Prints each listener's "
        "bound address and the admin address, serves until SIGINT or SIGTERM, then drains "
        "in-flight requests and exits 0.",
        epilog=FORMAT_HELP,
        formatter_class=raw,
    )
    run.add_argument("file", metavar="FILE", nargs="?",
                     help="config file (YAML or JSON); omit it with --mesh")
    run.add_argument("--watch", action="store_true",
                     help="poll FILE every 0.5 s and apply changes; a rejected change is logged "
                     "and the running version keeps serving")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="core threads carrying traffic (default: 1)")
    run.add_argument("--admin", metavar="HOST:PORT",
                     help="admin API address (default: the config's proxy.admin; port 0 = ephemeral)")
    run.add_argument("--drain-ms", type=int, default=5000, metavar="MS",
                     help="how long in-flight requests get on shutdown (default: 5000)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--store", metavar="URL",
                     help="the store awsCloudMap nodes resolve against (with --mesh, also the "
                     "one whose desired config version the proxy follows): etcd://HOST:PORT[,...] or "
                     "sqlite:///PATH (default: the config's proxy.store, else $MESHPLANE_STORE, "
                     "else the embedded store)")
    run.add_argument("--register", action="store_true",
                     help="register this proxy in the registry while it serves: the served node's "
                     "awsCloudMap namespace, service and attributes, this proxy's inbound address "
                     "and port, on a lease; deregistered before draining")
    run.add_argument("--register-service", metavar="NS/SVC",
                     help="register in this namespace/service instead of the node's awsCloudMap one")
    run.add_argument("--register-id", metavar="ID", help="instance id (default: NODE-HOST-PID)")
    run.add_argument("--register-address", metavar="IP",
                     help="the address callers reach this proxy at (default: proxy.bind)")
    run.add_argument("--register-attr", type=parse_attr, action="append", default=[],
                     metavar="KEY=VALUE",
                     help="an extra attribute (repeatable)")
    run.add_argument("--register-ttl", type=parse_duration, default=10.0, metavar="DURATION",
                     help="lease TTL (default: 10s)")
    add_run_follow_args(run)

    validate = sub.add_parser(
        "validate",
        help="check config files without running anything",
        description="Load and validate each FILE; print 'OK FILE: N resources' or every problem, "
        "one per line (file: resource: field: what was expected), then check the compliance "
        "policies (--policy, $MESHPLANE_POLICY) and print each violation (NONCOMPLIANT file: "
        "resource: field: what [policy NAME]). Exit 1 if any file is invalid, 3 if all are "
        "valid but one is non-compliant. Needs neither trio nor the compiled core.",
        epilog=FORMAT_HELP + "\n" + EXIT_CODES,
        formatter_class=raw,
    )
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument("--registry", action="store_true",
                          help="also resolve every awsCloudMap node against the live registry and "
                          "fail (exit 1) for a node no registered instance matches")
    validate.add_argument("--store", metavar="URL",
                          help="the registry's store for --registry (default: the file's "
                          "proxy.store, else $MESHPLANE_STORE, else the embedded store)")
    policy_arg(validate)
    validate.add_argument("--format", choices=["text", "json", "sarif"], default="text",
                          help="how to print compliance violations (default: text)")

    imp = sub.add_parser(
        "import",
        help="convert App Mesh definitions (AWS JSON, Kubernetes CRDs, CloudFormation) to a config",
        description="Read App Mesh resources from each FILE or DIR (directories are walked for "
        "*.json, *.yaml and *.yml files, also ending in .template, holding App Mesh resources) "
        "in any of the "
        "three shapes users hold them in (AWS CLI/API JSON, appmesh.k8s.aws/v1beta2 and v1beta1 "
        "custom resources, CloudFormation AWS::AppMesh::* templates), as one mesh: references "
        "resolve across files and a resource defined twice is refused, naming both files. "
        "Write a meshplane config (YAML) for the proxy of one virtual gateway or virtual node. "
        "Warnings (fields dropped, files skipped) go to stderr.",
        epilog="See docs/config.md (Importing App Mesh definitions) for the output format, what "
        "each shape maps to, and how to replace ACM certificates with PEM files.",
    )
    imp.add_argument("files", nargs="+", metavar="FILE|DIR",
                     help="App Mesh definitions: files (several documents each, if YAML) or "
                     "directories to walk, read together as one mesh")
    who = imp.add_mutually_exclusive_group(required=True)
    who.add_argument("--gateway", metavar="NAME", help="the VirtualGateway this proxy runs")
    who.add_argument("--node", metavar="NAME",
                     help="the VirtualNode this proxy is the sidecar of; the output keeps the "
                     "node's listener ports for callers and moves the application to "
                     "127.0.0.1:<port+10000> (proxy.app: edit it to where the application listens)")
    imp.add_argument("--mesh", metavar="NAME",
                     help="mesh name (default: the one the files name, by a Mesh resource, "
                     "meshName, MeshName or meshRef; needed only if they name none or several)")
    imp.add_argument("--strict", action="store_true",
                     help="refuse Kubernetes spec fields the CRD schema does not know instead of "
                     "dropping them with a warning (the API server prunes them)")
    imp.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")

    demo = sub.add_parser(
        "demo",
        help="a self-contained canary demo with a live view (no files needed)",
        description="Start three local upstream services (checkout v1 x2, v2 x1), a gateway in "
        "front of them with a 90/10 v1/v2 split and an `x-canary: true` header route to v2, "
        "and drive traffic through it from 127.0.0.1, showing requests per second, the split "
        "per version, latency percentiles and per-host stats. Ctrl-C ends it with a summary.",
    )
    demo.add_argument("--duration", type=float, metavar="SECONDS",
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--rps-limit", type=float, default=500.0, metavar="RPS",
                      help="upper bound on requests per second (default: 500)")
    demo.add_argument("--clients", type=int, default=8, metavar="N",
                      help="concurrent keep-alive client connections (default: 8)")
    demo.add_argument("--max-requests", type=int, metavar="N",
                      help="stop after this many requests (default: no limit)")

    add_registry_parser(sub)
    add_lifecycle_parsers(sub)
    add_invoke_parser(add_function_parser(sub).fn_subparsers)  # type: ignore[attr-defined]
    EXTRA_COMMANDS["invoke"] = run_invoke

    top = sub.add_parser(
        "top", help="live view of a running meshplane: rates, errors, latency, unhealthy hosts",
        description="A live terminal view of a running meshplane, read from its admin API every "
                    "second: per listener, route and cluster the request rate, success ratio "
                    "(non-5xx, last 10 s), p50/p99 latency (last 10 s), active requests and "
                    "retries, and every ejected or unhealthy host with why. Keys: s or > next "
                    "sort column, < previous, r reverse, q quit (Ctrl-C too).",
    )
    top.add_argument("address", nargs="?", default="127.0.0.1:9901", metavar="ADMIN_ADDRESS",
                     help="the proxy's admin address, HOST:PORT (default: 127.0.0.1:9901)")
    top.add_argument("--sort", default="rate", choices=["rate", "success", "p50", "p99", "active", "retries", "name"],
                     help="initial sort column (default: rate)")
    top.add_argument("--once", action="store_true",
                     help="print one frame (two samples a second apart) and exit; status 1 if unreachable")

    sub.add_parser("version", help="print the package and core versions",
                   description="Print meshplane's version and whether the compiled core is installed.")
    return parser


def _validate(files: Sequence[str], *, registry: bool = False, store: str | None = None,
              policies: Sequence[str] = (), fmt: str = "text") -> int:
    from meshplane.compliance import Violation, check_document, load_policies_for
    from meshplane.config import load_file
    from meshplane.lifecycle.document import document_of

    rules = load_policies_for(policies)
    violations: list[Violation] = []
    problems: list[Problem] = []
    # Machine formats keep stdout for the one document at the end; lines go to stderr.
    out = sys.stdout if fmt == "text" else sys.stderr
    for path in files:
        try:
            config = load_file(path)
        except ConfigError as exc:
            problems += exc.problems
            for problem in exc.problems:
                print(problem, file=out)
        except OSError as exc:
            problems.append(Problem(path, "", "", f"cannot read: {exc.strerror or exc}"))
            print(problems[-1], file=out)
        except Exception as exc:  # a bug in meshplane, not in the file: still no traceback
            problems.append(Problem(path, "", "", _internal_error(exc)))
            print(problems[-1], file=out)
        else:
            if registry:
                import trio

                from meshplane._cli_registry import check_registry

                unresolved = trio.run(check_registry, config, store)
                for line in unresolved:
                    print(line, file=out)
                if unresolved:
                    problems.append(Problem(path, "", "", "; ".join(unresolved)))
                    continue
            found = check_document(document_of(config.mesh, config.resources), rules,
                                   {r.label: path for r in config.resources})
            violations += found
            if not found:
                print(f"OK {path}: {len(config.resources)} resources", file=out)
    if violations or fmt != "text":
        emit_violations(fmt, violations, rules, problems)
    return 1 if problems else EXIT_NONCOMPLIANT if violations else 0


def _import(args: argparse.Namespace) -> int:
    import yaml

    from meshplane.config.loaders import from_dict, import_paths, to_native
    from meshplane.config.schema import suggest

    found = import_paths(args.files, strict=args.strict)
    for path in found.skipped:
        print(f"meshplane import: skipped {path}: no App Mesh resource in it", file=sys.stderr)
    for warning in found.warnings:
        print(f"meshplane import: warning: {warning}", file=sys.stderr)
    if found.problems:
        raise ConfigError(found.problems)
    resources = found.resources
    mesh = args.mesh or _mesh_name(found, args.files)
    kind, name = ("VirtualGateway", args.gateway) if args.gateway else ("VirtualNode", args.node)
    names = sorted(r.name for r in resources if r.kind == kind)
    if name not in names:
        option = "--gateway" if args.gateway else "--node"
        hint = suggest(name, names) or (
            f" (the files define: {', '.join(names)})" if names else f" (the files define no {kind})"
        )
        raise UserError(f'{option}: no {kind} named "{name}"{hint}')
    proxy = _sidecar_proxy(resources, name) if args.node else {}
    doc = to_native(resources, mesh, gateway=args.gateway, node=args.node, **proxy)
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    if args.node:
        text = (
            f"# proxy.app: where the application of {name} listens. It was moved off the\n"
            "# listener ports, which the proxy takes; edit it to match.\n" + text
        )
    try:
        from_dict(doc, args.output or "<output>")
    except ConfigError as exc:
        # Still written: imported definitions often need editing (placeholders, names).
        print(f"meshplane import: note: the result does not validate yet; {exc}", file=sys.stderr)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output}: {len(resources)} resources", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _mesh_name(found: Imported, files: Sequence[str]) -> str:
    """The one mesh the imported files name; UserError if they name none or several."""
    meshes = found.mesh_names()
    if len(meshes) == 1:
        return meshes[0]
    if not meshes:
        raise UserError(
            f"{', '.join(files)}: give the mesh name with --mesh (the files name no mesh: no Mesh "
            "resource, meshName, MeshName or meshRef)"
        )
    where = "; ".join(
        f'"{m}" in ' + ", ".join(sorted({loc for n, loc in found.meshes if n == m}))
        for m in meshes
    )
    raise UserError(f"the files name several meshes ({where}); choose one with --mesh")


def _sidecar_proxy(resources: Sequence[Resource], node: str) -> dict[str, object]:
    """`proxy.app` for a sidecar: callers reach the proxy on the node's listener ports, so the
    application moves to 127.0.0.1:<port+10000> (wrapping below 65536), avoiding every
    declared port, the outbound port and the admin port."""
    from meshplane.config.model import OUTBOUND_PORT

    ports = {
        lst["portMapping"]["port"]
        for r in resources
        if r.kind == "VirtualNode" and r.name == node
        for lst in (r.spec.get("listeners") or [])
        if isinstance(lst, dict)
        and isinstance(lst.get("portMapping"), dict)
        and isinstance(lst["portMapping"].get("port"), int)
    }
    taken = set(ports) | {OUTBOUND_PORT, 9901}
    app: dict[int, str] = {}
    for port in sorted(ports):
        moved = port + 10000 if port + 10000 <= 65535 else port - 10000
        while moved in taken or not 1024 <= moved <= 65535:
            moved = moved + 1 if moved < 65535 else 1024
        taken.add(moved)
        app[port] = f"127.0.0.1:{moved}"
    return {"app": app} if app else {}


def _print_running(proxy: Proxy) -> None:
    print(f"meshplane {__version__}: running config {proxy.version} from {proxy.config.source}")
    for name, (host, port) in sorted(proxy.listener_addresses().items()):
        print(f"listener {name} {host}:{port}")
    if proxy.admin_address is not None:
        host, port = proxy.admin_address
        print(f"admin http://{host}:{port}/")
    sys.stdout.flush()


def _release_startup_heap() -> None:
    """Give the C heap's free pages back to the kernel once the proxy is up (glibc only).

    Importing the control layer frees much of what it allocated (the modules' code read from
    disk), but glibc returns only the top of its heap by itself; the holes stay resident for the
    process's life. `malloc_trim(0)` releases them: about 0.9 MiB of an idle `meshplane run`
    (benches/README.md, "Memory, third pass"). Elsewhere (musl, macOS) it does nothing.
    """
    import ctypes  # already imported by trio on Linux
    import os

    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        ctypes.CDLL(None).malloc_trim(0)
    except (ValueError, OSError, AttributeError):  # no such confstr name, no such symbol
        pass


async def _run(args: argparse.Namespace) -> None:
    import signal
    from functools import partial

    import trio

    from meshplane.config.addresses import parse_address
    from meshplane.runtime import SelfRegistration, serve

    register = None
    if args.register or args.register_service:
        namespace = service = None
        if args.register_service:
            namespace, sep, service = args.register_service.rpartition("/")
            if not sep or not namespace or not service:
                raise UserError(f"--register-service: expected NAMESPACE/SERVICE, got "
                                f"{args.register_service!r}")
        attrs = dict(args.register_attr)
        register = SelfRegistration(namespace, service, args.register_id, args.register_address,
                                    attrs, args.register_ttl)
    if args.admin:
        try:
            parse_address(args.admin, min_port=0)
        except ValueError as exc:
            raise UserError(f"--admin: {exc}") from None
    if args.mesh:
        from meshplane._cli_lifecycle import follow_proxy_section
        from meshplane.drivers.follow import follow

        if args.file or args.watch or register is not None:
            raise UserError("--mesh runs the store's desired version: give no FILE, --watch "
                            "nor --register")
        target = partial(follow, args.store, args.mesh, follow_proxy_section(args),
                         proxy_id=args.id, heartbeat=args.heartbeat, workers=args.workers,
                         admin=args.admin or "127.0.0.1:0", drain_ms=args.drain_ms)
    elif args.file:
        target = partial(serve, args.file, watch=args.watch, workers=args.workers,
                         admin=args.admin, drain_ms=args.drain_ms, store=args.store,
                         register=register)
    else:
        raise UserError("give a config FILE, or --mesh NAME with --gateway or --node")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            proxy = await nursery.start(target)
            _print_running(proxy)
            _release_startup_heap()
            if proxy.registration is not None:
                i = proxy.registration.instance
                print(f"registered {i.namespace}/{i.service}/{i.id}", flush=True)
            async for signum in signals:
                logging.getLogger("meshplane").info(
                    "%s: draining for up to %d ms", signal.Signals(signum).name, args.drain_ms
                )
                nursery.cancel_scope.cancel()
                break
    print("meshplane: stopped", flush=True)


def _top(args: argparse.Namespace) -> int:
    import trio

    from meshplane.top import parse_address, run_top

    try:
        parse_address(args.address)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        return int(trio.run(lambda: run_top(args.address, sort=args.sort, once=args.once)))
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how one leaves top (run_top handles it; this is before it started)
    except BaseExceptionGroup as group:
        _, rest = group.split(KeyboardInterrupt)
        if rest is None:
            return 0
        raise


def _version() -> int:
    print(f"meshplane {__version__}")
    try:
        from meshplane import _core
    except ImportError as exc:
        print(f"core: not installed ({exc}); build it with `maturin develop --release`")
        return 0
    print(f"core {getattr(_core, '__version__', '?')}")
    return 0


def _internal_error(exc: BaseException) -> str:
    return (f"meshplane failed while loading this file ({type(exc).__name__}: {exc}); "
            "this is a bug in meshplane, please report it with the file")


def _describe(exc: BaseException) -> str | None:
    """A user-facing paragraph for an error the user can fix; None for a bug."""
    if isinstance(exc, BaseExceptionGroup):  # only trio makes groups, so it is loaded already
        from meshplane._bridge import single_error

        exc = single_error(exc)
    if isinstance(exc, MeshplaneError | UserError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if type(exc).__name__ == "CoreError":
        return f"the core refused: {exc}"
    if isinstance(exc, ImportError) and "meshplane._core" in str(exc):
        return (f"the compiled core is not installed ({exc}). Build it with "
                "`maturin develop --release` or install the meshplane wheel.")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `meshplane`; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args.files, registry=args.registry, store=args.store,
                             policies=args.policy, fmt=args.format)
        if args.command == "import":
            return _import(args)
        if args.command == "version":
            return _version()
        import trio

        if args.command == "top":
            return _top(args)
        if args.command == "registry":
            return int(trio.run(run_registry, args))
        if args.command == "fn":
            return int(trio.run(run_functions, args))
        if args.command in ("apply", "history", "diff", "rollback", "status", "rollout"):
            from meshplane._cli_lifecycle import run_lifecycle

            return int(trio.run(run_lifecycle, args))
        if args.command == "run":
            logging.basicConfig(
                level=args.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                stream=sys.stderr,
            )
            trio.run(_run, args)
            return 0
        from meshplane.demo import DemoOptions, run_demo

        options = DemoOptions(
            duration=args.duration,
            rps_limit=args.rps_limit,
            clients=args.clients,
            max_requests=args.max_requests,
        )
        trio.run(run_demo, options)
        return 0
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        message = _describe(exc)
        if message is None and args.command in ("validate", "import") and isinstance(exc, Exception):
            # These commands only read files: whatever a file holds, no traceback.
            message = _internal_error(exc)
        if message is None:
            raise
        print(f"meshplane {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
