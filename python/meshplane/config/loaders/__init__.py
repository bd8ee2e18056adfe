"""Loaders: one entry point per question, whatever shape the file holds.

- `load_file` / `load_text`: a meshplane file (native shape) -> validated MeshConfig.
- `import_resources` / `import_text`: App Mesh resources from any shape (native, AWS CLI/API
  JSON, Kubernetes CRDs, CloudFormation) -> list[Resource], not yet validated as a mesh (a file
  may hold part of one); `to_native` wraps them into a meshplane file.

The shape is told from content, not from the file name. Reading the named file is the only I/O
of `meshplane.config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from meshplane.config.loaders import aws, cfn, k8s
from meshplane.config.loaders._text import parse_documents
from meshplane.config.loaders.native import from_dict, parse_entry, to_native
from meshplane.config.model import MeshConfig, Resource
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
    elif shape == "cfn":
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


def _read(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([Problem(str(path), "", "", f"cannot read the file: {reason}")]) from None


__all__ = [
    "detect",
    "from_dict",
    "import_resources",
    "import_text",
    "load_file",
    "load_text",
    "to_native",
]
