"""The one exception type of `meshplane.policy`. Imports only `meshplane.errors`."""

from __future__ import annotations

from meshplane.errors import MeshplaneError


class PolicyError(MeshplaneError, ValueError):
    """A policy value or an event was rejected.

    `code` is machine-readable and stable (tests and the admin API match on it, never on the
    message); `field` names the offending parameter or input key, in the spelling of the input
    (`intervalMillis` for an App Mesh dict, `interval` for a dataclass field).

    Codes: `missing_field`, `invalid_type`, `out_of_range`, `unknown_key` (an extension key this
    version does not know), `unknown_event` (an event kind the detector does not know).
    """

    def __init__(self, code: str, field: str, message: str) -> None:
        self.code = code
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)
