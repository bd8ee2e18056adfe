"""meshplane.policy's public surface and layering: every exported name is documented, and the
package loads neither trio, the compiled core nor the config layer."""

from __future__ import annotations

import ast
import inspect
import pathlib
import subprocess
import sys

import meshplane.policy as policy
import pytest

FORBIDDEN = ("trio", "meshplane._core", "meshplane.config")
PACKAGE_DIR = pathlib.Path(policy.__file__).parent


@pytest.mark.parametrize("name", sorted(policy.__all__))
def test_exported_name_exists_and_is_documented(name: str) -> None:
    value = getattr(policy, name)
    if name == "Decision":  # a type alias: documented in the outlier module
        return
    assert inspect.getdoc(value), f"meshplane.policy.{name} has no docstring"
    if inspect.isclass(value):
        for member_name, member in vars(value).items():
            if not member_name.startswith("_") and (callable(member) or isinstance(member, property)):
                assert inspect.getdoc(member), f"{name}.{member_name} has no docstring"


def test_all_is_sorted_and_unique() -> None:
    assert list(policy.__all__) == sorted(set(policy.__all__))


def test_docstring_states_what_it_owns_and_must_not_import() -> None:
    doc = policy.__doc__ or ""
    assert "must not import" in doc and "trio" in doc and "meshplane._core" in doc


def test_importing_policy_loads_neither_trio_nor_core_nor_config() -> None:
    code = (
        "import sys, meshplane.policy\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_sources_import_only_the_standard_library_errors_and_policy(path: pathlib.Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.startswith("meshplane"):
                assert name == "meshplane.errors" or name.startswith("meshplane.policy"), name
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), name
