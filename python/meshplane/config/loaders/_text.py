"""Text to documents: JSON or (multi-document) YAML, told apart by content.

The YAML loader is safe and also reads CloudFormation's short tags (`!Ref X`, `!Sub s`,
`!GetAtt A.B`, `!If [...]` ...) as the long form (`{"Ref": "X"}`, `{"Fn::Sub": "s"}`, ...), so
one parser serves every shape. Syntax errors become a Problem with line and column.

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

import yaml

from meshplane.errors import ConfigError, Problem

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_TEXT_CHARS", "parse_documents"]

MAX_TEXT_CHARS = 16 * 1024 * 1024
"""Largest file accepted, in characters (16 MiB of ASCII; real meshes are well under 1 MiB)."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted (real files nest fewer than 20 levels)."""

MAX_NODES = 1_000_000
"""Most values (mapping keys, values and list items, aliases expanded) one file may hold."""


class _LimitExceeded(Exception):
    """A limit was exceeded while composing YAML; the message says which, and where."""


def _where(mark: Any) -> str:
    return "" if mark is None else f" (at line {mark.line + 1}, column {mark.column + 1})"


class _YamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs
    """SafeLoader plus CloudFormation short-form tags and the depth and node limits.

    `compose_node` is PyYAML's one recursive step, so counting there bounds the recursion: it
    raises `_LimitExceeded` before descending past `MAX_DEPTH`. An anchored node's size and
    height are remembered, so an alias costs what it expands to.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._reach = 0  # deepest level reached inside the node being composed
        self._nodes = 0
        self._open_anchors: set[str] = set()
        self._anchor_cost: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height)

    def _count(self, nodes: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _LimitExceeded(
                f"the document expands to more than {MAX_NODES:,} values (YAML aliases count as "
                f"the values they repeat){_where(mark)}"
            )

    def _check_depth(self, depth: int, mark: Any) -> None:
        if depth > MAX_DEPTH:
            raise _LimitExceeded(f"mappings and lists nest deeper than {MAX_DEPTH} levels{_where(mark)}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _LimitExceeded(
                    f"alias *{event.anchor} refers to a node that contains it{_where(event.start_mark)}"
                )
            cost = self._anchor_cost.get(event.anchor)
            if cost is not None:  # an undefined alias is PyYAML's own error
                nodes, height = cost
                self._check_depth(self._depth + height, event.start_mark)
                self._reach = max(self._reach, self._depth + height)
                self._count(nodes, event.start_mark)
            return super().compose_node(parent, index)
        # Only mappings and lists count as levels: a scalar adds no depth.
        depth = self._depth + (0 if isinstance(event, yaml.ScalarEvent) else 1)
        self._check_depth(depth, event.start_mark)
        self._count(1, event.start_mark)
        anchor = event.anchor
        outer_depth, outer_reach = self._depth, self._reach
        self._depth = self._reach = depth
        before = self._nodes
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            if anchor is not None:
                self._open_anchors.discard(anchor)
        if anchor is not None:
            self._anchor_cost[anchor] = (self._nodes - before + 1, self._reach - outer_depth)
        self._depth, self._reach = outer_depth, max(outer_reach, self._reach)
        return node


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        value = None
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_YamlLoader.add_multi_constructor("!", _cfn_tag)


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
    loader: _YamlLoader | None = None
    try:
        loader = _YamlLoader(text)  # the reader refuses control characters here already
        docs = []
        while loader.check_data():
            doc = loader.get_data()
            if doc is not None:
                docs.append(doc)
    except _LimitExceeded as exc:
        raise refuse(str(exc)) from None
    except yaml.YAMLError as exc:
        if json_error is not None:
            message = f"invalid JSON at line {json_error.lineno}, column {json_error.colno}: {json_error.msg}"
        else:
            message = _yaml_message(exc)
        raise refuse(message) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not docs:
        raise refuse("the file holds no document")
    return docs


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
