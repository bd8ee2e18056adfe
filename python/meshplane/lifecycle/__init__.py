"""meshplane.lifecycle: a mesh's config as immutable versions in the store.

`document` (pure: version documents, content hash, semantic diff and patch; no trio, no core),
`versions` (`ConfigVersions` on a `meshplane.store.Store`: apply with compare-and-swap,
history, rollback, proxy reports), `rollout_plan` (pure: rollout steps and their analysis) and
`rollout` (the rollout loop on the store). This package's `__init__` imports only `document`. The proxy side (following the desired version) is
`meshplane.drivers.follow`; the commands are in `meshplane._cli_lifecycle`. docs/lifecycle.md.
"""

from __future__ import annotations

from meshplane.lifecycle.document import (
    ABSENT,
    FieldChange,
    ResourceChange,
    content_hash,
    diff,
    document_of,
    patch,
)

__all__ = [
    "ABSENT",
    "FieldChange",
    "ResourceChange",
    "content_hash",
    "diff",
    "document_of",
    "patch",
]
