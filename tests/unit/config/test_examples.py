"""examples/*.yaml load, compile to valid snapshots, and are the examples docs/config.md shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from meshplane.config import compile_snapshot, dns_targets, listener_names, load_file

from .snapshot_contract import assert_valid_snapshot

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = {
    "gateway": REPO / "examples" / "gateway.yaml",
    "sidecar": REPO / "examples" / "sidecar.yaml",
}


@pytest.mark.parametrize("mode", sorted(EXAMPLES))
def test_example_loads_and_compiles(mode: str) -> None:
    cfg = load_file(EXAMPLES[mode])
    assert (cfg.proxy.gateway is not None) == (mode == "gateway")
    snapshot = json.loads(compile_snapshot(cfg, version="example"))
    assert_valid_snapshot(snapshot)
    assert dns_targets(cfg) == []  # static endpoints only
    for listener in snapshot["listeners"]:
        assert listener["address"].startswith("127.0.0.1:")
        assert listener["name"] in listener_names(cfg)
    for cluster in snapshot["clusters"]:
        assert cluster["endpoints"] and all(
            e["address"].startswith("127.0.0.1:") for e in cluster["endpoints"]
        )


def test_docs_show_the_example_files_verbatim() -> None:
    docs = (REPO / "docs" / "config.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL)
    for path in EXAMPLES.values():
        assert path.read_text() in blocks, f"docs/config.md does not show {path.name} as it is"
