"""Fixtures for the TLS end-to-end tests: a CA issuing certificates into the test's temporary
directory (`pki`), a second, untrusted CA (`other_pki`), the server certificate the proxy
presents (`server_cert`, SANs 127.0.0.1 and localhost), and upstreams started in the test's
nursery. Every test here is marked `e2e`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import trio

from ..common import e2e_marker
from ..dataplane.support import H1Upstream, Upstreams
from .support import Issued, Pki

HERE = Path(__file__).parent


pytest_collection_modifyitems = e2e_marker(HERE)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki", "mesh-ca")


@pytest.fixture
def other_pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "other", "other-ca")


@pytest.fixture
def server_cert(pki: Pki) -> Issued:
    return pki.issue("edge", "127.0.0.1", "localhost", "edge.shop.local")


@pytest.fixture
def upstreams(nursery: trio.Nursery) -> Upstreams:
    return Upstreams(nursery)


@pytest.fixture
async def echo(upstreams: Upstreams) -> H1Upstream:
    """A plaintext HTTP/1.1 echo upstream (answers with the request it saw, as JSON)."""
    return await upstreams.h1(name="app")
