"""Size, depth and node limits of the loaders (docs/config.md, "Limits").

Every file over a limit is refused as one ConfigError naming the file; nothing else (no
RecursionError, no MemoryError) may come out of `load_text`, `import_text` or `parse_documents`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from meshplane.config.loaders import import_text, load_text
from meshplane.config.loaders._text import MAX_DEPTH, MAX_NODES, MAX_TEXT_CHARS, parse_documents
from meshplane.errors import ConfigError

LOADERS: list[Callable[[str, str], Any]] = [load_text, import_text, parse_documents]


def nested_json(depth: int) -> str:
    return '{"mesh": ' + '{"a": ' * (depth - 1) + "1" + "}" * depth


def nested_yaml_flow(depth: int) -> str:
    return "mesh: " + "[" * (depth - 1) + "x" + "]" * (depth - 1)


def nested_yaml_block(depth: int) -> str:
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth - 1)) + f"{'  ' * (depth - 1)}k: 1\n"


def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def refused(loader: Callable[[str, str], Any], text: str) -> str:
    with pytest.raises(ConfigError) as info:
        loader(text, "limits.yaml")
    problems = info.value.problems
    assert len(problems) == 1 and problems[0].file == "limits.yaml"
    return problems[0].message


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 200_000])
def test_deep_json_is_refused(loader: Callable[[str, str], Any], depth: int) -> None:
    message = refused(loader, nested_json(depth))
    assert message == f"objects and arrays nest deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("make", [nested_yaml_flow, nested_yaml_block])
def test_deep_yaml_is_refused_with_the_line(loader: Callable[[str, str], Any], make: Callable[[int], str]) -> None:
    message = refused(loader, make(MAX_DEPTH + 1))
    assert message.startswith(f"mappings and lists nest deeper than {MAX_DEPTH} levels (at line ")


@pytest.mark.parametrize("loader", LOADERS)
def test_very_deep_yaml_is_refused_not_a_recursion_error(loader: Callable[[str, str], Any]) -> None:
    message = refused(loader, nested_yaml_flow(100_000))
    assert f"nest deeper than {MAX_DEPTH} levels" in message


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse_documents(nested_json(MAX_DEPTH), "ok.json")[0]["mesh"]
    assert parse_documents(nested_yaml_flow(MAX_DEPTH), "ok.yaml")[0]["mesh"]
    assert parse_documents(nested_yaml_block(MAX_DEPTH), "ok.yaml")[0]["k0"]


@pytest.mark.parametrize("loader", LOADERS)
def test_an_alias_bomb_is_refused(loader: Callable[[str, str], Any]) -> None:
    message = refused(loader, alias_bomb())
    assert message.startswith(f"the document expands to more than {MAX_NODES:,} values")


def test_aliases_count_as_what_they_repeat() -> None:
    # 10**5 strings plus their lists: under the budget with 5 levels, over it with 6.
    assert parse_documents(alias_bomb(5), "ok.yaml")
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_documents(alias_bomb(6), "bomb.yaml")


def test_an_alias_deepens_where_it_is_used() -> None:
    anchor = "a: &a " + "[" * 30 + "]" * 30 + "\n"
    assert parse_documents(anchor + "b: " + "[" * 33 + "*a" + "]" * 33, "ok.yaml")
    with pytest.raises(ConfigError, match=f"nest deeper than {MAX_DEPTH} levels"):
        parse_documents(anchor + "b: " + "[" * 34 + "*a" + "]" * 34, "deep.yaml")


@pytest.mark.parametrize("loader", LOADERS)
def test_a_recursive_alias_is_refused(loader: Callable[[str, str], Any]) -> None:
    assert refused(loader, "mesh: &a [1, *a]\n").startswith("alias *a refers to a node that contains it")


def test_merge_keys_and_ordinary_aliases_still_load() -> None:
    doc = parse_documents("base: &b {port: 8080}\nnode:\n  <<: *b\n  name: x\nagain: *b\n", "ok.yaml")[0]
    assert doc["node"] == {"port": 8080, "name": "x"} and doc["again"] == {"port": 8080}


@pytest.mark.parametrize("loader", LOADERS)
def test_a_file_over_the_size_limit_is_refused_before_parsing(loader: Callable[[str, str], Any]) -> None:
    text = "# " + "x" * MAX_TEXT_CHARS
    message = refused(loader, text)
    assert message == f"the file is larger than the limit of {MAX_TEXT_CHARS:,} characters ({len(text):,})"


def test_wide_json_over_the_node_budget_is_refused() -> None:
    text = json.dumps({"mesh": [0] * (MAX_NODES + 1)})
    assert refused(parse_documents, text) == f"the document holds more than {MAX_NODES:,} values"
