"""`ConfigVersions`: a mesh's immutable config versions, its desired version and the proxies'
reports, on a `meshplane.store.Store` (the registry's store: the embedded file or etcd).

Keys, under `meshplane/lifecycle/<mesh>/`:

- `configs/<sha256>`: a version document (`lifecycle.document`), content-addressed, so a
  rollback or a re-apply stores nothing new;
- `desired`: the desired version's record (`Version` as JSON). Every new version is made
  desired by a compare-and-swap on this key's modification revision, and its number is the
  previous desired number + 1: two concurrent applies never interleave (the loser changes
  nothing and is told to retry) and a number is never handed out twice;
- `versions/<number, 12 digits>`: the record of each version, written after the swap (and
  again by the next writer if a crash lost it), so `history` lists every version ever desired;
- `proxies/<proxy id>`: what each proxy runs (`ProxyReport`), rewritten on each change and on
  each heartbeat.

Imports the store and `lifecycle.document` (trio only through the store).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from meshplane.errors import MeshplaneError
from meshplane.lifecycle.document import canonical_bytes, content_hash
from meshplane.store import Store

__all__ = [
    "ConcurrentApply",
    "ConfigVersions",
    "ProxyReport",
    "UnknownVersion",
    "Version",
    "default_author",
    "prefix",
]


def prefix(mesh: str) -> str:
    return f"meshplane/lifecycle/{mesh}/"


def default_author() -> str:
    """user@host of this process (`MESHPLANE_AUTHOR` wins: set it in pipelines)."""
    if os.environ.get("MESHPLANE_AUTHOR"):
        return os.environ["MESHPLANE_AUTHOR"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


class ConcurrentApply(MeshplaneError):
    """Another writer changed the desired version between our read and our swap."""


class UnknownVersion(MeshplaneError):
    """A version number (or the desired version) that the mesh does not have."""


@dataclass(frozen=True)
class Version:
    """One immutable version: `number` (1, 2, ...), the content `hash`, who made it, when
    (Unix time), the message, and for a rollback the version it restored."""

    mesh: str
    number: int
    hash: str
    author: str
    created: float
    message: str = ""
    rollback_of: int | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Version:
        doc = json.loads(raw)
        return cls(**{k: doc.get(k) for k in cls.__dataclass_fields__ if k in doc})


@dataclass(frozen=True)
class ProxyReport:
    """What one proxy reported: the version it runs (None before its first), the desired
    version it last saw, why it could not apply one (`error`: {"version", "reason"}), its
    state and health, and the heartbeat (Unix time of the report)."""

    id: str
    mesh: str
    target: str  # "gateway/NAME" or "node/NAME"
    running: int | None
    running_hash: str | None
    desired_seen: int | None
    state: str  # LIVE | STOPPED
    heartbeat: float
    error: dict[str, Any] | None = None
    health: dict[str, Any] = field(default_factory=dict)
    admin: str | None = None
    pid: int = 0
    host: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ProxyReport:
        doc = json.loads(raw)
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


class ConfigVersions:
    """The versions of mesh `mesh` in `store` (see the module docstring)."""

    def __init__(self, store: Store, mesh: str) -> None:
        self.store = store
        self.mesh = mesh
        self.prefix = prefix(mesh)
        self.desired_key = self.prefix + "desired"

    def _version_key(self, number: int) -> str:
        return f"{self.prefix}versions/{number:012d}"

    # -- reading ---------------------------------------------------------------------------

    async def desired(self) -> tuple[Version | None, int]:
        """The desired version (None before the first apply) and the desired key's
        modification revision (0 if absent), for `put_if`."""
        kv = await self.store.get(self.desired_key)
        if kv is None:
            return None, 0
        return Version.from_bytes(kv.value), kv.mod_revision

    async def document(self, digest: str) -> dict[str, Any]:
        kv = await self.store.get(f"{self.prefix}configs/{digest}")
        if kv is None:
            raise UnknownVersion(f"mesh {self.mesh}: the config {digest[:12]} is missing from the store")
        doc: dict[str, Any] = json.loads(kv.value)
        return doc

    async def history(self) -> list[Version]:
        """Every version, oldest first."""
        kvs, _ = await self.store.range(self.prefix + "versions/")
        found = {v.number: v for v in (Version.from_bytes(kv.value) for kv in kvs)}
        desired, _ = await self.desired()
        if desired is not None and desired.number not in found:  # its record was lost: repair
            await self.store.put(self._version_key(desired.number), desired.to_bytes())
            found[desired.number] = desired
        return [found[n] for n in sorted(found)]

    async def get(self, number: int | None = None) -> tuple[Version, dict[str, Any]]:
        """Version `number` (None: the desired one) and its document."""
        if number is None:
            version, _ = await self.desired()
            if version is None:
                raise UnknownVersion(f"mesh {self.mesh} has no version yet: `meshplane apply` one")
        else:
            kv = await self.store.get(self._version_key(number))
            if kv is None:
                desired, _ = await self.desired()
                if desired is None or desired.number != number:
                    raise UnknownVersion(f"mesh {self.mesh} has no version {number}")
                version = desired
            else:
                version = Version.from_bytes(kv.value)
        return version, await self.document(version.hash)

    # -- writing ---------------------------------------------------------------------------

    async def commit(self, doc: dict[str, Any], *, message: str = "", author: str | None = None,
                     rollback_of: int | None = None, based_on: int | None = None,
                     ) -> tuple[Version, bool]:
        """Make `doc` the desired version; returns (that version, whether it is new).

        A `doc` equal to the desired one creates nothing. With `based_on` (a version number,
        0 for none), the change is refused with `ConcurrentApply` unless that version is still
        the desired one (what the writer read before computing `doc`). Raises `ConcurrentApply` when another
        writer made a version meanwhile (nothing of ours is desired then: retry), and
        `StoreUnavailable` when the store cannot be reached (nothing changed, except perhaps
        an unreferenced content-addressed document)."""
        digest = content_hash(doc)
        desired, revision = await self.desired()
        if based_on is not None and based_on != (desired.number if desired else 0):
            raise ConcurrentApply(
                f"mesh {self.mesh}: expected version {based_on} to be desired, but it is "
                f"{desired.number if desired else 'none'}; nothing was applied: check "
                "`meshplane diff` and retry")
        if desired is not None:
            if await self.store.get(self._version_key(desired.number)) is None:
                await self.store.put(self._version_key(desired.number), desired.to_bytes())
            if desired.hash == digest:
                return desired, False
        config_key = f"{self.prefix}configs/{digest}"
        if await self.store.get(config_key) is None:
            await self.store.put(config_key, canonical_bytes(doc))
        version = Version(
            mesh=self.mesh, number=(desired.number if desired else 0) + 1, hash=digest,
            author=author or default_author(), created=time.time(), message=message,
            rollback_of=rollback_of,
        )
        if not await self.store.put_if(self.desired_key, version.to_bytes(), mod_revision=revision):
            now, _ = await self.desired()
            raise ConcurrentApply(
                f"mesh {self.mesh}: another apply made version {now.number if now else '?'} while "
                "this one ran; nothing was applied: check `meshplane diff` and retry")
        await self.store.put(self._version_key(version.number), version.to_bytes())
        return version, True

    async def rollback(self, number: int | None = None, *, message: str = "",
                       author: str | None = None) -> tuple[Version, bool]:
        """A new version equal to version `number` (None: the one before the desired one)."""
        if number is None:
            desired, _ = await self.desired()
            if desired is None or desired.number < 2:
                raise UnknownVersion(f"mesh {self.mesh} has no earlier version to roll back to")
            number = desired.number - 1
        _, doc = await self.get(number)
        return await self.commit(doc, message=message or f"rollback to version {number}",
                                 author=author, rollback_of=number)

    # -- proxy reports ---------------------------------------------------------------------

    async def report(self, report: ProxyReport) -> None:
        await self.store.put(f"{self.prefix}proxies/{report.id}", report.to_bytes())

    async def reports(self) -> list[ProxyReport]:
        kvs, _ = await self.store.range(self.prefix + "proxies/")
        return [ProxyReport.from_bytes(kv.value) for kv in kvs]

    async def forget(self, proxy_id: str) -> bool:
        return await self.store.delete(f"{self.prefix}proxies/{proxy_id}")
