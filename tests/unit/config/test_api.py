"""The public surface of meshplane.config: complete, documented, typed, and free of trio and of
the compiled core (so `meshplane validate` works without either)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import meshplane.config as config

PUBLIC = {
    "MeshConfig",
    "ProxySettings",
    "Resource",
    "DnsTarget",
    "CloudMapTarget",
    "cloud_map_targets",
    "load_file",
    "load_text",
    "from_dict",
    "import_resources",
    "to_native",
    "compile_snapshot",
    "dns_targets",
    "listener_names",
    "validate_resources",
    "ResilienceTarget",
    "resilience_targets",
}


def test_exports_are_exactly_the_public_api() -> None:
    assert set(config.__all__) == PUBLIC
    for name in config.__all__:
        obj = getattr(config, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            assert sig.return_annotation is not inspect.Signature.empty, name
            for param in sig.parameters.values():
                assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name})"


def test_signatures_other_layers_code_against() -> None:
    compile_params = inspect.signature(config.compile_snapshot).parameters
    assert [p.kind for p in compile_params.values()] == [
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.KEYWORD_ONLY,
    ]
    assert list(compile_params) == ["cfg", "version", "endpoints", "functions"]
    native = inspect.signature(config.to_native).parameters
    assert list(native) == ["resources", "mesh", "gateway", "node", "proxy"]
    assert inspect.signature(config.load_text).parameters["source"].default == "<string>"
    assert inspect.signature(config.from_dict).parameters["source"].default == "<dict>"
    assert config.DnsTarget._fields == (
        "cluster",
        "hostname",
        "port",
        "response_type",
        "ip_preference",
    )


def test_imports_neither_trio_nor_the_core() -> None:
    code = (
        "import sys, meshplane.config\n"
        "bad = [m for m in sys.modules if m == 'trio' or m.startswith('trio.') or m == 'meshplane._core']\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    package = Path(config.__file__).parent
    for source in package.rglob("*.py"):
        text = source.read_text()
        assert "import trio" not in text and "_core" not in text, source


def test_pyyaml_loads_with_the_first_yaml_text_only() -> None:
    # A JSON config never pays for PyYAML (~1.1 MiB resident; benches/README.md, "Memory,
    # fourth pass"); YAML still loads, through the same entry point.
    gateway = Path(__file__).parents[3] / "examples" / "gateway.yaml"
    code = (
        "import json, sys, meshplane.config as c\n"
        "text = open(sys.argv[1]).read()\n"
        "c.load_text(json.dumps(json.loads(sys.argv[2])), source='x.json')\n"
        "print('yaml' in sys.modules)\n"
        "c.load_text(text, source='gateway.yaml')\n"
        "print('yaml' in sys.modules)\n"
    )
    import yaml

    as_json = json.dumps(yaml.safe_load(gateway.read_text()))
    out = subprocess.run([sys.executable, "-c", code, str(gateway), as_json],
                         capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True"], out.stderr
