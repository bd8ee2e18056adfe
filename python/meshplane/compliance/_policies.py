"""Policy files, the built-in library, the rule evaluator and SARIF output."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshplane.config.model import PARENT_KEY, Resource
from meshplane.errors import ConfigError, Problem

__all__ = [
    "BUILTINS",
    "POLICY_ENV",
    "Policy",
    "Violation",
    "check_document",
    "load_policies",
    "load_policies_for",
    "to_sarif",
]

POLICY_ENV = "MESHPLANE_POLICY"
_MISSING: Any = object()
_CHECKS = ("exists", "equals", "in", "max", "min")
ROUTE_KEYS = "{httpRoute,http2Route,grpcRoute}"


@dataclass(frozen=True)
class Violation:
    """`policy` failed on `resource` (a label such as `Route "a" (VirtualRouter "r")`) at
    `field` (a path such as `spec.httpRoute.timeout.perRequest`); `file` when known."""

    policy: str
    resource: str
    field: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.resource, self.field) if p)
        return f"{where}: {self.message} [policy {self.policy}]"

    def to_json(self) -> dict[str, str]:
        return {"policy": self.policy, "resource": self.resource, "field": self.field,
                "message": self.message, "file": self.file}


Check = Callable[[Mapping[str, Any]], Iterable[Violation]]


@dataclass(frozen=True)
class Policy:
    """One named policy: `check(document)` yields its violations."""

    name: str
    description: str
    check: Check = field(repr=False)


# -- rules --------------------------------------------------------------------------------


def _label(entry: Mapping[str, Any]) -> str:
    kind = str(entry.get("kind"))
    parent = entry.get(PARENT_KEY[kind]) if kind in PARENT_KEY else None
    return Resource(kind, str(entry.get("name")), parent=parent).label


def _segments(path: str) -> list[str]:
    out: list[str] = []
    for part in path.replace("[*]", ".*").split("."):
        if part:
            out.append(part)
    return out


def _walk(value: Any, segments: Sequence[str], where: str) -> Iterator[tuple[str, Any]]:
    """(concrete path, value or _MISSING) for each place `segments` names under `value`.
    `*` fans out over a list (an empty or absent list names no place); `{a,b}` names the
    keys among a, b that are present (none present: no place)."""
    if not segments:
        yield where, value
        return
    head, rest = segments[0], segments[1:]
    if head == "*":
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from _walk(item, rest, f"{where}[{i}]")
        return
    if head.startswith("{") and head.endswith("}"):
        for key in head[1:-1].split(","):
            if isinstance(value, dict) and key in value:
                yield from _walk(value[key], rest, f"{where}.{key}" if where else key)
        return
    optional = head.endswith("?")
    head = head.rstrip("?")
    child = value.get(head, _MISSING) if isinstance(value, dict) else _MISSING
    path = f"{where}.{head}" if where else head
    if child is _MISSING and optional:
        return
    if child is _MISSING:
        yield path + ("." + ".".join(rest) if rest else ""), _MISSING
    else:
        yield from _walk(child, rest, path)


def _rule_failure(value: Any, rule: Mapping[str, Any]) -> str | None:
    if value is _MISSING:
        if rule.get("exists") is False:
            return None
        expected = (f", expected {rule['equals']!r}" if "equals" in rule else
                    f", expected one of {list(rule['in'])!r}" if "in" in rule else "")
        return "is missing" + expected
    if rule.get("exists") is False:
        return f"must not be set (is {value!r})"
    if "equals" in rule and value != rule["equals"]:
        return f"is {value!r}, expected {rule['equals']!r}"
    if "in" in rule and value not in rule["in"]:
        return f"is {value!r}, expected one of {list(rule['in'])!r}"
    for op, bad in (("max", lambda v, lim: v > lim), ("min", lambda v, lim: v < lim)):
        if op in rule:
            if not isinstance(value, int | float) or isinstance(value, bool):
                return f"is {value!r}, expected a number"
            if bad(value, rule[op]):
                return f"is {value}, expected {'at most' if op == 'max' else 'at least'} {rule[op]}"
    return None


def rule_policy(name: str, rule: Mapping[str, Any], description: str = "") -> Policy:
    """A policy from a YAML rule: every resource of `kinds` (all when absent), at every place
    `path` names, passes the rule's check; `message` replaces the default wording."""
    kinds = set(rule.get("kinds") or [])
    segments = _segments(str(rule["path"]))
    message = rule.get("message")
    names = rule.get("names")  # optional glob on resource names

    def check(doc: Mapping[str, Any]) -> Iterator[Violation]:
        for entry in doc.get("resources") or []:
            if kinds and entry.get("kind") not in kinds:
                continue
            if names and not fnmatch.fnmatchcase(str(entry.get("name")), names):
                continue
            for where, value in _walk(entry, segments, ""):
                failure = _rule_failure(value, rule)
                if failure is not None:
                    yield Violation(name, _label(entry), where, message or failure)

    return Policy(name, description or str(rule.get("description") or ""), check)


def _canary_weight(name: str, params: Mapping[str, Any]) -> Policy:
    max_percent = float(params.get("maxPercent", 10))
    pattern = str(params.get("nodes", "*canary*"))
    attribute = str(params.get("attribute", "canary"))

    def canaries(doc: Mapping[str, Any]) -> set[str]:
        out = set()
        for e in doc.get("resources") or []:
            if e.get("kind") != "VirtualNode":
                continue
            attrs = (((e.get("spec") or {}).get("serviceDiscovery") or {}).get("awsCloudMap")
                     or {}).get("attributes") or []
            labelled = any(a.get("key") == attribute and str(a.get("value")).lower() == "true"
                           for a in attrs if isinstance(a, dict))
            if labelled or fnmatch.fnmatchcase(str(e.get("name")), pattern):
                out.add(str(e.get("name")))
        return out

    def check(doc: Mapping[str, Any]) -> Iterator[Violation]:
        marked = canaries(doc)
        for e in doc.get("resources") or []:
            if e.get("kind") != "Route":
                continue
            for where, targets in _walk(e, _segments(f"spec.{ROUTE_KEYS.replace('}', ',tcpRoute}')}"
                                                     ".action.weightedTargets"), ""):
                if not isinstance(targets, list):
                    continue
                total = sum(t.get("weight", 0) for t in targets if isinstance(t, dict))
                for i, t in enumerate(targets):
                    if isinstance(t, dict) and t.get("virtualNode") in marked and total > 0:
                        percent = 100.0 * t.get("weight", 0) / total
                        if percent > max_percent:
                            yield Violation(name, _label(e), f"{where}[{i}].weight",
                                            f"sends {percent:g}% to canary node "
                                            f"{t['virtualNode']}, at most {max_percent:g}% allowed")

    return Policy(name, f"no more than {max_percent:g}% of a route's weight to a canary node", check)


def _builtin_rules() -> dict[str, tuple[str, Callable[[str, Mapping[str, Any]], Policy]]]:
    def rule(description: str, **r: Any) -> tuple[str, Callable[[str, Mapping[str, Any]], Policy]]:
        return description, lambda name, params: rule_policy(name, {**r, **params}, description)

    def retries(name: str, params: Mapping[str, Any]) -> Policy:
        limit = int(params.get("maxRetries", 3))
        bounded = rule_policy(name, {"kinds": ["Route"], "path":
                                     f"spec.{ROUTE_KEYS}.retryPolicy?.maxRetries", "max": limit})
        timed = rule_policy(name, {"kinds": ["Route"], "path":
                                   f"spec.{ROUTE_KEYS}.retryPolicy?.perRetryTimeout", "exists": True,
                                   "message": "a retry policy needs a perRetryTimeout"})

        def check(doc: Mapping[str, Any]) -> Iterator[Violation]:
            yield from bounded.check(doc)
            yield from timed.check(doc)

        return Policy(name, f"retries at most {limit}, each with a timeout", check)

    return {
        "listener-tls-strict": rule(
            "every listener of every virtual node and gateway terminates TLS in STRICT mode",
            kinds=["VirtualNode", "VirtualGateway"], path="spec.listeners[*].tls.mode",
            equals="STRICT"),
        "route-timeout": rule(
            "every HTTP, HTTP/2 and gRPC route sets a per-request timeout",
            kinds=["Route"], path=f"spec.{ROUTE_KEYS}.timeout.perRequest", exists=True),
        "retries-bounded": ("retries at most maxRetries (default 3), each with a timeout", retries),
        "node-health-checks": rule(
            "every listener of every virtual node has an active health check",
            kinds=["VirtualNode"], path="spec.listeners[*].healthCheck", exists=True),
        "access-logs": rule(
            "every virtual node and gateway writes an access log",
            kinds=["VirtualNode", "VirtualGateway"], path="spec.logging.accessLog.file.path",
            exists=True),
        "canary-weight": ("no route sends more than maxPercent (default 10) of its weight to a "
                          "node labelled canary (name matching `nodes`, default *canary*, or "
                          "Cloud Map attribute canary=true)", _canary_weight),
    }


BUILTINS = _builtin_rules()


# -- loading ------------------------------------------------------------------------------


def _python_policy(spec: str, base: str, name: str) -> Policy:
    path, sep, function = spec.rpartition(":")
    if not sep or not path:
        raise ValueError(f"expected FILE.py:FUNCTION, got {spec!r}")
    path = os.path.join(base, path)
    module_spec = importlib.util.spec_from_file_location(f"meshplane_policy_{abs(hash(path))}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ValueError(f"{path} has no function {function!r}")

    def check(doc: Mapping[str, Any]) -> Iterator[Violation]:
        for found in fn(doc) or ():
            if isinstance(found, Violation):
                yield found
            else:
                resource, where, message = found
                yield Violation(name, str(resource), str(where), str(message))

    return Policy(name, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "", check)


def load_policies(path: str) -> list[Policy]:
    """The policies of one policy file; ConfigError names the file, entry and field."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([Problem(path, "", "", f"cannot read policies: {exc}")]) from None
    entries = doc.get("policies") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ConfigError([Problem(path, "", "policies", "expected a list of policies")])
    base = os.path.dirname(os.path.abspath(path))
    out: list[Policy] = []
    problems: list[Problem] = []
    for i, entry in enumerate(entries):
        where = f"policies[{i}]"
        if not isinstance(entry, dict):
            problems.append(Problem(path, "", where, "expected a mapping"))
            continue
        params = entry.get("with") or {}
        try:
            if "use" in entry:
                builtin = BUILTINS.get(str(entry["use"]))
                if builtin is None:
                    problems.append(Problem(path, "", f"{where}.use", f"unknown built-in policy "
                                            f"{entry['use']!r}: expected one of {', '.join(BUILTINS)}"))
                    continue
                out.append(builtin[1](str(entry.get("name") or entry["use"]), params))
            elif "python" in entry:
                name = str(entry.get("name") or entry["python"])
                out.append(_python_policy(str(entry["python"]), base, name))
            elif "path" in entry:
                bad = [k for k in entry if k not in {"name", "description", "kinds", "names",
                                                      "path", "message", *_CHECKS}]
                if bad or not entry.get("name"):
                    problems.append(Problem(path, "", where, "a rule needs name and path, and only "
                                            f"kinds, names, message and one of {', '.join(_CHECKS)}"
                                            + (f" (unknown: {', '.join(map(str, bad))})" if bad else "")))
                    continue
                out.append(rule_policy(str(entry["name"]), entry))
            else:
                problems.append(Problem(path, "", where, "expected use:, python: or a rule (path:)"))
        except Exception as exc:  # the user's Python or parameters: say where
            problems.append(Problem(path, "", where, f"{type(exc).__name__}: {exc}"))
    if problems:
        raise ConfigError(problems)
    return out


def load_policies_for(paths: Sequence[str] | None = None) -> list[Policy]:
    """The policies of `paths` (policy files), else of `$MESHPLANE_POLICY` (os.pathsep-separated
    policy files); none when neither names any."""
    files = list(paths or [])
    if not files and os.environ.get(POLICY_ENV):
        files = [p for p in os.environ[POLICY_ENV].split(os.pathsep) if p]
    return [p for f in files for p in load_policies(f)]


def check_document(doc: Mapping[str, Any], policies: Iterable[Policy],
                   origins: Mapping[str, str] | None = None) -> list[Violation]:
    """Every violation of `policies` by version document `doc`; `origins` maps a resource
    label to the file it came from, for the violation's `file`."""
    out: list[Violation] = []
    for policy in policies:
        for v in policy.check(doc):
            file = v.file or (origins or {}).get(v.resource, "")
            out.append(Violation(v.policy, v.resource, v.field, v.message, file))
    return out


def to_sarif(violations: Sequence[Violation], policies: Sequence[Policy]) -> dict[str, Any]:
    """SARIF 2.1.0 (what code-scanning tools read): one rule per policy, one result per
    violation, located in its file with the resource and field as the logical location."""
    rules = [{"id": p.name, "shortDescription": {"text": p.description or p.name}}
             for p in policies]
    known = {p.name for p in policies}
    rules += [{"id": n, "shortDescription": {"text": n}}
              for n in sorted({v.policy for v in violations} - known)]
    results = []
    for v in violations:
        location: dict[str, Any] = {"logicalLocations": [
            {"name": v.field, "fullyQualifiedName": f"{v.resource}.{v.field}", "kind": "member"}]}
        if v.file:
            location["physicalLocation"] = {"artifactLocation": {"uri": v.file}}
        results.append({"ruleId": v.policy, "level": "error",
                        "message": {"text": f"{v.resource}: {v.field}: {v.message}"},
                        "locations": [location]})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "meshplane", "rules": rules}},
                  "results": results}],
    }
