"""Checks a compiled snapshot document against docs/snapshot.schema.json, the JSON Schema that
rust/src/config/mod.rs generates from the serde types the core parses (`cargo test` fails when
the checked-in file and the types differ). The cross-reference rules of `Snapshot::check`
(known clusters and route tables, unique names, parseable addresses) are the core's alone and
are tested through `Core.apply` in tests/e2e/dataplane/test_snapshot_contract.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "docs" / "snapshot.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
Draft202012Validator.check_schema(SCHEMA)
VALIDATOR = Draft202012Validator(SCHEMA)


def schema_errors(doc: Any) -> list[str]:
    """Every place `doc` breaks the schema, as "path: message", best match first."""
    return [
        f"{error.json_path}: {error.message}"
        for error in sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


def assert_valid_snapshot(doc: Any) -> None:
    """Fail, naming every problem, where the core's parser would refuse `doc`'s shape."""
    errors = schema_errors(doc)
    assert not errors, "snapshot breaks docs/snapshot.schema.json:\n" + "\n".join(errors)
