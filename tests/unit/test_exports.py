"""The public API: every name in `meshplane.__all__` exists, is documented, and importing the
package stays cheap (no trio, no compiled core) until a runtime name is used."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys

import meshplane
import pytest

NEEDS_CORE = {"Proxy", "serve", "CoreError", "HostTable"}
HAVE_CORE = importlib.util.find_spec("meshplane._core") is not None


@pytest.mark.parametrize("name", sorted(meshplane.__all__))
def test_public_name_exists_and_is_documented(name: str) -> None:
    if name in NEEDS_CORE and not HAVE_CORE:
        pytest.skip("meshplane._core is not built (maturin develop --release)")
    value = getattr(meshplane, name)
    assert inspect.getdoc(value), f"meshplane.{name} has no docstring"
    assert name in dir(meshplane)


def test_all_is_sorted_and_unique() -> None:
    assert list(meshplane.__all__) == sorted(set(meshplane.__all__))


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError):
        meshplane.NoSuchThing  # noqa: B018


def test_package_docstring_states_the_layering() -> None:
    doc = meshplane.__doc__ or ""
    assert "Layering" in doc and "config" in doc and "runtime" in doc


@pytest.mark.skipif(not HAVE_CORE, reason="meshplane._core is not built (maturin develop --release)")
def test_proxy_public_members_are_documented() -> None:
    for name, member in inspect.getmembers(meshplane.Proxy):
        if name.startswith("_"):
            continue
        assert inspect.getdoc(member), f"Proxy.{name} has no docstring"


def test_importing_the_package_cli_and_config_loads_neither_trio_nor_the_core() -> None:
    code = (
        "import sys, meshplane, meshplane.cli, meshplane.errors\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('meshplane.config') and "
        "importlib.util.find_spec('meshplane.config').submodule_search_locations:\n"
        "    import meshplane.config\n"
        "bad = sorted(m for m in ('trio', 'meshplane._core', 'meshplane.runtime') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported eagerly: {out.stdout.strip()}"


def test_the_runtime_leaves_what_an_idle_proxy_does_not_use_unloaded() -> None:
    # Each of these waits for the feature that needs it (benches/README.md, "Memory, fourth
    # pass": together about 3 MiB of an idle `meshplane run`); an eager import of one of them
    # anywhere under meshplane.runtime or meshplane.cli shows up here.
    lazy = ("sqlite3", "yaml", "difflib", "datetime", "meshplane.policy", "meshplane.drivers.probes",
            "meshplane.registry", "meshplane.config.loaders.aws", "meshplane.config.loaders.cfn",
            "meshplane.config.loaders.k8s", "meshplane.functions.catalog", "meshplane.functions.worker")
    code = (
        "import sys, meshplane.cli, meshplane.runtime\n"
        f"print(','.join(m for m in {lazy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported eagerly: {out.stdout.strip()}"
