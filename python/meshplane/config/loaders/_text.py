"""Text to documents: JSON or (multi-document) YAML, told apart by content.

The YAML loader is safe and also reads CloudFormation's short tags (`!Ref X`, `!Sub s`,
`!GetAtt A.B`, `!If [...]` ...) as the long form (`{"Ref": "X"}`, `{"Fn::Sub": "s"}`, ...), so
one parser serves every shape. Syntax errors become a Problem with line and column.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from meshplane.errors import ConfigError, Problem


class _YamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs
    """SafeLoader plus CloudFormation short-form tags."""


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


def parse_documents(text: str, source: str) -> list[Any]:
    """The non-empty documents of `text`; ConfigError (one syntax problem) if it is not parseable."""
    stripped = text.lstrip()
    json_error: json.JSONDecodeError | None = None
    if stripped.startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            json_error = exc
    try:
        docs = [d for d in yaml.load_all(text, Loader=_YamlLoader) if d is not None]  # noqa: S506
    except yaml.YAMLError as exc:
        if json_error is not None:
            message = f"invalid JSON at line {json_error.lineno}, column {json_error.colno}: {json_error.msg}"
        else:
            message = _yaml_message(exc)
        raise ConfigError([Problem(source, "", "", message)]) from None
    if not docs:
        raise ConfigError([Problem(source, "", "", "the file holds no document")])
    return docs


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
