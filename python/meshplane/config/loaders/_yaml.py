"""YAML text to documents for `_text.parse_documents`: PyYAML's safe loader plus CloudFormation
short tags and the depth and node limits (`_text`'s docstring says why). Imported only when a
text is not JSON: PyYAML costs about 1.1 MiB resident, which a proxy with a JSON config never
pays."""

from __future__ import annotations

from typing import Any

import yaml

from meshplane.config.loaders._text import MAX_DEPTH, MAX_NODES

__all__ = ["InvalidYaml", "LimitExceeded", "parse"]


class InvalidYaml(Exception):
    """Not YAML; the message says why, with line and column when PyYAML knows them."""


class LimitExceeded(Exception):
    """A limit was exceeded while composing YAML; the message says which, and where."""


def _where(mark: Any) -> str:
    return "" if mark is None else f" (at line {mark.line + 1}, column {mark.column + 1})"


class _YamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs
    """SafeLoader plus CloudFormation short-form tags and the depth and node limits.

    `compose_node` is PyYAML's one recursive step, so counting there bounds the recursion: it
    raises `LimitExceeded` before descending past `MAX_DEPTH`. An anchored node's size and
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
            raise LimitExceeded(
                f"the document expands to more than {MAX_NODES:,} values (YAML aliases count as "
                f"the values they repeat){_where(mark)}"
            )

    def _check_depth(self, depth: int, mark: Any) -> None:
        if depth > MAX_DEPTH:
            raise LimitExceeded(f"mappings and lists nest deeper than {MAX_DEPTH} levels{_where(mark)}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise LimitExceeded(
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


def parse(text: str) -> list[Any]:
    """The non-None documents of `text`; LimitExceeded or InvalidYaml if it cannot be loaded."""
    loader: _YamlLoader | None = None
    try:
        loader = _YamlLoader(text)  # the reader refuses control characters here already
        docs = []
        while loader.check_data():
            doc = loader.get_data()
            if doc is not None:
                docs.append(doc)
    except yaml.YAMLError as exc:
        raise InvalidYaml(_yaml_message(exc)) from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
