"""Loaders: one entry point per question, whatever shape the file holds.

- `load_file` / `load_text`: a meshplane file (native shape) -> validated MeshConfig.
- `import_resources` / `import_text`: App Mesh resources from any shape (native, AWS CLI/API
  JSON, Kubernetes CRDs, CloudFormation) -> list[Resource], not yet validated as a mesh (a file
  may hold part of one); `to_native` wraps them into a meshplane file.
- `import_paths`: the same for several files and directories read as one mesh (references
  resolve across files, duplicates name both places), with the mesh names the files give and
  the fields dropped as Kubernetes would drop them.

The shape is told from content, not from the file name. Reading the named file is the only I/O
of `meshplane.config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from meshplane.config.loaders._text import parse_documents
from meshplane.config.loaders.native import Imported, from_dict, parse_entry, to_native
from meshplane.config.model import PARENT_KEY, PARENT_KIND, MeshConfig, Resource
from meshplane.errors import ConfigError, Problem

SHAPES = {
    "native": "a meshplane file",
    "aws": "App Mesh JSON (AWS CLI/API)",
    "k8s": "Kubernetes App Mesh custom resources",
    "cfn": "a CloudFormation template",
}


def detect(docs: list[Any]) -> str:
    """ "native", "cfn", "k8s" or "aws" for the parsed documents of one file."""
    first = docs[0]
    if len(docs) == 1 and isinstance(first, dict) and ("proxy" in first or "resources" in first):
        return "native"
    # NOTE: the loaders of the other shapes load with the first file that is not a meshplane
    # file, so `meshplane run` never imports them (~0.15 MiB; benches/README.md, "Memory,
    # fourth pass"); the same in import_text, import_paths and _holds_app_mesh.
    from meshplane.config.loaders import cfn, k8s

    if len(docs) == 1 and cfn.is_cfn(first):
        return "cfn"
    if k8s.is_k8s(docs):
        return "k8s"
    return "aws"


def load_text(text: str, source: str = "<string>") -> MeshConfig:
    """A validated MeshConfig from the text of a meshplane file (YAML or JSON)."""
    docs = parse_documents(text, source)
    shape = detect(docs)
    if shape != "native":
        raise ConfigError(
            [
                Problem(
                    source,
                    "",
                    "",
                    (
                        f"this is {SHAPES[shape]}, not a meshplane file (it has no proxy section); "
                        "convert it with `meshplane import FILE --gateway NAME` or `--node NAME`"
                    ),
                )
            ]
        )
    if len(docs) > 1:
        raise ConfigError([Problem(source, "", "", "expected one document, got several")])
    return from_dict(docs[0], source)


def load_file(path: str | os.PathLike[str]) -> MeshConfig:
    """A validated MeshConfig from a meshplane file; ConfigError lists every problem."""
    return load_text(_read(path), str(path))


def import_text(text: str, source: str = "<string>") -> list[Resource]:
    """The App Mesh resources held in `text`, whatever its shape."""
    docs = parse_documents(text, source)
    shape = detect(docs)
    if shape == "native":
        entries = docs[0].get("resources")
        resources: list[Resource] = []
        problems: list[Problem] = []
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            resource, found = parse_entry(entry, i, source)
            problems += found
            resources += [resource] if resource is not None else []
    else:
        from meshplane.config.loaders import aws, cfn, k8s

        if shape == "cfn":
            resources, problems = cfn.load(docs[0], source)
        elif shape == "k8s":
            resources, problems = k8s.load(docs, source)
        else:
            resources, problems = aws.load(docs, source)
    if problems:
        raise ConfigError(problems)
    return resources


def import_resources(path: str | os.PathLike[str]) -> list[Resource]:
    """The App Mesh resources of a file: AWS CLI/API JSON, Kubernetes CRDs, CloudFormation, or a
    meshplane file. Checked for shape only; validate them as a mesh with `validate_resources`."""
    return import_text(_read(path), str(path))


# What a directory contributes: files of these endings that hold App Mesh resources.
SUFFIXES = (".json", ".yaml", ".yml", ".json.template", ".yaml.template", ".yml.template")


def import_paths(paths: list[str | os.PathLike[str]], *, strict: bool = False) -> Imported:
    """The App Mesh resources of files and directories (walked recursively, files ending in
    SUFFIXES), read as one mesh; directory files that hold none are listed in `skipped`.

    Kubernetes objects of all files are read together so that references resolve across files.
    The same resource defined twice is a problem naming both places. Unless `strict`, CRD spec
    fields Kubernetes would prune are dropped with a warning each. Problems are returned in
    `Imported.problems`, not raised."""
    from meshplane.config.loaders import aws, cfn, k8s

    found = Imported()
    k8s_docs: list[Any] = []
    k8s_sources: list[str] = []
    for path, named in _expand(paths, found):
        try:
            docs = parse_documents(_read(path), path)
        except ConfigError as exc:
            found.problems += exc.problems
            continue
        shape = detect(docs)
        if not named and not _holds_app_mesh(docs, shape):
            found.skipped.append(path)
            continue
        if shape == "k8s":
            k8s_docs += docs
            k8s_sources += [path] * len(docs)
        elif shape == "native":
            _read_native(docs, path, found)
        else:
            if shape == "cfn":
                resources, problems = cfn.load(docs[0], path)
                names = cfn.mesh_names(docs[0])
            else:
                resources, problems = aws.load(docs, path)
                names = aws.mesh_names(docs)
            found.problems += problems
            found.meshes += [(name, path) for name in names]
            for r in resources:
                found.add(r, path)
    if k8s_docs:
        k8s.read(k8s_docs, k8s_sources, found, strict=strict)
    found.meshes += [
        (r.name, origin) for r, origin in zip(found.resources, found.origins, strict=True)
        if r.kind == "Mesh"
    ]
    _adopt_orphans(found)
    found.problems += _duplicates(found)
    return found


def _adopt_orphans(found: Imported) -> None:
    """A Route (GatewayRoute) that names no parent joins the only VirtualRouter
    (VirtualGateway) of the import, with a warning: the walkthroughs passed the parent's name on
    the command line (`--virtual-router-name`)."""
    for i, r in enumerate(found.resources):
        if r.kind not in PARENT_KIND or r.parent is not None:
            continue
        parents = sorted({p.name for p in found.resources if p.kind == PARENT_KIND[r.kind]})
        if len(parents) == 1:
            found.resources[i] = Resource(r.kind, r.name, r.spec, parents[0])
            found.warnings.append(
                Problem(
                    found.origins[i],
                    found.resources[i].label,
                    PARENT_KEY[r.kind],
                    f'missing: taken to be the only {PARENT_KIND[r.kind]} imported, "{parents[0]}"',
                )
            )


def _expand(
    paths: list[str | os.PathLike[str]], found: Imported
) -> list[tuple[str, bool]]:
    """(file, named on the command line) for each path, directories walked in name order."""
    out: list[tuple[str, bool]] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(
                f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES)
            )
            if not files:
                found.problems.append(
                    Problem(str(p), "", "", f"no file ending in {', '.join(SUFFIXES)} here")
                )
            out += [(str(f), False) for f in files]
        else:
            out.append((str(p), True))
    return out


def _holds_app_mesh(docs: list[Any], shape: str) -> bool:
    if shape == "native":
        return True
    from meshplane.config.loaders import aws, k8s

    if shape == "cfn":
        return any(
            isinstance(r, dict) and str(r.get("Type", "")).startswith("AWS::AppMesh::")
            for r in (docs[0].get("Resources") or {}).values()
        )
    if shape == "k8s":
        return any(
            isinstance(d, dict) and str(d.get("apiVersion", "")).startswith(k8s.GROUP)
            for d in docs
        )
    items = [i for d in docs for i in (d if isinstance(d, list) else [d])]
    return any(
        isinstance(i, dict)
        and ("spec" in i or (len(i) == 1 and next(iter(i)) in aws.ENVELOPE))
        for i in items
    )


def _read_native(docs: list[Any], path: str, found: Imported) -> None:
    doc = docs[0]
    if isinstance(doc.get("mesh"), str) and doc["mesh"]:
        found.meshes.append((doc["mesh"], path))
    entries = doc.get("resources")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        resource, problems = parse_entry(entry, i, path)
        found.problems += problems
        if resource is not None:
            found.add(resource, path)


def _duplicates(found: Imported) -> list[Problem]:
    first: dict[tuple[str, str | None, str], str] = {}
    out: list[Problem] = []
    for r, origin in zip(found.resources, found.origins, strict=True):
        key = (r.kind, r.parent, r.name)
        if key in first:
            scope = f' in {PARENT_KIND[r.kind]} "{r.parent}"' if r.kind in PARENT_KIND else ""
            out.append(
                Problem(
                    origin,
                    r.label,
                    "name",
                    f"defined twice: here and in {first[key]} (another {r.kind}{scope} has "
                    "this name); import only one of the two files",
                )
            )
        else:
            first[key] = origin
    return out


def _read(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([Problem(str(path), "", "", f"cannot read the file: {reason}")]) from None


__all__ = [
    "Imported",
    "detect",
    "from_dict",
    "import_paths",
    "import_resources",
    "import_text",
    "load_file",
    "load_text",
    "to_native",
]
