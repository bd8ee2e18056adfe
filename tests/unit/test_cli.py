"""`meshplane validate`, `version` and `--help`, through `meshplane.cli.main` (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshplane.cli import main

GOOD = """\
mesh: shop
proxy:
  gateway: edge
  admin: 127.0.0.1:0
  ports: {8080: 0}
resources:
  - kind: VirtualGateway
    name: edge
    spec:
      listeners:
        - portMapping: {port: 8080, protocol: http}
  - kind: GatewayRoute
    name: api
    virtualGatewayName: edge
    spec:
      httpRoute:
        match: {prefix: /}
        action:
          target: {virtualService: {virtualServiceName: api.shop.local}}
  - kind: VirtualService
    name: api.shop.local
    spec:
      provider: {virtualNode: {virtualNodeName: api-v1}}
  - kind: VirtualNode
    name: api-v1
    spec:
      listeners:
        - portMapping: {port: 8080, protocol: http}
      serviceDiscovery:
        static: {endpoints: ["127.0.0.1:9001"]}
"""

# Two problems: a route to a service that does not exist, and a port out of range.
BAD = GOOD.replace("virtualServiceName: api.shop.local}", "virtualServiceName: nowhere.shop.local}").replace(
    "portMapping: {port: 8080, protocol: http}\n      serviceDiscovery",
    "portMapping: {port: 70000, protocol: http}\n      serviceDiscovery",
)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def test_validate_a_good_file(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"OK {good}: 4 resources"


def test_validate_a_bad_file_prints_every_problem(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(bad)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) >= 2, lines
    assert all(str(bad) in line for line in lines), lines
    text = "\n".join(lines)
    assert "nowhere.shop.local" in text
    assert "70000" in text or "port" in text


def test_validate_several_files_fails_if_any_fails(
    good: Path, bad: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"OK {good}" in out and f"OK {bad}" not in out


def test_validate_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["validate", str(missing)]) == 1
    captured = capsys.readouterr()
    assert str(missing) in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err


def test_run_with_a_bad_config_is_one_paragraph_on_stderr(bad: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("meshplane run: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_run_with_a_bad_admin_address(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(good), "--admin", "nonsense"]) == 1
    err = capsys.readouterr().err
    assert "--admin" in err and "Traceback" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("meshplane 0.1.0\n")


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_commands_and_points_to_the_format_doc(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    for command in ("run", "validate", "import", "demo", "version"):
        assert command in text
    assert "docs/config.md" in text and "gateway: NAME" in text


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("run", ["--watch", "--workers", "--admin", "SIGINT", "docs/config.md"]),
        ("validate", ["FILE", "one per line", "docs/config.md"]),
        ("import", ["--gateway", "--node", "--mesh", "CloudFormation", "docs/config.md"]),
        ("demo", ["--duration", "--rps-limit", "x-canary"]),
        ("version", ["core"]),
    ],
)
def test_subcommand_help(command: str, expected: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([command], capsys)
    for fragment in expected:
        assert fragment in text, f"{command} --help lacks {fragment!r}"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "usage: meshplane" in capsys.readouterr().err


AWS_JSON = """\
[
 {"meshName": "shop", "virtualGatewayName": "edge",
  "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
 {"meshName": "shop", "virtualGatewayName": "edge", "gatewayRouteName": "api",
  "spec": {"httpRoute": {"match": {"prefix": "/"},
    "action": {"target": {"virtualService": {"virtualServiceName": "api.shop.local"}, "port": 8080}}}}},
 {"meshName": "shop", "virtualServiceName": "api.shop.local",
  "spec": {"provider": {"virtualNode": {"virtualNodeName": "api-v1"}}}},
 {"meshName": "shop", "virtualNodeName": "api-v1",
  "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
           "serviceDiscovery": {"dns": {"hostname": "api.shop.svc.cluster.local"}}}}
]
"""


def test_import_writes_a_config_that_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "appmesh.json"
    source.write_text(AWS_JSON)
    out = tmp_path / "mesh.yaml"
    assert main(["import", str(source), "--gateway", "edge", "--mesh", "shop", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    text = out.read_text()
    assert text.startswith("mesh: shop\n") and "gateway: edge" in text
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"OK {out}: 4 resources"


def test_import_to_stdout_takes_the_mesh_name_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "appmesh.json"
    source.write_text(AWS_JSON)
    assert main(["import", str(source), "--gateway", "edge"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mesh: shop\n") and "gateway: edge" in out
    source.write_text(AWS_JSON.replace('"meshName": "shop", ', ""))
    assert main(["import", str(source), "--gateway", "edge"]) == 1
    err = capsys.readouterr().err
    assert "--mesh" in err and "name no mesh" in err and "Traceback" not in err
    assert main(["import", str(source), "--node", "api-v1", "--mesh", "shop"]) == 0
    assert "node: api-v1" in capsys.readouterr().out


def test_import_needs_a_gateway_or_a_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["import", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    assert "--gateway" in capsys.readouterr().err


SPLIT = {
    "gw.json": {"meshName": "shop", "virtualGatewayName": "edge",
                "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
    "routes/api-gwroute.json": {"meshName": "shop", "virtualGatewayName": "edge", "gatewayRouteName": "api",
                                "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
                                    "target": {"virtualService": {"virtualServiceName": "api.shop.local"}, "port": 8080}}}}},
    "api-vs.json": {"meshName": "shop", "virtualServiceName": "api.shop.local",
                    "spec": {"provider": {"virtualNode": {"virtualNodeName": "api-v1"}}}},
    "api-v1-vn.json": {"meshName": "shop", "virtualNodeName": "api-v1",
                       "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}},
                                              {"portMapping": {"port": 5001, "protocol": "http"}}],
                                "serviceDiscovery": {"dns": {"hostname": "api.shop.svc.cluster.local"}},
                                "backends": [{"virtualService": {"virtualServiceName": "api.shop.local"}}]}},
}


def _split_mesh(root: Path) -> Path:
    import json

    for name, item in SPLIT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(item))
    return root


def test_import_a_directory_as_one_mesh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "edge.yaml"
    assert main(["import", str(_split_mesh(tmp_path / "mesh")), "--gateway", "edge", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "does not validate" not in err and "wrote" in err
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"OK {out}: 4 resources"


def test_import_node_output_validates_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "api.yaml"
    assert main(["import", str(_split_mesh(tmp_path / "mesh")), "--node", "api-v1", "-o", str(out)]) == 0
    assert "does not validate" not in capsys.readouterr().err
    text = out.read_text()
    assert text.startswith("# proxy.app: ")
    # 5001 + 10000 would be the outbound port 15001: the next free port is taken instead.
    assert "8080: 127.0.0.1:18080" in text and "5001: 127.0.0.1:15002" in text
    assert main(["validate", str(out)]) == 0


def test_import_wrong_target_names_suggest_the_nearest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = str(_split_mesh(tmp_path / "mesh"))
    assert main(["import", mesh, "--node", "api-1"]) == 1
    err = capsys.readouterr().err
    assert 'no VirtualNode named "api-1" (did you mean "api-v1"?)' in err
    assert main(["import", mesh, "--gateway", "zzz"]) == 1
    assert 'no VirtualGateway named "zzz" (the files define: edge)' in capsys.readouterr().err


def test_import_refuses_duplicates_naming_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = _split_mesh(tmp_path / "mesh")
    (mesh / "copy").mkdir()
    (mesh / "copy" / "gw.json").write_text((mesh / "gw.json").read_text())
    assert main(["import", str(mesh), "--gateway", "edge"]) == 1
    err = capsys.readouterr().err
    assert f"{mesh / 'gw.json'}: VirtualGateway \"edge\": name: defined twice: here and in {mesh / 'copy' / 'gw.json'}" in err


def test_import_several_meshes_need_mesh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = _split_mesh(tmp_path / "mesh")
    (mesh / "api-vs.json").write_text((mesh / "api-vs.json").read_text().replace('"shop"', '"other"'))
    assert main(["import", str(mesh), "--gateway", "edge"]) == 1
    err = capsys.readouterr().err
    assert "several meshes" in err and '"other" in' in err and "--mesh" in err
    assert main(["import", str(mesh), "--gateway", "edge", "--mesh", "shop"]) == 0


CRD_WITH_STALE_FIELD = """\
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: edge, namespace: shop}
spec:
  meshRef: {name: shop}
  listeners: [{portMapping: {port: 8080, protocol: http}, timeout: {http: {}}}]
"""


def test_import_prunes_crd_fields_with_warnings_unless_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "gw.yaml"
    source.write_text(CRD_WITH_STALE_FIELD)
    assert main(["import", str(source), "--gateway", "edge_shop"]) == 0
    captured = capsys.readouterr()
    assert "timeout" not in captured.out and "mesh: shop" in captured.out
    assert (
        f'warning: {source}: VirtualGateway "edge_shop": spec.listeners[0].timeout: dropped'
        in captured.err
    )
    assert main(["import", str(source), "--gateway", "edge_shop", "--strict"]) == 0
    captured = capsys.readouterr()
    assert "timeout" in captured.out and "warning" not in captured.err
    assert "does not validate yet" in captured.err and "spec.listeners[0].timeout" in captured.err


def test_import_help_describes_directories_and_strict(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["import"], capsys)
    for fragment in ("FILE|DIR", "--strict", "v1beta1", "twice", "PEM"):
        assert fragment in text, fragment


# Files that used to end `validate` and `import` in a RecursionError traceback, and a YAML
# alias bomb; each must be one clear problem naming the file, exit status 1.
HOSTILE = {
    "deep.yaml": "mesh: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep.json": '{"mesh": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
    "bomb.yaml": "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
    ),
}
HOSTILE_MESSAGE = {
    "deep.yaml": "mappings and lists nest deeper than 64 levels (at line 1, column ",
    "deep.json": "objects and arrays nest deeper than 64 levels",
    "bomb.yaml": "the document expands to more than 1,000,000 values",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_validate_a_file_over_a_limit(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    path.write_text(HOSTILE[name])
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: {HOSTILE_MESSAGE[name]}"), captured.out
    assert len(captured.out.splitlines()) == 1 and captured.err == ""


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_import_a_file_over_a_limit(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    path.write_text(HOSTILE[name])
    assert main(["import", str(path), "--node", "api"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("meshplane import: 1 problem(s) in config:\n")
    assert f"{path}: {HOSTILE_MESSAGE[name]}" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_validate_and_import_report_an_internal_error_without_a_traceback(
    good: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import meshplane.config
    import meshplane.config.loaders

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(meshplane.config, "load_file", broken)
    monkeypatch.setattr(meshplane.config.loaders, "import_paths", broken)
    assert main(["validate", str(good)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: meshplane failed while loading this file (RuntimeError: boom)")
    assert main(["import", str(good), "--node", "api-v1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("meshplane import: meshplane failed while loading this file (RuntimeError: boom)")
    assert "Traceback" not in err
