"""CloudFormation templates: `AWS::AppMesh::*` resources, other resources ignored.

`Properties.Spec` is PascalCase in CloudFormation and becomes App Mesh's camelCase
(`AWSCloudMap` -> `awsCloudMap`, `HTTP2` -> `http2`). Intrinsic functions resolve best-effort,
without AWS: `Ref` to a parameter gives its Default (else its first AllowedValue, else the
parameter's name), pseudo parameters get fixed sample values, `Fn::GetAtt X.Attr` gives
resource X's property Attr (so `!GetAtt Node.VirtualNodeName` is that node's name), `Fn::Sub`
substitutes those, and `Fn::If` evaluates the template's Conditions with the same values.
What cannot be known offline (`Fn::ImportValue`, ARNs) becomes a readable placeholder string.
Strings become integers or booleans where the spec wants them, as CloudFormation converts.
A function with malformed arguments, or a condition that depends on itself, is a problem of the
resource that uses it (`Properties: cannot evaluate Fn::If: ...`), never an exception.
"""

from __future__ import annotations

import re
from typing import Any

from meshplane.config.model import Resource
from meshplane.config.schema import coerce
from meshplane.config.specs import SPEC_OF_KIND
from meshplane.errors import Problem

TYPES = {
    "AWS::AppMesh::Mesh": ("Mesh", "MeshName", None),
    "AWS::AppMesh::VirtualService": ("VirtualService", "VirtualServiceName", None),
    "AWS::AppMesh::VirtualRouter": ("VirtualRouter", "VirtualRouterName", None),
    "AWS::AppMesh::Route": ("Route", "RouteName", "VirtualRouterName"),
    "AWS::AppMesh::VirtualNode": ("VirtualNode", "VirtualNodeName", None),
    "AWS::AppMesh::VirtualGateway": ("VirtualGateway", "VirtualGatewayName", None),
    "AWS::AppMesh::GatewayRoute": ("GatewayRoute", "GatewayRouteName", "VirtualGatewayName"),
}
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "stack",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/stack/0",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}
NO_VALUE = object()  # AWS::NoValue: the property or list item disappears


class IntrinsicError(Exception):
    """An intrinsic function that cannot be evaluated; the message says which and why."""


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}
_SUB = re.compile(r"\$\{(!?)([^}]*)\}")


def is_cfn(doc: Any) -> bool:
    return isinstance(doc, dict) and ("Resources" in doc or "AWSTemplateFormatVersion" in doc)


def camel(key: str) -> str:
    """PascalCase -> camelCase, lowering a leading acronym: AWSCloudMap -> awsCloudMap, TLS -> tls."""
    run = len(key) - len(key.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    if run == 0:
        return key
    if run > 1 and run < len(key) and key[run].islower():
        run -= 1  # the last capital starts the next word
    return key[:run].lower() + key[run:]


def camel_keys(value: Any) -> Any:
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    if isinstance(value, dict):
        return {camel(str(k)): camel_keys(v) for k, v in value.items()}
    return value


class Template:
    """Offline evaluation of a template's intrinsic functions."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.parameters = _dict(doc.get("Parameters"))
        self.conditions = _dict(doc.get("Conditions"))
        self.mappings = _dict(doc.get("Mappings"))
        self.resources = _dict(doc.get("Resources"))
        self._resolving: set[tuple[str, str]] = set()  # GetAtt cycles end in a placeholder
        self._deciding: set[str] = set()  # conditions being evaluated: a cycle is an error

    def parameter(self, name: str) -> Any:
        param = _dict(self.parameters.get(name))
        allowed = param.get("AllowedValues")
        value = param.get("Default", allowed[0] if isinstance(allowed, list) and allowed else name)
        if (
            param.get("Type") == "Number"
            and isinstance(value, str)
            and re.fullmatch(r"-?\d+", value)
        ):
            return int(value)
        return value

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameter(name)
        return name  # a resource: its physical id is unknown offline; the logical id stands in

    def get_att(self, name: str, attr: str) -> Any:
        props = _dict(_dict(self.resources.get(name)).get("Properties"))
        if attr in props and (name, attr) not in self._resolving:
            self._resolving.add((name, attr))
            try:
                return self.resolve(props[attr])
            finally:
                self._resolving.discard((name, attr))
        return f"{name}.{attr}"  # Arn, Uid, ...: known only once deployed

    def condition(self, name: str) -> bool:
        if name in self._deciding:
            raise IntrinsicError(f"condition {name!r} depends on itself")
        self._deciding.add(name)
        try:
            return bool(self.resolve(self.conditions.get(name, False)))
        finally:
            self._deciding.discard(name)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if isinstance(key, str) and key.startswith("Fn::"):
                return self._function(key[4:], arg)
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def _function(self, fn: str, arg: Any) -> Any:
        try:
            return self._evaluate(fn, arg)
        except IntrinsicError:
            raise
        except (TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
            # Arguments of the wrong shape (`Fn::If: x`, `Fn::Select: [a]`, ...).
            shown = repr(arg)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise IntrinsicError(f"cannot evaluate Fn::{fn} with {shown}: {exc}") from None

    def _evaluate(self, fn: str, arg: Any) -> Any:
        if fn == "GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else [self.resolve(a) for a in arg]
            return self.get_att(str(parts[0]), str(parts[1]) if len(parts) > 1 else "")
        if fn == "Sub":
            text, local = (arg[0], self.resolve(arg[1])) if isinstance(arg, list) else (arg, {})
            return _SUB.sub(lambda m: self._sub_var(m, local), str(text))
        if fn == "If":
            cond, yes, no = arg
            return self.resolve(yes if self.condition(str(cond)) else no)
        if fn == "Equals":
            a, b = (self.resolve(x) for x in arg)
            return str(a) == str(b)
        if fn == "Not":
            return not self.resolve(arg[0])
        if fn == "And":
            return all(self.resolve(a) for a in arg)
        if fn == "Or":
            return any(self.resolve(a) for a in arg)
        if fn == "Join":
            sep, items = arg
            return str(sep).join(str(v) for v in self.resolve(items))
        if fn == "Select":
            index, items = self.resolve(arg)
            return items[int(index)] if isinstance(items, list) and int(index) < len(items) else ""
        if fn == "Split":
            sep, text = self.resolve(arg)
            return str(text).split(str(sep))
        if fn == "FindInMap":
            m, k1, k2 = (str(self.resolve(a)) for a in arg)
            return _dict(_dict(self.mappings.get(m)).get(k1)).get(k2, f"{m}.{k1}.{k2}")
        if fn == "GetAZs":
            return ["us-east-1a", "us-east-1b", "us-east-1c"]
        if fn == "ImportValue":
            return f"imported:{self.resolve(arg)}"
        return self.resolve(arg)  # Base64, Cidr and the like: the argument stands in

    def _sub_var(self, m: re.Match[str], local: dict[str, Any]) -> str:
        literal, var = m.group(1), m.group(2)
        if literal:
            return "${" + var + "}"
        if var in local:
            return str(local[var])
        if "." in var and var not in PSEUDO:
            name, attr = var.split(".", 1)
            return str(self.get_att(name, attr))
        value = self.ref(var)
        return "" if value is NO_VALUE else str(value)


def load(doc: dict[str, Any], source: str) -> tuple[list[Resource], list[Problem]]:
    template = Template(doc)
    resources: list[Resource] = []
    problems: list[Problem] = []
    for logical_id, res in _dict(doc.get("Resources")).items():
        if not isinstance(res, dict) or not isinstance(res.get("Type"), str) or res["Type"] not in TYPES:
            continue
        kind, name_key, parent_key = TYPES[res["Type"]]
        try:
            props = template.resolve(res.get("Properties") or {})
        except IntrinsicError as exc:
            problems.append(Problem(source, f"{kind} (logical id {logical_id})", "Properties", str(exc)))
            continue
        except RecursionError:
            problems.append(Problem(source, f"{kind} (logical id {logical_id})", "Properties",
                                    "intrinsic functions refer to each other too deeply to evaluate"))
            continue
        if not isinstance(props, dict):
            problems.append(Problem(source, f"{kind} (logical id {logical_id})", "Properties",
                                    "expected an object"))
            continue
        name = props.get(name_key, logical_id)
        spec = coerce(SPEC_OF_KIND[kind], camel_keys(props.get("Spec") or {}))
        parent = props.get(parent_key) if parent_key else None
        label = f'{kind} "{name}" (logical id {logical_id})'
        if not isinstance(spec, dict):
            problems.append(Problem(source, label, "Properties.Spec", "expected an object"))
            continue
        resources.append(
            Resource(kind, str(name), spec, str(parent) if parent is not None else None)
        )
    return resources, problems


def mesh_names(doc: dict[str, Any]) -> list[str]:
    """The `MeshName` each App Mesh resource of the template gives, resolved offline."""
    template = Template(doc)
    names = []
    for res in (doc.get("Resources") or {}).values():
        if isinstance(res, dict) and res.get("Type") in TYPES and res["Type"] != "AWS::AppMesh::Mesh":
            name = template.resolve((res.get("Properties") or {}).get("MeshName"))
            # An imported stack output is not known offline: it names no mesh.
            if isinstance(name, str) and name and not name.startswith("imported:"):
                names.append(name)
    return names
