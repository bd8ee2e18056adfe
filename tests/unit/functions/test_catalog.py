"""Versions and aliases in the embedded store: immutable numbered versions, publish of unchanged
code returning the latest, alias rules, and code coming back out of the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from meshplane.config import from_dict
from meshplane.config.functions import latest_settings
from meshplane.functions.catalog import (
    FunctionCatalogError,
    load_catalog,
    materialize,
    pack,
    publish,
    set_alias,
)
from meshplane.store import SqliteStore


def config(root: Path) -> object:
    (root / "code").mkdir(exist_ok=True)
    return from_dict({
        "mesh": "m", "proxy": {"gateway": "edge"},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "Function", "name": "fn",
             "spec": {"handler": "app.handler", "code": "code", "memorySize": 256}},
        ],
    }, source=str(root / "mesh.yaml"))


async def test_publish_alias_and_materialize(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "code" / "app.py").write_text("def handler(e, c):\n    return 1\n")
    fn = cfg.get("Function", "fn")  # type: ignore[attr-defined]
    async with SqliteStore(str(tmp_path / "store.db")) as store:
        assert await publish(store, "m", "fn", latest_settings(cfg, fn)) == ("1", True)
        # Unchanged code and settings: the latest version again (Lambda's rule).
        assert await publish(store, "m", "fn", latest_settings(cfg, fn)) == ("1", False)
        (tmp_path / "code" / "app.py").write_text("def handler(e, c):\n    return 2\n")
        assert await publish(store, "m", "fn", latest_settings(cfg, fn)) == ("2", True)
        await set_alias(store, "m", "fn", "live", "1", {"2": 0.1})
        catalog, _ = await load_catalog(store, "m")
        assert sorted(catalog["fn"]["versions"]) == ["1", "2"]
        assert catalog["fn"]["versions"]["1"]["memoryMB"] == 256
        assert catalog["fn"]["aliases"]["live"]["additionalVersionWeights"] == {"2": 0.1}
        for bad, words in [
            (("live", "3", None), "no version 3"),
            (("live", "1", {"1": 0.5}), "alias's own version"),
            (("live", "1", {"2": 0.1, "1": 0.1}), "at most one additional"),
            (("123", "1", None), "not only digits"),
        ]:
            with pytest.raises(FunctionCatalogError, match=words):
                await set_alias(store, "m", "fn", *bad)  # type: ignore[arg-type]
        # Version 1's code comes back from the store, not from the (changed) directory.
        cache = str(tmp_path / "cache")
        code_dir, layers = await materialize(store, "m", "fn", catalog["fn"]["versions"]["1"],
                                             cache)
        assert layers == [] and os.path.dirname(code_dir) == cache
        assert "return 1" in Path(code_dir, "app.py").read_text()
        # Other meshes do not see it.
        assert (await load_catalog(store, "other"))[0] == {}


def test_pack_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("X = 1\n")
    first = pack(str(tmp_path / "a"))
    os.utime(tmp_path / "a" / "x.py", (1, 1))
    assert pack(str(tmp_path / "a")) == first
    with pytest.raises(FunctionCatalogError, match="no such directory"):
        pack(str(tmp_path / "missing"))
