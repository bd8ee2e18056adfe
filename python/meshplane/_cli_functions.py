"""`meshplane fn ...`: publish function versions, point aliases, list them (docs/functions.md).

`fn publish NAME -c FILE` freezes the Function resource NAME of FILE (its code, layers and
settings) as the next numbered version in the store; `fn alias NAME ALIAS --version N
[--weight M=0.1]` creates or moves an alias; `fn list` and `fn versions NAME` show them. The
mesh is FILE's `mesh` (or `--mesh`); the store is `--store`, else FILE's `proxy.store`, else
`MESHPLANE_STORE`, else the embedded default. Running proxies of the mesh follow a change at
once. Part of the CLI layer: imports trio and `meshplane.functions` when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["EXTRA_COMMANDS", "add_function_parser", "run_functions"]

# More `fn` subcommands (e.g. `fn invoke`): name -> coroutine function taking the parsed args
# and returning the exit status; their parsers go on `add_function_parser(...).fn_subparsers`.
EXTRA_COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {}


def _weight(text: str) -> tuple[str, float]:
    version, sep, value = text.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = -1.0
    if not sep or not version.isdigit() or not 0.0 <= weight < 1.0:
        raise argparse.ArgumentTypeError(f"expected VERSION=WEIGHT with 0 <= WEIGHT < 1, e.g. "
                                         f"2=0.1, got {text!r}")
    return version, weight


def _common(parser: argparse.ArgumentParser, *, config_required: bool = False) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", required=config_required,
                        help="the mesh config holding the Function resources (its `mesh` and "
                        "`proxy.store` are used)")
    parser.add_argument("--mesh", metavar="NAME",
                        help="the mesh (default: the config's `mesh`)")
    parser.add_argument("--store", metavar="URL",
                        help="etcd://HOST:PORT or sqlite:///PATH (default: the config's "
                        "proxy.store, else $MESHPLANE_STORE, else the embedded store)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_function_parser(sub: Any) -> argparse.ArgumentParser:
    """The `fn` command and its subparsers (the returned parser's `fn_subparsers` attribute
    takes more subcommands, such as `fn invoke`)."""
    fn = sub.add_parser(
        "fn",
        help="publish function versions, point aliases at them, list them, invoke them",
        description="Functions as Lambda has them: $LATEST is the config's Function resource; "
        "`publish` freezes it as an immutable numbered version in the store; an alias names a "
        "version and may send a share of invocations to a second one. Proxies of the mesh "
        "follow changes at once; `invoke` calls a function through a running proxy's Invoke API. "
        "docs/functions.md describes it.",
    )
    fsub = fn.add_subparsers(dest="fn_command", metavar="SUBCOMMAND", required=True)
    fn.fn_subparsers = fsub  # type: ignore[attr-defined]

    p = fsub.add_parser("publish", help="freeze $LATEST's code and settings as a new version",
                        description="Publish the Function NAME of the config as the next "
                        "version (Lambda's PublishVersion). Unchanged code and settings return "
                        "the latest version instead of a new one.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description", metavar="TEXT")
    _common(p, config_required=True)

    p = fsub.add_parser("alias", help="create or move an alias, optionally with a weighted "
                        "second version",
                        description="Point ALIAS of function NAME at --version, sending "
                        "--weight's share of invocations to a second version (Lambda's "
                        "routingConfig.additionalVersionWeights), e.g. a 10%% canary: "
                        "`meshplane fn alias resize live --version 1 --weight 2=0.1`. "
                        "--delete removes the alias.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("--version", metavar="N", help="the version the alias names")
    p.add_argument("--weight", type=_weight, action="append", default=[],
                   metavar="VERSION=WEIGHT", help="a second version and its share (0 <= w < 1)")
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--delete", action="store_true", help="delete the alias")
    _common(p)

    p = fsub.add_parser("list", help="functions, their versions and aliases",
                        description="Each function of the mesh: $LATEST's handler, memory and "
                        "timeout (from the config, when given), the published versions and the "
                        "aliases.")
    _common(p)

    p = fsub.add_parser("versions", help="the published versions of a function",
                        description="Each published version of NAME: number, publish time, "
                        "handler, memory, timeout, code hash.")
    p.add_argument("name", metavar="NAME")
    _common(p)
    return fn


async def run_functions(args: argparse.Namespace) -> int:
    extra = EXTRA_COMMANDS.get(args.fn_command)
    if extra is not None:
        return await extra(args)
    from meshplane.config import load_file
    from meshplane.config.functions import latest_settings
    from meshplane.functions.catalog import (
        FunctionCatalogError,
        delete_alias,
        load_catalog,
        publish,
        set_alias,
    )
    from meshplane.store import open_store, resolve_url

    config = load_file(args.config) if args.config else None
    mesh = args.mesh or (config.mesh if config else None)
    if not mesh:
        raise FunctionCatalogError("give the mesh: -c FILE (its `mesh`) or --mesh NAME")
    store = open_store(resolve_url(args.store, config.proxy.store if config else None))
    out: Any
    async with store:
        command = args.fn_command
        if command == "publish":
            assert config is not None
            fn = config.get("Function", args.name)
            if fn is None:
                known = ", ".join(r.name for r in config.of_kind("Function")) or "none"
                raise FunctionCatalogError(f"{config.source}: no Function named {args.name!r} "
                                           f"(functions: {known})")
            version, created = await publish(store, mesh, fn.name, latest_settings(config, fn),
                                             args.description)
            out = {"function": fn.name, "version": version, "created": created}
            text = (f"published {fn.name} version {version}" if created else
                    f"{fn.name}: code and settings unchanged since version {version}")
        elif command == "alias":
            if args.delete:
                found = await delete_alias(store, mesh, args.name, args.alias)
                if not found:
                    raise FunctionCatalogError(f"function {args.name!r} has no alias "
                                               f"{args.alias!r}")
                out, text = {"deleted": args.alias}, f"deleted alias {args.name}:{args.alias}"
            else:
                if not args.version:
                    raise FunctionCatalogError("give --version N (or --delete)")
                out = await set_alias(store, mesh, args.name, args.alias, args.version,
                                      dict(args.weight), args.description)
                shares = "".join(f", {w:.0%} to version {v}" for v, w in
                                 (out.get("additionalVersionWeights") or {}).items())
                text = f"alias {args.name}:{args.alias} -> version {args.version}{shares}"
        else:
            catalog, _ = await load_catalog(store, mesh)
            if command == "versions":
                versions = (catalog.get(args.name) or {}).get("versions") or {}
                if not versions and (config is None or config.get("Function", args.name) is None):
                    raise FunctionCatalogError(f"function {args.name!r}: no versions published "
                                               f"in mesh {mesh!r}")
                out = [versions[v] for v in sorted(versions, key=int)]
                text = "\n".join(
                    f"{v['version']}\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(v['published']))}"
                    f"\t{v['handler']}\t{v['memoryMB']} MB\t{v['timeoutMs'] / 1000:g} s"
                    f"\tsha256:{v['code']['sha256'][:12]}" for v in out) or "(no versions)"
            else:
                names: list[str] = sorted({*catalog, *(r.name for r in config.of_kind("Function"))}
                               if config else set(catalog))
                out, lines = [], []
                item: dict[str, Any]
                for name in names:
                    entry = catalog.get(name) or {}
                    fn = config.get("Function", name) if config else None
                    latest = latest_settings(config, fn) if config and fn else None
                    item = {"function": name,
                            "latest": latest,
                            "versions": sorted(entry.get("versions") or {}, key=int),
                            "aliases": entry.get("aliases") or {}}
                    out.append(item)
                    head = (f"{name}\t$LATEST {latest['handler']} {latest['memoryMB']} MB "
                            f"{latest['timeoutMs'] / 1000:g} s" if latest else f"{name}")
                    versions_list: list[str] = item["versions"]
                    lines.append(f"{head}\tversions: {', '.join(versions_list) or '-'}")
                    for alias, a in sorted(item["aliases"].items()):
                        shares = "".join(f" + {w:.0%} -> {v}" for v, w in
                                         (a.get("additionalVersionWeights") or {}).items())
                        lines.append(f"  alias {alias} -> {a['functionVersion']}{shares}")
                text = "\n".join(lines) or "(no functions)"
    print(json.dumps(out, indent=2, sort_keys=True) if args.json else text)
    return 0
