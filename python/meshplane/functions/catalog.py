"""Published versions and aliases of functions, kept in the store (spec/lambda.md §2).

Keys, per mesh (`functions/<mesh>/<function>/...`):
- `versions/<N>`: JSON settings frozen at publish time (handler, timeoutMs, memoryMB,
  environment, description, code and layers as {"sha256", "size"}), plus `published`;
- `code/<sha256>`: the zip of the code or of a layer (a directory is zipped deterministically);
- `aliases/<NAME>`: {"functionVersion": "N", "additionalVersionWeights": {"M": w}, ...}.

Versions are immutable (written with put_if on an absent key, so two publishers never get the
same number); publishing settings and code equal to the latest version's returns that version,
as Lambda does. `load_catalog` reads them back in the shape `config.functions` compiles.
`materialize` turns a version's code into directories an instance can import from (zips are
extracted once into a cache named by their hash).

Layer: beside `drivers` (uses the store; imports config, never the compiled core).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import trio

from meshplane.config.functions import ALIAS_NAME, LATEST
from meshplane.errors import MeshplaneError
from meshplane.store import Store

__all__ = ["FunctionCatalogError", "load_catalog", "materialize", "pack", "publish", "set_alias",
           "prefix"]

# What a version freezes; `published` and the code's size are not compared.
_FROZEN = ("handler", "description", "timeoutMs", "memoryMB", "environment")


class FunctionCatalogError(MeshplaneError):
    """A publish or alias change was refused (unknown version, bad weights, ...)."""


def prefix(mesh: str, function: str | None = None) -> str:
    return f"functions/{mesh}/" + (f"{function}/" if function else "")


def pack(path: str) -> bytes:
    """The zip of a code directory (files sorted, timestamps fixed: equal trees, equal bytes),
    or a zip file's own bytes."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    if not os.path.isdir(path):
        raise FunctionCatalogError(f"code path {path!r}: no such directory or zip file")
    import zipfile  # NOTE: here, not at the top: a proxy without functions never loads it

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".pyc"):
                    continue
                full = os.path.join(root, name)
                info = zipfile.ZipInfo(os.path.relpath(full, path), (1980, 1, 1, 0, 0, 0))
                info.external_attr = (os.stat(full).st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(full, "rb") as f:
                    zf.writestr(info, f.read())
    return buffer.getvalue()


async def _versions(store: Store, mesh: str, function: str) -> dict[str, dict[str, Any]]:
    rows, _ = await store.range(prefix(mesh, function) + "versions/")
    return {row.key.rsplit("/", 1)[1]: json.loads(row.value) for row in rows}


async def publish(store: Store, mesh: str, function: str, settings: Mapping[str, Any],
                  description: str | None = None) -> tuple[str, bool]:
    """Freeze `settings` (a `$LATEST`'s, from `config.functions.latest_settings`) as the next
    version; returns (version, created). Unchanged code and settings return the latest
    version with created=False."""
    blobs: dict[str, bytes] = {}

    def frozen(code: Mapping[str, Any]) -> dict[str, Any]:
        data = pack(code["path"])
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"sha256": digest, "size": len(data)}

    version = {k: settings[k] for k in _FROZEN if k in settings}
    if description is not None:
        version["description"] = description
    version["code"] = await trio.to_thread.run_sync(frozen, settings["code"])
    version["layers"] = [await trio.to_thread.run_sync(frozen, layer)
                         for layer in settings.get("layers") or []]
    for _ in range(20):  # another publisher may take the number we chose: try the next one
        existing = await _versions(store, mesh, function)
        if existing:
            latest = max(existing, key=int)
            if _same(existing[latest], version):
                return latest, False
        for digest, data in blobs.items():
            key = prefix(mesh, function) + f"code/{digest}"
            if await store.get(key) is None:
                await store.put(key, data)
        number = str(max((int(v) for v in existing), default=0) + 1)
        record = {**version, "version": number, "published": time.time()}
        key = prefix(mesh, function) + f"versions/{number}"
        if await store.put_if(key, json.dumps(record, sort_keys=True).encode(), mod_revision=0):
            return number, True
    raise FunctionCatalogError(f"could not publish {function}: the version number kept changing")


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def key(v: Mapping[str, Any]) -> Any:
        return ({k: v.get(k) for k in _FROZEN}, v["code"]["sha256"],
                [layer["sha256"] for layer in v.get("layers") or []])
    return bool(key(a) == key(b))


async def set_alias(store: Store, mesh: str, function: str, alias: str, version: str,
                    weights: Mapping[str, float] | None = None,
                    description: str | None = None) -> dict[str, Any]:
    """Create or move alias `alias` to `version`, with at most one additional weighted version
    (Lambda's routingConfig.additionalVersionWeights)."""
    if not ALIAS_NAME.match(alias) or alias == LATEST:
        raise FunctionCatalogError(f"alias name {alias!r}: expected 1..128 letters, digits, '-' "
                                   "or '_', not only digits")
    existing = await _versions(store, mesh, function)
    for v in (version, *(weights or {})):
        if v not in existing:
            raise FunctionCatalogError(
                f"function {function!r} has no version {v} (published: "
                f"{', '.join(sorted(existing, key=int)) or 'none'})")
    weights = dict(weights or {})
    if len(weights) > 1:
        raise FunctionCatalogError("an alias routes to at most one additional version")
    for v, w in weights.items():
        if v == version:
            raise FunctionCatalogError(f"the additional version {v} is the alias's own version")
        if not 0.0 <= float(w) < 1.0:
            raise FunctionCatalogError(f"weight of version {v}: expected 0.0 <= w < 1.0, got {w}")
    record: dict[str, Any] = {"functionVersion": version, "name": alias}
    if weights:
        record["additionalVersionWeights"] = {v: float(w) for v, w in weights.items()}
    if description:
        record["description"] = description
    await store.put(prefix(mesh, function) + f"aliases/{alias}",
                    json.dumps(record, sort_keys=True).encode())
    return record


async def delete_alias(store: Store, mesh: str, function: str, alias: str) -> bool:
    return await store.delete(prefix(mesh, function) + f"aliases/{alias}")


async def load_catalog(store: Store, mesh: str) -> tuple[dict[str, dict[str, Any]], int]:
    """{function: {"versions": {...}, "aliases": {...}}} of `mesh`, and the store revision."""
    rows, revision = await store.range(prefix(mesh))
    catalog: dict[str, dict[str, Any]] = {}
    for row in rows:
        parts = row.key[len(prefix(mesh)):].split("/")
        if len(parts) != 3 or parts[1] not in ("versions", "aliases"):
            continue
        entry = catalog.setdefault(parts[0], {"versions": {}, "aliases": {}})
        entry[parts[1]][parts[2]] = json.loads(row.value)
    return catalog, revision


async def materialize(store: Store | None, mesh: str, function: str,
                      settings: Mapping[str, Any], cache: str) -> tuple[str, list[str]]:
    """(code directory, layer directories) of a version's settings, extracting zips into
    `cache` once (by content hash)."""
    async def one(code: Mapping[str, Any]) -> str:
        if "path" in code:
            path = code["path"]
            if os.path.isdir(path):
                return str(path)
            if not os.path.isfile(path):
                raise FunctionCatalogError(f"code path {path!r}: no such directory or zip file")
            data = await trio.to_thread.run_sync(_read, path)
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest, data = code["sha256"], None
        target = os.path.join(cache, digest)
        if os.path.isdir(target):
            return target
        if data is None:
            if store is None:
                raise FunctionCatalogError(f"{function}: published code needs the store")
            row = await store.get(prefix(mesh, function) + f"code/{digest}")
            if row is None:
                raise FunctionCatalogError(f"{function}: code {digest[:12]} is not in the store")
            data = row.value
        await trio.to_thread.run_sync(_extract, data, target)
        return target

    code_dir = await one(settings["code"])
    layers = [await one(layer) for layer in settings.get("layers") or []]
    return code_dir, layers


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _extract(data: bytes, target: str) -> None:
    import zipfile  # NOTE: see `pack`

    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(target))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(staging)
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isdir(target):
            raise
    except zipfile.BadZipFile as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise FunctionCatalogError(f"code is not a valid zip: {exc}") from None
