"""Text to documents: JSON or (multi-document) YAML, told apart by content.

The YAML loader (`_yaml`, imported with the first text that is not JSON) is safe and also
reads CloudFormation's short tags (`!Ref X`, `!Sub s`, `!GetAtt A.B`, `!If [...]` ...) as the
long form (`{"Ref": "X"}`, `{"Fn::Sub": "s"}`, ...), so one parser serves every shape. Syntax
errors become a Problem with line and column.

Limits (docs/config.md, "Limits"): a file is refused, as one ConfigError naming it, before any
recursive code sees it when it holds more than `MAX_TEXT_CHARS` characters, nests collections
deeper than `MAX_DEPTH`, or would expand to more than `MAX_NODES` values (YAML aliases count
as the nodes they stand for, so an alias bomb, "billion laughs", is refused; an alias that
refers to a node containing it is refused too). Why: the parsers, validation and compilation
are recursive, and a RecursionError or MemoryError must never escape a loader. YAML is
checked while it is composed, before the recursion goes deeper than the limit; JSON is parsed
by the C decoder (which raises RecursionError rather than crash) and then measured with an
explicit stack.
"""

from __future__ import annotations

import json
from typing import Any

from meshplane.errors import ConfigError, Problem

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_TEXT_CHARS", "parse_documents"]

MAX_TEXT_CHARS = 16 * 1024 * 1024
"""Largest file accepted, in characters (16 MiB of ASCII; real meshes are well under 1 MiB)."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted (real files nest fewer than 20 levels)."""

MAX_NODES = 1_000_000
"""Most values (mapping keys, values and list items, aliases expanded) one file may hold."""


def _measure(doc: Any) -> str | None:
    """What limit a parsed (JSON) document exceeds, or None; an explicit stack, no recursion."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"the document holds more than {MAX_NODES:,} values"
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return f"objects and arrays nest deeper than {MAX_DEPTH} levels"
            children = value.values() if isinstance(value, dict) else value
            nodes += len(value) if isinstance(value, dict) else 0  # keys count as values
            stack.extend((child, depth + 1) for child in children)
    return None


def parse_documents(text: str, source: str) -> list[Any]:
    """The non-empty documents of `text`; ConfigError (one problem, naming `source`) if it is
    not parseable or exceeds a limit. Raises nothing else."""

    def refuse(message: str) -> ConfigError:
        return ConfigError([Problem(source, "", "", message)])

    if len(text) > MAX_TEXT_CHARS:
        raise refuse(f"the file is larger than the limit of {MAX_TEXT_CHARS:,} characters ({len(text):,})")
    try:
        return _parse(text, refuse)
    except (RecursionError, MemoryError) as exc:
        # Backstop: the limits above should make these unreachable.
        raise refuse(f"the document is too deeply nested or too large to load ({type(exc).__name__})") from None


def _parse(text: str, refuse: Any) -> list[Any]:
    stripped = text.lstrip()
    json_error: json.JSONDecodeError | None = None
    if stripped.startswith(("{", "[")):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            json_error = exc
        except RecursionError:
            raise refuse(f"objects and arrays nest deeper than {MAX_DEPTH} levels") from None
        else:
            exceeded = _measure(doc)
            if exceeded is not None:
                raise refuse(exceeded)
            return [doc]
    # NOTE: PyYAML (about 1.1 MiB resident) loads with the first text that is not JSON, so a
    # proxy whose config is JSON never loads it (benches/README.md, "Memory, fourth pass").
    from meshplane.config.loaders import _yaml

    try:
        docs = _yaml.parse(text)
    except _yaml.LimitExceeded as exc:
        raise refuse(str(exc)) from None
    except _yaml.InvalidYaml as exc:
        if json_error is not None:
            message = f"invalid JSON at line {json_error.lineno}, column {json_error.colno}: {json_error.msg}"
        else:
            message = str(exc)
        raise refuse(message) from None
    if not docs:
        raise refuse("the file holds no document")
    return docs
