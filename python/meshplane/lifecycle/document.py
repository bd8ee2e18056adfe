"""A mesh's config as one version document, its content hash, and semantic diff and patch.

A version document is `{"mesh": NAME, "resources": [native resource entries]}` with the
resources in a canonical order (App Mesh kind order, then parent, then name), so the same mesh
read from files in any order has the same content hash. `diff(old, new)` lists the resources
added, removed and changed, each change as field paths with old and new values (not a text
diff); `patch(old, diff(old, new)) == new`.

Pure data: imports the standard library and `meshplane.config.model` only (no trio, no core).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshplane.config.model import KINDS, PARENT_KEY, Resource

__all__ = [
    "ABSENT",
    "FieldChange",
    "ResourceChange",
    "content_hash",
    "diff",
    "document_of",
    "format_path",
    "patch",
    "resource_key",
    "resources_of",
]

Path = tuple[str | int, ...]
Key = tuple[str, str, str]  # (kind, parent or "", name)


class _Absent:
    """The value at a path that does not exist (a field added or removed)."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def resource_key(entry: Mapping[str, Any]) -> Key:
    """(kind, parent, name) of a native resource entry; parent is "" when it has none."""
    kind = str(entry.get("kind", ""))
    parent = entry.get(PARENT_KEY[kind]) if kind in PARENT_KEY else None
    return kind, str(parent or ""), str(entry.get("name", ""))


def _order(key: Key) -> tuple[int, str, str]:
    kind, parent, name = key
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), parent, name)


def document_of(mesh: str, resources: Iterable[Resource]) -> dict[str, Any]:
    """The version document of `resources` as mesh `mesh` (canonical order)."""
    entries = [json.loads(json.dumps(r.to_native())) for r in resources]
    entries.sort(key=lambda e: _order(resource_key(e)))
    return {"mesh": mesh, "resources": entries}


def resources_of(doc: Mapping[str, Any]) -> dict[Key, dict[str, Any]]:
    """The document's resources by key."""
    return {resource_key(e): e for e in doc.get("resources") or []}


def canonical_bytes(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(doc: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `doc` (hex): equal hashes mean equal configs."""
    return hashlib.sha256(canonical_bytes(doc)).hexdigest()


def format_path(path: Path) -> str:
    """("spec", "listeners", 0, "port") -> "spec.listeners[0].port"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass(frozen=True)
class FieldChange:
    """One field of a resource: `old` or `new` is ABSENT when the field was added or removed."""

    path: Path
    old: Any
    new: Any

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": format_path(self.path)}
        if self.old is not ABSENT:
            out["old"] = self.old
        if self.new is not ABSENT:
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class ResourceChange:
    """A resource "added", "removed" or "changed"; `fields` lists what changed in it."""

    op: str
    kind: str
    parent: str
    name: str
    fields: tuple[FieldChange, ...] = field(default_factory=tuple)
    resource: dict[str, Any] | None = None  # the whole entry, for "added"

    @property
    def label(self) -> str:
        return Resource(self.kind, self.name, parent=self.parent or None).label

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "kind": self.kind, "name": self.name}
        if self.parent:
            out["parent"] = self.parent
        if self.op == "changed":
            out["fields"] = [f.to_json() for f in self.fields]
        elif self.op == "added":
            out["resource"] = self.resource
        return out


def _field_changes(old: Any, new: Any, path: Path) -> list[FieldChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _field_changes(old.get(key, ABSENT), new.get(key, ABSENT), (*path, key))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _field_changes(a, b, (*path, i))
        return out
    # NOTE: equal as the content hash sees them: 0.0 == -0.0, but their JSON differs.
    if old == new and type(old) is type(new) and (
        type(old) is not float or math.copysign(1.0, old) == math.copysign(1.0, new)
    ):
        return []
    return [FieldChange(path, old, new)]


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ResourceChange]:
    """Resources of `new` that `old` lacks ("added"), the reverse ("removed") and those in
    both whose entries differ ("changed", with a `FieldChange` per leaf that differs; a list
    whose length changed is one change). A changed mesh name is a change of the pseudo
    resource ("Mesh name", "", "")."""
    before, after = resources_of(old), resources_of(new)
    changes: list[ResourceChange] = []
    if old.get("mesh") != new.get("mesh"):
        changes.append(ResourceChange("changed", "mesh", "", "", (
            FieldChange(("mesh",), old.get("mesh", ABSENT), new.get("mesh", ABSENT)),)))
    for key in sorted(set(before) | set(after), key=_order):
        kind, parent, name = key
        if key not in before:
            changes.append(ResourceChange("added", kind, parent, name, resource=after[key]))
        elif key not in after:
            changes.append(ResourceChange("removed", kind, parent, name))
        else:
            fields = _field_changes(before[key], after[key], ())
            if fields:
                changes.append(ResourceChange("changed", kind, parent, name, tuple(fields)))
    return changes


def _set(target: Any, path: Sequence[str | int], value: Any) -> Any:
    """`target` with `value` at `path` (ABSENT deletes); copies along the path."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(target, list):
        copy_list = list(target)
        assert isinstance(head, int)
        copy_list[head] = _set(copy_list[head], rest, value)
        return copy_list
    copy = dict(target) if isinstance(target, dict) else {}
    child = _set(copy.get(head, {}), rest, value)
    if child is ABSENT:
        copy.pop(head, None)
    else:
        copy[head] = child
    return copy


def patch(old: Mapping[str, Any], changes: Iterable[ResourceChange]) -> dict[str, Any]:
    """`old` with `changes` (from `diff(old, new)`) applied: the new document."""
    mesh = old.get("mesh")
    entries = resources_of(old)
    for change in changes:
        key = (change.kind, change.parent, change.name)
        if change.kind == "mesh":
            mesh = change.fields[0].new
        elif change.op == "added":
            assert change.resource is not None
            entries[key] = change.resource
        elif change.op == "removed":
            entries.pop(key, None)
        else:
            entry: Any = entries[key]
            for f in change.fields:
                entry = _set(entry, f.path, f.new)
            entries[key] = entry
    out: dict[str, Any] = {"mesh": mesh} if mesh is not ABSENT else {}
    out["resources"] = [entries[k] for k in sorted(entries, key=_order)]
    return out
