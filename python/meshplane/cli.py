"""`meshplane ...`: run, validate, import, demo, version.

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
from meshplane.errors import ConfigError

if TYPE_CHECKING:
    from meshplane.runtime import Proxy

__all__ = ["main"]

FORMAT_HELP = """\
config file format (YAML or JSON; docs/config.md has the full reference):

  mesh: NAME                    # the App Mesh mesh these resources belong to
  proxy:
    gateway: NAME               # the VirtualGateway this proxy runs, or: node: NAME
    admin: 127.0.0.1:9901       # admin API (docs/admin.md)
    ports: {8080: 0}            # declared listener port -> port to bind (0 = ephemeral)
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
        help="run a proxy for a config file until SIGINT/SIGTERM",
        description="Run the gateway or sidecar proxy described by FILE. Prints each listener's "
        "bound address and the admin address, serves until SIGINT or SIGTERM, then drains "
        "in-flight requests and exits 0.",
        epilog=FORMAT_HELP,
        formatter_class=raw,
    )
    run.add_argument("file", metavar="FILE", help="config file (YAML or JSON)")
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

    validate = sub.add_parser(
        "validate",
        help="check config files without running anything",
        description="Load and validate each FILE; print 'OK FILE: N resources' or every problem, "
        "one per line (file: resource: field: what was expected). Exit 1 if any file has a "
        "problem. Needs neither trio nor the compiled core.",
        epilog=FORMAT_HELP,
        formatter_class=raw,
    )
    validate.add_argument("files", nargs="+", metavar="FILE")

    imp = sub.add_parser(
        "import",
        help="convert App Mesh definitions (AWS JSON, Kubernetes CRDs, CloudFormation) to a config",
        description="Read App Mesh resources from FILE in any of the three shapes users hold them "
        "in (AWS CLI/API JSON, appmesh.k8s.aws/v1beta2 custom resources, CloudFormation "
        "AWS::AppMesh::* templates) and write a meshplane config (YAML) for the proxy of one "
        "virtual gateway or virtual node.",
        epilog="See docs/config.md for the output format and what each shape maps to.",
    )
    imp.add_argument("file", metavar="FILE")
    who = imp.add_mutually_exclusive_group(required=True)
    who.add_argument("--gateway", metavar="NAME", help="the VirtualGateway this proxy runs")
    who.add_argument("--node", metavar="NAME", help="the VirtualNode this proxy is the sidecar of")
    imp.add_argument("--mesh", metavar="NAME", help="mesh name (default: the one in FILE)")
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

    sub.add_parser("version", help="print the package and core versions",
                   description="Print meshplane's version and whether the compiled core is installed.")
    return parser


def _validate(files: Sequence[str]) -> int:
    from meshplane.config import load_file

    failed = False
    for path in files:
        try:
            config = load_file(path)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                print(problem)
        except OSError as exc:
            failed = True
            print(f"{path}: cannot read: {exc.strerror or exc}")
        except Exception as exc:  # a bug in meshplane, not in the file: still no traceback
            failed = True
            print(f"{path}: {_internal_error(exc)}")
        else:
            print(f"OK {path}: {len(config.resources)} resources")
    return 1 if failed else 0


def _import(args: argparse.Namespace) -> int:
    import yaml

    from meshplane.config import from_dict, import_resources, to_native

    resources = import_resources(args.file)
    mesh = args.mesh
    if mesh is None:
        meshes = sorted({r.name for r in resources if r.kind == "Mesh"})
        if len(meshes) != 1:
            found = f"it defines {', '.join(meshes)}" if meshes else "it defines no Mesh resource"
            raise UserError(f"{args.file}: give the mesh name with --mesh ({found})")
        mesh = meshes[0]
    doc = to_native(resources, mesh, gateway=args.gateway, node=args.node)
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
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


def _print_running(proxy: Proxy) -> None:
    print(f"meshplane {__version__}: running config {proxy.version} from {proxy.config.source}")
    for name, (host, port) in sorted(proxy.listener_addresses().items()):
        print(f"listener {name} {host}:{port}")
    if proxy.admin_address is not None:
        host, port = proxy.admin_address
        print(f"admin http://{host}:{port}/")
    sys.stdout.flush()


async def _run(args: argparse.Namespace) -> None:
    import signal
    from functools import partial

    import trio

    from meshplane.config.addresses import parse_address
    from meshplane.runtime import serve

    if args.admin:
        try:
            parse_address(args.admin, min_port=0)
        except ValueError as exc:
            raise UserError(f"--admin: {exc}") from None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            proxy = await nursery.start(
                partial(
                    serve,
                    args.file,
                    watch=args.watch,
                    workers=args.workers,
                    admin=args.admin,
                    drain_ms=args.drain_ms,
                )
            )
            _print_running(proxy)
            async for signum in signals:
                logging.getLogger("meshplane").info(
                    "%s: draining for up to %d ms", signal.Signals(signum).name, args.drain_ms
                )
                nursery.cancel_scope.cancel()
                break
    print("meshplane: stopped", flush=True)


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
    if isinstance(exc, ConfigError | UserError):
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
            return _validate(args.files)
        if args.command == "import":
            return _import(args)
        if args.command == "version":
            return _version()
        import trio

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
