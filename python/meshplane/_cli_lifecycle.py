"""`meshplane apply | history | diff | rollback | status`, and `run --mesh` (follow the store).

Config versions of a mesh in the store (docs/lifecycle.md). Reading files and diffing use only
`meshplane.config` and `meshplane.lifecycle.document`; the store commands start trio. Output
is text, or JSON with `--format json` for pipelines. Exit codes (also in `--help`):

    0  OK (apply: a new version is desired, or the config already was)
    1  invalid config, or any other error (one paragraph on stderr)
    2  bad command line (argparse)
    3  non-compliant: a compliance policy failed (nothing applied)
    4  conflict: another apply made a version meanwhile; nothing applied, retry
    5  the store cannot be reached; nothing changed
    6  status: a proxy drifts (runs another version, rejected the desired one) or is silent;
       diff --exit-code: the configs differ
    7  rollout: the analysis failed and the rollout rolled back
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from meshplane._cli_registry import parse_duration
from meshplane.errors import ConfigError, MeshplaneError

__all__ = [
    "EXIT_CODES",
    "add_lifecycle_parsers",
    "add_run_follow_args",
    "load_document",
    "run_lifecycle",
]

EXIT_OK, EXIT_ERROR, EXIT_NONCOMPLIANT, EXIT_CONFLICT, EXIT_UNREACHABLE, EXIT_DRIFT = 0, 1, 3, 4, 5, 6
EXIT_ROLLED_BACK = 7
EXIT_CODES = """\
exit status: 0 OK; 1 invalid config or other error; 2 bad command line; 3 non-compliant
(a compliance policy failed); 4 conflict (a concurrent apply won: retry); 5 store unreachable
(nothing changed); 6 drift or silent proxy (status), differences (diff --exit-code);
7 rollout rolled back."""

MESH_ENV = "MESHPLANE_MESH"


class UserError(MeshplaneError):
    """A command-line mistake the user can fix (printed as one line, exit 1)."""


def policy_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", action="append", default=[], metavar="FILE",
                        help="compliance policies to check (repeatable; default: "
                        "$MESHPLANE_POLICY, files separated by ':'); docs/policies.md")


def _common(parser: argparse.ArgumentParser, *, mesh_required: bool = True,
            sarif: bool = False) -> None:
    parser.add_argument("--store", metavar="URL",
                        help="etcd://HOST:PORT[,...] or sqlite:///PATH (default: $MESHPLANE_STORE, "
                        "else the embedded store)")
    parser.add_argument("--mesh", metavar="NAME",
                        help="the mesh (default: $MESHPLANE_MESH" +
                        (")" if mesh_required else ", else the one the files name)"))
    parser.add_argument("--format", choices=["text", "json", *(["sarif"] if sarif else [])],
                        default="text",
                        help="output format (default: text" +
                        ("; sarif: compliance violations for code scanning)" if sarif else ")"))


def add_lifecycle_parsers(sub: Any) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    apply = sub.add_parser(
        "apply", help="record a config as a new version of the mesh and make it desired",
        description="Load FILE... (meshplane files, AWS JSON, Kubernetes CRDs, CloudFormation, "
        "or directories of them) as one mesh, validate it (schema, references, compliance "
        "policies), store it as an immutable version (number, content hash, author, time, "
        "message) and make it the mesh's desired version, which every `meshplane run --mesh` "
        "proxy follows. A config equal to the desired one creates no version. The `proxy` "
        "section of meshplane files is ignored: each proxy brings its own.",
        epilog=EXIT_CODES, formatter_class=raw)
    apply.add_argument("files", nargs="+", metavar="FILE|DIR")
    apply.add_argument("-m", "--message", default="", help="why (shown by history)")
    apply.add_argument("--author", help="who (default: $MESHPLANE_AUTHOR, else user@host)")
    apply.add_argument("--dry-run", action="store_true",
                       help="validate and show the diff against the desired version; store nothing")
    apply.add_argument("--expect-version", type=int, metavar="N",
                       help="apply only if version N is still the desired one (0: none yet); "
                       "else exit 4 and change nothing")
    policy_arg(apply)
    _common(apply, mesh_required=False, sarif=True)

    history = sub.add_parser(
        "history", help="list the mesh's config versions",
        description="Every version of the mesh, oldest first: NUMBER HASH CREATED AUTHOR "
        "MESSAGE; '*' marks the desired one.", epilog=EXIT_CODES, formatter_class=raw)
    _common(history)

    diff = sub.add_parser(
        "diff", help="semantic diff of two versions, or of files against the desired version",
        description="`diff A B` (version numbers), `diff A` (version A against the desired "
        "one), or `diff FILE...` (the desired version against FILE..., what `apply FILE...` "
        "would change). Lists resources added (+), removed (-) and changed (~) with each "
        "changed field path and its old -> new value.", epilog=EXIT_CODES, formatter_class=raw)
    diff.add_argument("what", nargs="+", metavar="VERSION|FILE")
    diff.add_argument("--exit-code", action="store_true",
                      help="exit 6 when there are differences (like git diff --exit-code)")
    _common(diff, mesh_required=False)

    rollback = sub.add_parser(
        "rollback", help="make an earlier version desired again (as a new version)",
        description="Record a new version equal to VERSION (default: the one before the "
        "desired one) and make it desired. History is never rewritten.",
        epilog=EXIT_CODES, formatter_class=raw)
    rollback.add_argument("version", nargs="?", type=int, metavar="VERSION")
    rollback.add_argument("-m", "--message", default="")
    rollback.add_argument("--author")
    _common(rollback)

    status = sub.add_parser(
        "status", help="every proxy of the mesh: running and desired version, drift, heartbeat",
        description="One line per proxy that follows the mesh (`meshplane run --mesh`): ID "
        "TARGET RUNNING DESIRED STATE HEARTBEAT NOTE. A proxy drifts when it runs another "
        "version than the desired one (NOTE says why, e.g. the reason it rejected it); it is "
        "silent when its last heartbeat is older than --silent-after. Exit 6 if any live proxy "
        "drifts or is silent (stopped proxies are listed, not counted).",
        epilog=EXIT_CODES, formatter_class=raw)
    status.add_argument("--silent-after", type=parse_duration, default=30.0, metavar="DURATION",
                        help="a heartbeat older than this is silence (default: 30s)")
    _common(status)

    rollout = sub.add_parser(
        "rollout", help="shift a route's weight to a node step by step, rolling back on errors",
        description="Progressive delivery on config versions: for each of --steps, make a "
        "version where ROUTE (ROUTER/ROUTE, or a route name unique in the mesh) sends that "
        "percent of its weight to NODE (the other targets share the rest as before), wait "
        "until every live proxy runs it, then measure NODE's clusters over --interval from "
        "the statistics the proxies report (requests, 5xx, p99 latency). If a step fails "
        "(5xx rate above --max-5xx, p99 above --max-p99, fewer than --min-requests requests, "
        "a proxy rejects the version or does not converge), the mesh's config from before the "
        "rollout becomes desired again (a new version) and the reason is printed; exit 7. "
        "A change by someone else during the rollout stops it (exit 4). --interval should "
        "span several proxy heartbeats (`run --heartbeat`).",
        epilog=EXIT_CODES, formatter_class=raw)
    rollout.add_argument("route", metavar="ROUTE")
    rollout.add_argument("--to", required=True, metavar="NODE", help="the VirtualNode to shift to")
    rollout.add_argument("--steps", default="10,25,50,100", metavar="P,P,...",
                         help="percent of the route's weight to NODE at each step "
                         "(default: 10,25,50,100)")
    rollout.add_argument("--interval", type=parse_duration, default=30.0, metavar="DURATION",
                         help="how long each step is measured (default: 30s)")
    rollout.add_argument("--max-5xx", type=parse_percent, default=0.01, metavar="PERCENT",
                         help="highest 5xx rate of NODE's requests (default: 1%%)")
    rollout.add_argument("--max-p99", type=parse_duration, default=0.5, metavar="DURATION",
                         help="highest p99 latency of NODE's requests (default: 500ms)")
    rollout.add_argument("--min-requests", type=int, default=1, metavar="N",
                         help="fewest requests to NODE in a step to judge it (default: 1)")
    rollout.add_argument("--converge-timeout", type=parse_duration, default=60.0,
                         metavar="DURATION",
                         help="how long every proxy gets to run a step (default: 60s)")
    rollout.add_argument("--dry-run", action="store_true",
                         help="print the versions it would apply (their diffs); apply nothing")
    rollout.add_argument("--author")
    _common(rollout)


def add_run_follow_args(run: argparse.ArgumentParser) -> None:
    """`meshplane run --mesh M (--gateway G | --node N)`: follow the store instead of FILE."""
    group = run.add_argument_group(
        "following the store (instead of FILE; docs/lifecycle.md)",
        "The proxy runs the mesh's desired version with the proxy settings below and reports "
        "to the store what it runs; --admin defaults to an ephemeral port on 127.0.0.1.")
    group.add_argument("--mesh", metavar="NAME",
                       help="run the desired config version of this mesh from --store")
    who = group.add_mutually_exclusive_group()
    who.add_argument("--gateway", metavar="NAME", help="the VirtualGateway this proxy runs")
    who.add_argument("--node", metavar="NAME", help="the VirtualNode this proxy is the sidecar of")
    group.add_argument("--bind", metavar="IP", help="listener address (default: 0.0.0.0)")
    group.add_argument("--port", action="append", default=[], metavar="DECLARED=BOUND",
                       help="bind the listener declared on DECLARED to BOUND (0 = ephemeral); "
                       "repeatable")
    group.add_argument("--app", metavar="HOST:PORT", help="sidecar: where the application listens")
    group.add_argument("--outbound", metavar="HOST:PORT", help="sidecar: the outbound listener")
    group.add_argument("--id", metavar="ID",
                       help="this proxy's id in `meshplane status` (default: TARGET-HOST-PID)")
    group.add_argument("--heartbeat", type=parse_duration, default=5.0, metavar="DURATION",
                       help="how often to report to the store (default: 5s)")


def follow_proxy_section(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.gateway or args.node):
        raise UserError("--mesh needs --gateway NAME or --node NAME")
    proxy: dict[str, Any] = {"gateway": args.gateway} if args.gateway else {"node": args.node}
    if args.bind:
        proxy["bind"] = args.bind
    ports = {}
    for text in args.port:
        declared, sep, bound = text.partition("=")
        if not sep or not declared.isdigit() or not bound.isdigit():
            raise UserError(f"--port: expected DECLARED=BOUND, got {text!r}")
        ports[int(declared)] = int(bound)
    if ports:
        proxy["ports"] = ports
    if args.app:
        proxy["app"] = args.app
    if args.outbound:
        proxy["outbound"] = args.outbound
    return proxy


def parse_percent(text: str) -> float:
    """'1%', '0.5%' or a fraction such as '0.01' -> a fraction."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a percent like 1% or 0.5%, got {text!r}")
    return value


# -- reading files --------------------------------------------------------------------------


def load_document(files: Sequence[str], mesh: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The version document of FILE... as one mesh, and each resource's file by label;
    ConfigError names file, resource, field."""
    from meshplane.config.loaders import import_paths
    from meshplane.config.validate import validate_resources
    from meshplane.errors import ConfigError, Problem
    from meshplane.lifecycle.document import document_of

    found = import_paths(list(files))
    if found.problems:
        raise ConfigError(found.problems)
    if not found.resources:
        raise UserError(f"{', '.join(files)}: no App Mesh resource found")
    names = found.mesh_names()
    mesh = mesh or os.environ.get(MESH_ENV) or (names[0] if len(names) == 1 else None)
    if mesh is None:
        raise UserError("give the mesh with --mesh: the files name "
                        + ("none" if not names else f"several ({', '.join(names)})"))
    origin = {r.label: o for r, o in zip(found.resources, found.origins, strict=True)}
    joined = " + ".join(files)
    problems = [Problem(origin.get(p.resource, p.file), p.resource, p.field, p.message)
                for p in validate_resources(found.resources, joined)]
    problems += [Problem(origin[r.label], r.label, "name", f'expected the mesh name "{mesh}"')
                 for r in found.resources if r.kind == "Mesh" and r.name != mesh]
    if problems:
        raise ConfigError(problems)
    return document_of(mesh, found.resources), origin


def _mesh(args: argparse.Namespace) -> str:
    mesh: str | None = args.mesh or os.environ.get(MESH_ENV)
    if not mesh:
        raise UserError(f"give the mesh with --mesh NAME (or ${MESH_ENV})")
    return mesh


# -- output --------------------------------------------------------------------------------


def _value(v: Any) -> str:
    from meshplane.lifecycle.document import ABSENT

    return "(absent)" if v is ABSENT else json.dumps(v, sort_keys=True)


def render_diff(changes: Sequence[Any]) -> list[str]:
    from meshplane.lifecycle.document import format_path

    lines = []
    for c in changes:
        mark = {"added": "+", "removed": "-", "changed": "~"}[c.op]
        lines.append(f"{mark} {c.label if c.kind != 'mesh' else 'mesh'}")
        for f in c.fields:
            lines.append(f"    {format_path(f.path)}: {_value(f.old)} -> {_value(f.new)}")
    return lines


def _summary(changes: Sequence[Any]) -> str:
    counts = {op: sum(1 for c in changes if c.op == op) for op in ("added", "removed", "changed")}
    return ", ".join(f"{n} {op}" for op, n in counts.items() if n) or "no change"


def _when(ts: float) -> str:
    import datetime  # here: `meshplane run` imports this module but never loads it

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit_violations(fmt: str, violations: Sequence[Any], policies: Sequence[Any],
                    problems: Sequence[Any] = ()) -> None:
    """Print compliance violations (and, in machine formats, validation `problems`: invalid
    files) as text lines, JSON or SARIF on stdout."""
    from meshplane.compliance import to_sarif

    if fmt == "sarif":
        sarif = to_sarif(violations, policies)
        if problems:
            run = sarif["runs"][0]
            run["tool"]["driver"]["rules"].append(
                {"id": INVALID_RULE, "shortDescription": {"text": "the config is invalid"}})
            run["results"] += [_sarif_problem(p) for p in problems]
        print(json.dumps(sarif, indent=2))
    elif fmt == "json":
        print(json.dumps({"valid": not problems, "compliant": not violations,
                          "problems": [{"file": p.file, "resource": p.resource,
                                        "field": p.field, "message": p.message} for p in problems],
                          "violations": [v.to_json() for v in violations]},
                         indent=2, sort_keys=True))
    else:
        for v in violations:
            print(f"NONCOMPLIANT {v}")


INVALID_RULE = "meshplane-invalid"


def _sarif_problem(p: Any) -> dict[str, Any]:
    location: dict[str, Any] = {"logicalLocations": [
        {"name": p.field, "fullyQualifiedName": f"{p.resource}.{p.field}", "kind": "member"}]}
    if p.file:
        location["physicalLocation"] = {"artifactLocation": {"uri": p.file}}
    return {"ruleId": INVALID_RULE, "level": "error", "message": {"text": str(p)},
            "locations": [location]}


def _emit(args: argparse.Namespace, doc: Any, lines: Sequence[str]) -> None:
    if args.format in ("json", "sarif"):
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        for line in lines:
            print(line)


# -- commands ------------------------------------------------------------------------------


async def _apply(args: argparse.Namespace) -> int:
    import trio

    from meshplane.compliance import check_document, load_policies_for
    from meshplane.lifecycle.document import diff
    from meshplane.lifecycle.versions import ConfigVersions
    from meshplane.store import open_store

    policies = load_policies_for(args.policy)
    try:
        doc, origins = await trio.to_thread.run_sync(load_document, args.files, args.mesh)
    except ConfigError as exc:
        if args.format == "text":
            raise
        print(exc, file=sys.stderr)
        emit_violations(args.format, [], policies, exc.problems)
        return EXIT_ERROR
    violations = check_document(doc, policies, origins)
    if violations:
        emit_violations(args.format, violations, policies)
        return EXIT_NONCOMPLIANT
    async with open_store(args.store) as store:
        versions = ConfigVersions(store, doc["mesh"])
        desired, _ = await versions.desired()
        old = (await versions.document(desired.hash)) if desired else {"mesh": doc["mesh"]}
        changes = diff(old, doc)
        if args.dry_run:
            _emit(args, {"mesh": doc["mesh"], "desired": desired.number if desired else None,
                         "changes": [c.to_json() for c in changes]},
                  [f"dry run: mesh {doc['mesh']}: {_summary(changes)}", *render_diff(changes)])
            return EXIT_OK
        version, created = await versions.commit(doc, message=args.message, author=args.author,
                                                 based_on=args.expect_version)
    out = {"mesh": version.mesh, "version": version.number, "hash": version.hash,
           "created": created, "changes": [c.to_json() for c in changes] if created else []}
    if created:
        lines = [f"mesh {version.mesh}: version {version.number} ({version.hash[:12]}) is "
                 f"desired: {_summary(changes)}", *render_diff(changes)]
    else:
        lines = [f"mesh {version.mesh}: unchanged, version {version.number} "
                 f"({version.hash[:12]}) already is this config"]
    _emit(args, out, lines)
    return EXIT_OK


async def _history(args: argparse.Namespace) -> int:
    from meshplane.lifecycle.versions import ConfigVersions
    from meshplane.store import open_store

    mesh = _mesh(args)
    async with open_store(args.store) as store:
        versions = ConfigVersions(store, mesh)
        found = await versions.history()
        desired, _ = await versions.desired()
    lines = []
    for v in found:
        mark = "*" if desired and v.number == desired.number else " "
        note = v.message + (f" (rollback to {v.rollback_of})" if v.rollback_of and
                            f"rollback to version {v.rollback_of}" != v.message else "")
        lines.append(f"{mark}{v.number:>5} {v.hash[:12]} {_when(v.created)} {v.author} {note}".rstrip())
    _emit(args, {"mesh": mesh, "desired": desired.number if desired else None,
                 "versions": [vars(v) for v in found]},
          lines or [f"mesh {mesh} has no version yet"])
    return EXIT_OK


async def _diff(args: argparse.Namespace) -> int:
    import trio

    from meshplane.lifecycle.document import diff
    from meshplane.lifecycle.versions import ConfigVersions
    from meshplane.store import open_store

    numbers = [w for w in args.what if w.isdigit()]
    if numbers and len(numbers) != len(args.what):
        raise UserError("diff takes version numbers or files, not both")
    if len(numbers) > 2:
        raise UserError("diff takes at most two version numbers")
    new_doc = None
    if not numbers:
        new_doc, _ = await trio.to_thread.run_sync(load_document, args.what, args.mesh)
        mesh = new_doc["mesh"]
    else:
        mesh = _mesh(args)
    async with open_store(args.store) as store:
        versions = ConfigVersions(store, mesh)
        if new_doc is not None:
            desired, _ = await versions.desired()
            old_doc = (await versions.document(desired.hash)) if desired else {"mesh": mesh}
            title = f"desired version {desired.number if desired else '(none)'} -> {' '.join(args.what)}"
        else:
            a = int(numbers[0])
            b = int(numbers[1]) if len(numbers) == 2 else None
            va, old_doc = await versions.get(a)
            vb, new_doc = await versions.get(b)
            title = f"version {va.number} -> version {vb.number}"
    changes = diff(old_doc, new_doc)
    _emit(args, {"mesh": mesh, "changes": [c.to_json() for c in changes]},
          [f"mesh {mesh}: {title}: {_summary(changes)}", *render_diff(changes)])
    return EXIT_DRIFT if args.exit_code and changes else EXIT_OK


async def _rollback(args: argparse.Namespace) -> int:
    from meshplane.lifecycle.versions import ConfigVersions
    from meshplane.store import open_store

    mesh = _mesh(args)
    async with open_store(args.store) as store:
        version, created = await ConfigVersions(store, mesh).rollback(
            args.version, message=args.message, author=args.author)
    _emit(args, {"mesh": mesh, "version": version.number, "hash": version.hash,
                 "created": created, "rollback_of": version.rollback_of},
          [f"mesh {mesh}: version {version.number} ({version.hash[:12]}) is desired"
           + (f": rollback to version {version.rollback_of}" if created else
              ": unchanged, it already is that config")])
    return EXIT_OK


def proxy_status(report: Any, desired: Any, now: float, silent_after: float) -> tuple[str, bool]:
    """(note, whether this proxy is a problem) for one report."""
    if report.state == "STOPPED":
        return "stopped", False
    age = now - report.heartbeat
    if age > silent_after:
        return f"silent for {age:.0f}s", True
    if desired is None:
        return "", False
    if report.error and report.error.get("version") == desired.number:
        return f"drift: rejected version {desired.number}: {report.error.get('reason')}", True
    if report.running != desired.number:
        if report.running_hash == desired.hash:
            return "", False  # an equal config (a rollback to what it runs): nothing to change
        return f"drift: runs version {report.running}, desired is {desired.number}", True
    return "", False


async def _status(args: argparse.Namespace) -> int:
    import time

    from meshplane.lifecycle.versions import ConfigVersions
    from meshplane.store import open_store

    mesh = _mesh(args)
    async with open_store(args.store) as store:
        versions = ConfigVersions(store, mesh)
        desired, _ = await versions.desired()
        reports = await versions.reports()
    now = time.time()
    rows, bad = [], False
    lines = [f"mesh {mesh}: desired version {desired.number if desired else '(none)'}"]
    for r in reports:
        note, problem = proxy_status(r, desired, now, args.silent_after)
        bad |= problem
        rows.append({**vars(r), "note": note, "ok": not problem,
                     "heartbeat_age_s": round(now - r.heartbeat, 3)})
        lines.append(f"{r.id} {r.target} running={r.running} desired={desired.number if desired else None} "
                     f"{r.state} {now - r.heartbeat:.0f}s {note}".rstrip())
    if not reports:
        lines.append("no proxy has reported")
    _emit(args, {"mesh": mesh, "desired": desired.number if desired else None,
                 "proxies": rows, "ok": not bad}, lines)
    return EXIT_DRIFT if bad else EXIT_OK


async def _rollout(args: argparse.Namespace) -> int:
    from meshplane.lifecycle.document import diff
    from meshplane.lifecycle.rollout import (
        doc_targets,
        find_route,
        plan_steps,
        run_rollout,
        with_weights,
    )
    from meshplane.lifecycle.versions import ConfigVersions
    from meshplane.store import open_store

    mesh = _mesh(args)
    try:
        percents = [int(p) for p in args.steps.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"--steps: expected percents such as 10,25,50,100, got {args.steps!r}") from None
    if not percents:
        raise UserError("--steps: give at least one percent")
    async with open_store(args.store) as store:
        versions = ConfigVersions(store, mesh)
        if args.dry_run:
            start, doc = await versions.get()
            router, name, kind = find_route(doc, args.route)
            previous = doc
            for percent, weights in zip(percents, plan_steps(doc_targets(doc, router, name, kind),
                                                              args.to, percents), strict=True):
                step = with_weights(doc, router, name, kind, weights)
                print(f"step {percent}%: would apply ({', '.join(f'{n}={w}' for n, w in weights.items())})")
                for line in render_diff(diff(previous, step)):
                    print(f"  {line}")
                previous = step
            print(f"dry run: nothing applied; version {start.number} stays desired")
            return EXIT_OK
        result = await run_rollout(
            versions, args.route, args.to, percents, interval=args.interval,
            max_5xx=args.max_5xx, max_p99_ms=args.max_p99 * 1000, min_requests=args.min_requests,
            converge_timeout=args.converge_timeout, author=args.author,
            say=lambda line: print(line, flush=True))
    return EXIT_OK if result.completed else EXIT_ROLLED_BACK


async def run_lifecycle(args: argparse.Namespace) -> int:
    """Run `args.command`; the exit status (see the module docstring)."""
    from meshplane.lifecycle.versions import ConcurrentApply
    from meshplane.store import StoreUnavailable

    command = {"apply": _apply, "history": _history, "diff": _diff, "rollback": _rollback,
               "status": _status, "rollout": _rollout}[args.command]
    try:
        return await command(args)
    except ConcurrentApply as exc:
        print(f"meshplane {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFLICT
    except StoreUnavailable as exc:
        # etcd says itself when a timed-out write may have happened; otherwise nothing did.
        writes = args.command in ("apply", "rollback")
        tail = "; nothing was changed" if writes and "may have" not in str(exc) else ""
        print(f"meshplane {args.command}: {exc}{tail}", file=sys.stderr)
        return EXIT_UNREACHABLE
