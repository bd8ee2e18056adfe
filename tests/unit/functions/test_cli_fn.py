"""`meshplane fn publish|alias|list|versions` against a real embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from meshplane.cli import main

CONFIG = """
mesh: m
proxy: {gateway: edge}
resources:
  - kind: VirtualGateway
    name: edge
    spec: {listeners: [{portMapping: {port: 8080, protocol: http}}]}
  - kind: Function
    name: fn
    spec: {handler: app.handler, code: ./code, memorySize: 256, timeout: {unit: s, value: 7}}
"""


def test_publish_alias_list_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text("def handler(e, c):\n    return 1\n")
    config = tmp_path / "mesh.yaml"
    config.write_text(CONFIG)
    common = ["-c", str(config), "--store", f"sqlite://{tmp_path / 'store.db'}"]

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["fn", *args, *common])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("publish", "fn") == (0, "published fn version 1\n", "")
    assert run("publish", "fn")[1] == "fn: code and settings unchanged since version 1\n"
    (tmp_path / "code" / "app.py").write_text("def handler(e, c):\n    return 2\n")
    assert run("publish", "fn", "--description", "two")[1] == "published fn version 2\n"
    assert run("alias", "fn", "live", "--version", "1", "--weight", "2=0.1")[1] == (
        "alias fn:live -> version 1, 10% to version 2\n")
    code, out, _ = run("list")
    assert code == 0
    assert out.splitlines() == ["fn\t$LATEST app.handler 256 MB 7 s\tversions: 1, 2",
                                "  alias live -> 1 + 10% -> 2"]
    code, out, _ = run("versions", "fn", "--json")
    versions = json.loads(out)
    assert [v["version"] for v in versions] == ["1", "2"]
    assert versions[1]["description"] == "two" and versions[0]["memoryMB"] == 256
    # Errors: one line, exit status 1, nothing changed.
    code, _, err = run("alias", "fn", "live", "--version", "9")
    assert code == 1 and "has no version 9 (published: 1, 2)" in err and "Traceback" not in err
    code, _, err = run("publish", "nope")
    assert code == 1 and "no Function named 'nope' (functions: fn)" in err
    assert run("alias", "fn", "live", "--delete")[1] == "deleted alias fn:live\n"
    code, _, err = run("alias", "fn", "live", "--delete")
    assert code == 1 and "no alias 'live'" in err
