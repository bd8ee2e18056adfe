"""Declarative shapes of config documents and the checker that walks them.

A shape says what a value must be (`Int(1, 65535)`, `Enum("s", "ms")`, `Obj({...})`); `check`
returns every mismatch as (field path, message), never stopping at the first. In `Obj`, a key
ending in `*` is required, mirroring the `*` of spec/appmesh.md. The App Mesh shapes themselves
are in `specs`. Imports only the standard library.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Issue = tuple[str, str]  # (dotted field path with indices, what was expected)

LONG_MAX = 2**63 - 1
U32_MAX = 2**32 - 1


def show(value: Any) -> str:
    """A short rendering of a user value for messages: JSON for scalars, the type otherwise."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def suggest(word: str, choices: list[str]) -> str:
    """' (did you mean "x"?)' when a choice is close to `word`, else ''."""
    lowered = {c.lower(): c for c in choices}
    close = [lowered[word.lower()]] if word.lower() in lowered else []
    if not close:
        import difflib  # only a config with a mistake in it needs it (~0.15 MiB)

        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Shape(abc.ABC):
    """Base of all shapes."""

    @abc.abstractmethod
    def check(self, value: Any, path: str, out: list[Issue]) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str: ...

    def mismatch(self, value: Any, path: str, out: list[Issue]) -> None:
        out.append((path, f"expected {self.describe()}, got {show(value)}"))


@dataclass(frozen=True)
class Str(Shape):
    min_len: int = 1
    max_len: int | None = 255

    def describe(self) -> str:
        if self.max_len is None:
            return "a non-empty string" if self.min_len else "a string"
        return f"a string of {self.min_len}..{self.max_len} characters"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, str):
            self.mismatch(value, path, out)
        elif len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            out.append((path, f"expected {self.describe()}, got {len(value)} characters"))


@dataclass(frozen=True)
class Int(Shape):
    lo: int
    hi: int

    def describe(self) -> str:
        if self.hi >= LONG_MAX:
            return f"an integer >= {self.lo}"
        return f"an integer {self.lo}..{self.hi}"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not self.lo <= value <= self.hi:
            self.mismatch(value, path, out)


@dataclass(frozen=True)
class Num(Shape):
    lo: float
    hi: float

    def describe(self) -> str:
        return f"a number {self.lo}..{self.hi}"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not self.lo <= value <= self.hi:
            self.mismatch(value, path, out)


@dataclass(frozen=True)
class Bool(Shape):
    def describe(self) -> str:
        return "true or false"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, bool):
            self.mismatch(value, path, out)


class Enum(Shape):
    def __init__(self, *values: str) -> None:
        self.values = values

    def describe(self) -> str:
        return "one of " + ", ".join(self.values)

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if value not in self.values or not isinstance(value, str):
            hint = suggest(value, list(self.values)) if isinstance(value, str) else ""
            out.append((path, f"expected {self.describe()}, got {show(value)}{hint}"))


@dataclass(frozen=True)
class ListOf(Shape):
    item: Shape
    min_items: int = 0
    max_items: int | None = None

    def describe(self) -> str:
        if self.max_items is None:
            return f"a list of at least {self.min_items} item(s)" if self.min_items else "a list"
        return f"a list of {self.min_items}..{self.max_items} items"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, list):
            self.mismatch(value, path, out)
            return
        if len(value) < self.min_items or (
            self.max_items is not None and len(value) > self.max_items
        ):
            out.append((path, f"expected {self.describe()}, got {len(value)}"))
        for i, item in enumerate(value):
            self.item.check(item, join(path, i), out)


class Either(Shape):
    """A value that may take one of several shapes, chosen by its Python type (str vs object)."""

    def __init__(self, *shapes: tuple[type, Shape]) -> None:
        self.shapes = shapes

    def describe(self) -> str:
        return " or ".join(s.describe() for _, s in self.shapes)

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        for kind, shape in self.shapes:
            if isinstance(value, kind):
                shape.check(value, path, out)
                return
        self.mismatch(value, path, out)


def port_key(key: Any) -> int | None:
    """A mapping key naming a port: 8080 (YAML) or "8080" (JSON); None if it is not one."""
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    if isinstance(key, int) and not isinstance(key, bool) and 1 <= key <= 65535:
        return key
    return None


@dataclass(frozen=True)
class PortMap(Shape):
    """A mapping from port numbers to values of one shape (`proxy.ports`, `proxy.app`)."""

    value: Shape

    def describe(self) -> str:
        return f"a mapping of port -> {self.value.describe()}"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            self.mismatch(value, path, out)
            return
        for key, item in value.items():
            if port_key(key) is None:
                out.append(
                    (join(path, str(key)), f"expected a port 1..65535 as key, got {show(key)}")
                )
            else:
                self.value.check(item, join(path, str(key)), out)


@dataclass(frozen=True)
class NameMap(Shape):
    """A mapping from names (non-empty strings) to values of one shape (`proxy.sds.secrets`)."""

    value: Shape

    def describe(self) -> str:
        return f"a mapping of name -> {self.value.describe()}"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            self.mismatch(value, path, out)
            return
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                out.append((join(path, str(key)), f"expected a non-empty name as key, got {show(key)}"))
            else:
                self.value.check(item, join(path, key), out)


class Obj(Shape):
    """A mapping with known keys. `one_of`: exactly one of these keys; `exclusive`: at most one."""

    def __init__(
        self,
        fields: Mapping[str, Shape],
        *,
        one_of: tuple[str, ...] = (),
        exclusive: tuple[str, ...] = (),
    ) -> None:
        self.fields = {k.rstrip("*"): v for k, v in fields.items()}
        self.required = tuple(k.rstrip("*") for k in fields if k.endswith("*"))
        self.one_of = one_of
        self.exclusive = exclusive

    def describe(self) -> str:
        return "an object"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        if not isinstance(value, dict):
            self.mismatch(value, path, out)
            return
        for key, item in value.items():
            shape = self.fields.get(key) if isinstance(key, str) else None
            if shape is None:
                hint = suggest(str(key), list(self.fields))
                allowed = "" if hint else f" (expected one of: {', '.join(self.fields)})"
                out.append((join(path, str(key)), f"unknown field{hint}{allowed}"))
            else:
                shape.check(item, join(path, key), out)
        for key in self.required:
            if key not in value:
                out.append(
                    (
                        join(path, key),
                        f"required field is missing: expected {self.fields[key].describe()}",
                    )
                )
        if self.one_of:
            present = [k for k in self.one_of if k in value]
            if len(present) != 1:
                got = " and ".join(present) if present else "none"
                out.append((path, f"expected exactly one of {', '.join(self.one_of)}, got {got}"))
        present = [k for k in self.exclusive if k in value]
        if len(present) > 1:
            out.append(
                (
                    path,
                    f"expected at most one of {', '.join(self.exclusive)}, got {' and '.join(present)}",
                )
            )


def coerce(shape: Shape, value: Any) -> Any:
    """`value` with strings converted where the shape wants an integer or a boolean ("8080" ->
    8080, "true" -> True), as CloudFormation converts property values. Anything else is kept
    for `check` to report."""
    if isinstance(shape, Int) and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(shape, Bool) and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(shape, ListOf) and isinstance(value, list):
        return [coerce(shape.item, v) for v in value]
    if isinstance(shape, Obj) and isinstance(value, dict):
        return {k: coerce(shape.fields[k], v) if k in shape.fields else v for k, v in value.items()}
    if isinstance(shape, Either):
        return next(
            (coerce(s, value) for kind, s in shape.shapes if isinstance(value, kind)), value
        )
    return value


def check(shape: Shape, value: Any, path: str = "") -> list[Issue]:
    out: list[Issue] = []
    shape.check(value, path, out)
    return out


def prune(shape: Shape, value: Any, path: str = "") -> tuple[Any, list[str]]:
    """`value` without the object keys `shape` does not know, and the path of each dropped key,
    as the Kubernetes API server prunes a custom resource against its schema. Values of the
    wrong type are kept for `check` to report."""
    dropped: list[str] = []
    if isinstance(shape, Obj) and isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            field = shape.fields.get(key) if isinstance(key, str) else None
            if field is None:
                dropped.append(join(path, str(key)))
                continue
            out[key], more = prune(field, item, join(path, key))
            dropped += more
        return out, dropped
    if isinstance(shape, ListOf) and isinstance(value, list):
        items = []
        for i, item in enumerate(value):
            pruned, more = prune(shape.item, item, join(path, i))
            items.append(pruned)
            dropped += more
        return items, dropped
    if isinstance(shape, NameMap | PortMap) and isinstance(value, dict):
        mapped = {}
        for key, item in value.items():
            mapped[key], more = prune(shape.value, item, join(path, str(key)))
            dropped += more
        return mapped, dropped
    if isinstance(shape, Either):
        for kind, inner in shape.shapes:
            if isinstance(value, kind):
                return prune(inner, value, path)
    return value, dropped
