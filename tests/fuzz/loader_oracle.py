"""The property every config loader keeps, shared by the hypothesis test
(tests/property/test_config_fuzz.py) and the atheris harness (fuzz_config_loaders.py):

    whatever the input, loading, importing and validating it either succeeds or raises
    ConfigError with at least one problem, each with a non-empty message, naming the source.

`check(text, source)` runs one input through `load_text`, `import_text` and, for what imports,
`validate_resources`, `to_native` and `from_dict` (what `meshplane import` does), plus
`compile_snapshot` for what validates. `check_bytes(data, path)` writes the bytes to `path`
first and goes through `load_file` / `import_resources`, so reading and decoding are covered
too. Any other exception propagates: that is the finding. Imports only `meshplane.config`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from meshplane.config import (
    compile_snapshot,
    from_dict,
    import_resources,
    load_file,
    to_native,
    validate_resources,
)
from meshplane.config.loaders import import_text, load_text
from meshplane.config.model import Resource
from meshplane.errors import ConfigError

__all__ = ["check", "check_bytes", "corpus_files"]

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIRS = (REPO.parent / "shared" / "appmesh-corpus" / "walkthroughs", REPO / "examples")
SUFFIXES = (".json", ".yaml", ".yml", ".template")


def corpus_files() -> list[Path]:
    """The real App Mesh definitions and meshplane examples available on this machine."""
    found: list[Path] = []
    for folder in CORPUS_DIRS:
        if folder.is_dir():
            found += sorted(p for p in folder.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
    return found


def _refused(exc: ConfigError, source: str) -> None:
    assert exc.problems, f"ConfigError without a problem: {exc!r}"
    for problem in exc.problems:
        assert problem.message.strip(), f"a problem without a message: {problem!r}"
        assert problem.file == source, f"a problem that does not name {source!r}: {problem!r}"


def _expect(source: str, step: Callable[[], Any]) -> Any:
    """`step()`'s result, or None if it raised a well-formed ConfigError."""
    try:
        return step()
    except ConfigError as exc:
        _refused(exc, source)
        return None


def _imported(resources: list[Resource], source: str) -> None:
    problems = validate_resources(resources, source)
    assert all(p.message.strip() and p.file == source for p in problems), problems
    meshes = sorted({r.name for r in resources if r.kind == "Mesh"}) or ["mesh"]
    for who in _proxies(resources):
        doc = to_native(resources, meshes[0], **who)
        config = _expect("<output>", lambda doc=doc: from_dict(doc, "<output>"))
        if config is not None:
            _expect("<output>", lambda config=config: compile_snapshot(config, version="fuzz"))


def _proxies(resources: list[Resource]) -> Iterator[dict[str, str]]:
    """At most one gateway and one node to write a meshplane file for."""
    gateways = [r.name for r in resources if r.kind == "VirtualGateway"]
    nodes = [r.name for r in resources if r.kind == "VirtualNode"]
    if gateways:
        yield {"gateway": gateways[0]}
    if nodes:
        yield {"node": nodes[0]}


def check(text: str, source: str = "fuzz.yaml") -> None:
    """Run `text` through every loader; see the module docstring."""
    config = _expect(source, lambda: load_text(text, source))
    if config is not None:
        _expect(source, lambda: compile_snapshot(config, version="fuzz"))
    resources = _expect(source, lambda: import_text(text, source))
    if resources is not None:
        _imported(resources, source)


def check_bytes(data: bytes, path: Path) -> None:
    """Write `data` to `path` and load it as a file (reading and decoding included)."""
    path.write_bytes(data)
    source = str(path)
    _expect(source, lambda: load_file(path))
    resources = _expect(source, lambda: import_resources(path))
    if resources is not None:
        _imported(resources, source)
