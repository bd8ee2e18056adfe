"""meshplane.compliance: compliance policies checked wherever a config is validated or applied.

A policy file (YAML) lists rules: built-ins from the library by name (`use: NAME`, with
parameters under `with:`), rules of its own (`kinds`, a field `path` with `*` for every list
item, `{a,b}` for whichever of these keys are present and `key?` for a key that may be absent
(then there is nothing to check below it), and one check: `exists`, `equals`,
`in`, `max`, `min`), and Python functions (`python: FILE.py:FUNCTION`) for what rules cannot
say. A violation names the policy, the resource and the field. docs/policies.md.

Pure: imports the standard library, PyYAML and `meshplane.config.model`/`meshplane.errors`;
never trio nor the compiled core.
"""

from __future__ import annotations

from meshplane.compliance._policies import (
    BUILTINS,
    POLICY_ENV,
    Policy,
    Violation,
    check_document,
    load_policies,
    load_policies_for,
    to_sarif,
)

__all__ = [
    "BUILTINS",
    "POLICY_ENV",
    "Policy",
    "Violation",
    "check_document",
    "load_policies",
    "load_policies_for",
    "to_sarif",
]
