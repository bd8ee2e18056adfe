"""Reading App Mesh shaped dicts (`healthCheck`, `outlierDetection`, Duration) into numbers.

Shared by `health` and `outlier` so both report bad input the same way. The config layer
(`meshplane.config`) has already checked App Mesh's product ranges for configs it loaded; these
helpers only check what a policy needs to be well-defined (presence, type, sign), because
policies are also built straight from dicts by library users and tests.
Imports only `_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshplane.policy._errors import PolicyError

_UNITS_PER_SECOND = {"s": 1, "ms": 1000}


def require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise PolicyError("missing_field", f"{where}.{key}", "required")
    return d[key]


def as_int(value: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    # bool is an int subclass; `true` is never a valid count or percentage.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError("invalid_type", field, f"expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise PolicyError("out_of_range", field, f"expected {_range(lo, hi)}, got {value}")
    return value


def count(value: Any, field: str) -> int:
    """A non-negative integer."""
    return as_int(value, field, lo=0)


def as_bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError("invalid_type", field, f"expected true or false, got {value!r}")
    return value


def as_str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise PolicyError("invalid_type", field, f"expected a string, got {value!r}")
    return value


def millis(value: Any, field: str) -> float:
    """An App Mesh `...Millis` integer, in seconds."""
    return as_int(value, field, lo=0) / 1000.0


def duration(value: Any, field: str) -> float:
    """An App Mesh Duration `{"unit": "s"|"ms", "value": n}`, in seconds."""
    if not isinstance(value, Mapping):
        raise PolicyError("invalid_type", field, f'expected {{"unit": "s"|"ms", "value": n}}, got {value!r}')
    unit = require(value, "unit", field)
    if unit not in _UNITS_PER_SECOND:
        raise PolicyError("out_of_range", f"{field}.unit", f'expected "s" or "ms", got {unit!r}')
    return as_int(require(value, "value", field), f"{field}.value", lo=0) / _UNITS_PER_SECOND[unit]


def check_keys(d: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    """Reject keys a policy does not know, so a typo is an error rather than a silent default."""
    for key in d:
        if key not in known:
            raise PolicyError("unknown_key", f"{where}.{key}", f"expected one of {sorted(known)}")


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo}..{hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"
