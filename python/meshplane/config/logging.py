"""Access logs: App Mesh `logging.accessLog.file` of the served VirtualNode or VirtualGateway
becomes `accessLog` on every listener the proxy opens, and its format is checked here, at load
time, against the Envoy command operators the core implements (`rust/src/accesslog/format.rs`
parses the same grammar and refuses the same strings).

Grammar (Envoy's): `%%` is a literal `%`; `%NAME%` is an operator; `REQ` and `RESP` take
`(HEADER)` or `(HEADER?FALLBACK)` and an optional `:N` maximum length. An unterminated `%` is an
error. Imports only `model`.
"""

from __future__ import annotations

import re
from typing import Any

from meshplane.config.model import Resource

Issue = tuple[str, str]

# Operators without arguments, in the order docs/config.md lists them.
OPERATORS = (
    "START_TIME",
    "RESPONSE_CODE",
    "RESPONSE_FLAGS",
    "RESPONSE_CODE_DETAILS",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "DURATION",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "ROUTE_NAME",
    "PROTOCOL",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_PEER_URI_SAN",
)
HEADER_OPERATORS = ("REQ", "RESP")  # %REQ(X)%, %REQ(X?Y)%, with an optional :N
PSEUDO_HEADERS = (":method", ":path", ":authority", ":scheme")  # REQ only
NUMERIC = ("RESPONSE_CODE", "BYTES_RECEIVED", "BYTES_SENT", "DURATION")  # bare numbers in JSON
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name (RFC 9110 token)
_HEADER_OP = re.compile(r"(?P<op>[A-Z_]+)\((?P<args>[^)]*)\)(?P<rest>.*)", re.DOTALL)
_BASE = "spec.logging.accessLog.file"


def access_log(resource: Resource | None) -> dict[str, Any] | None:
    """The snapshot listener's `accessLog` for the served node or gateway, or None."""
    if resource is None:
        return None
    file = ((resource.spec.get("logging") or {}).get("accessLog") or {}).get("file")
    if not file:
        return None
    out: dict[str, Any] = {"path": file["path"]}
    fmt = file.get("format") or {}
    if "text" in fmt:
        out["format"] = {"text": fmt["text"]}
    elif "json" in fmt:
        out["format"] = {"json": [{"key": f["key"], "value": f["value"]} for f in fmt["json"]]}
    return out


def access_log_issues(resource: Resource) -> list[Issue]:
    """Problems of a shape-checked node's or gateway's access-log config: path, operators of
    the format, duplicate JSON keys."""
    file = ((resource.spec.get("logging") or {}).get("accessLog") or {}).get("file")
    if not file:
        return []
    out: list[Issue] = []
    if not file["path"].strip():
        out.append((f"{_BASE}.path", "expected a file path, got only whitespace"))
    elif "\0" in file["path"]:
        out.append((f"{_BASE}.path", "expected a file path, got a NUL character"))
    fmt = file.get("format") or {}
    if "text" in fmt and (why := format_problem(fmt["text"])):
        out.append((f"{_BASE}.format.text", why))
    seen: dict[str, int] = {}
    for i, field in enumerate(fmt.get("json") or []):
        path = f"{_BASE}.format.json[{i}]"
        if field["key"] in seen:
            out.append(
                (f"{path}.key", f'duplicate key "{field["key"]}" (also json[{seen[field["key"]]}])')
            )
        seen.setdefault(field["key"], i)
        if why := format_problem(field["value"]):
            out.append((f"{path}.value", why))
    return out


def format_problem(text: str) -> str | None:
    """Why the core would refuse the format string `text`, or None. Only the first problem:
    later operators of a string with an error are hard to delimit reliably."""
    rest = text
    while (i := rest.find("%")) >= 0:
        rest = rest[i + 1 :]
        if rest.startswith("%"):
            rest = rest[1:]
            continue
        end = rest.find("%")
        if end < 0:
            return (
                f"unterminated command operator: no closing % after {_clip('%' + rest)}"
                ' (write %% for a literal "%")'
            )
        if why := operator_problem(rest[:end]):
            return why
        rest = rest[end + 1 :]
    return None


def operator_problem(body: str) -> str | None:
    """Why `%body%` is not an operator the core supports, or None."""
    if body in OPERATORS:
        return None
    match = _HEADER_OP.fullmatch(body)
    if match and match["op"] in HEADER_OPERATORS:
        return _header_problem(body, match["op"], match["args"], match["rest"])
    head, paren, args = body.partition("(")
    if head in OPERATORS:
        return f"%{head}% takes no argument, got %{body}% (custom formats are not supported)"
    if head in HEADER_OPERATORS and not paren:
        return f"%{head}% needs a header name: %{head}(NAME)%, e.g. %REQ(:PATH)%"
    if head in HEADER_OPERATORS:
        return f"missing ')' in %{body}%"
    choices = [*OPERATORS, *HEADER_OPERATORS]
    close = _close(head, choices)
    if close in HEADER_OPERATORS:
        hint = f"%{close}({args.split(')')[0] or 'NAME'})%"
    elif close:
        hint = f"%{close}%"
    else:
        return f"unsupported command operator %{body}%; supported: {_supported()}"
    return f'unsupported command operator %{body}% (did you mean "{hint}"?)'


def _header_problem(body: str, op: str, args: str, rest: str) -> str | None:
    if rest and not re.fullmatch(r":[0-9]+", rest):
        return f"expected an optional :LENGTH after the ')' of %{body}%, got {rest!r}"
    names = args.split("?")
    if len(names) > 2:
        return f"expected %{op}(NAME)% or %{op}(NAME?FALLBACK)%, got %{body}%"
    for name in names:
        if not name:
            return f"expected a header name in %{body}%"
        if op == "REQ" and name.lower() in PSEUDO_HEADERS:
            continue
        if not _TOKEN.fullmatch(name):
            if name.startswith(":"):
                allowed = ", ".join(PSEUDO_HEADERS) if op == "REQ" else "none"
                return f'unsupported pseudo-header "{name}" in %{body}% (supported: {allowed})'
            return f'expected a header name in %{body}%, got "{name}"'
    return None


def _close(word: str, choices: list[str]) -> str | None:
    upper = word.upper()
    if upper in choices:
        return upper
    import difflib  # only a config with a mistake in it needs it (~0.15 MiB)

    found = difflib.get_close_matches(upper, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _supported() -> str:
    return ", ".join(f"%{op}%" for op in OPERATORS) + ", %REQ(X)%, %RESP(X)%"


def _clip(text: str) -> str:
    return repr(text if len(text) <= 30 else text[:27] + "...")
