"""SDS secret names resolved through the local mapping `proxy.sds` (docs/tls.md): a directory
laid out like a Kubernetes Secret volume, rotated by its atomic `..data` symlink swap; and
the config errors for sources the proxy cannot use (unmapped SDS names, ACM)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from meshplane import ConfigError, Proxy
from meshplane.config.tls import secret_dir

from ..dataplane.support import H1Upstream
from ..waiting import eventually
from .support import GATEWAY_PORT, Pki, gateway_config, handshake, listener_tls, serial_of


def kubernetes_secret(secrets_dir: Path, name: str, files: dict[str, bytes], version: int) -> None:
    """Write a Secret the way the kubelet's atomic writer does: files in a new timestamped
    directory, `..data` swapped to it by a rename, stable names that are symlinks into it."""
    folder = secrets_dir / secret_dir(name)  # spiffe://shop.local -> spiffe___shop.local
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"..v{version}"
    data.mkdir()
    for file, content in files.items():
        (data / file).write_bytes(content)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, folder / "..data")
    for file in files:
        link = folder / file
        if not link.is_symlink():
            link.symlink_to(f"..data/{file}")


async def test_kubernetes_style_secret_volume_serves_and_rotates(
    tmp_path: Path, pki: Pki, echo: H1Upstream
) -> None:
    secrets = tmp_path / "secrets"
    first = pki.issue("v1", "127.0.0.1", "localhost")
    kubernetes_secret(secrets, "edge-cert", {"cert.pem": first.chain.read_bytes(),
                                             "key.pem": first.key.read_bytes()}, 1)
    kubernetes_secret(secrets, "spiffe://shop.local", {"ca.pem": pki.ca_path.read_bytes()}, 1)
    client = pki.issue("client", "client.shop.local")
    tls = listener_tls("STRICT", {"sds": {"secretName": "edge-cert"}},
                       validation={"trust": {"sds": {"secretName": "spiffe://shop.local"}}})
    config = gateway_config(echo.address, tls, sds={"secretsDir": str(secrets)})
    async with Proxy(config, drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        context = pki.client_context(client)
        async with httpx.AsyncClient(verify=context, trust_env=False, timeout=5) as http:
            assert (await http.get(f"https://127.0.0.1:{port}/")).status_code == 200
        assert serial_of((await handshake(port, context)).peer_cert) == first.serial
        assert str(secrets / "spiffe___shop.local" / "ca.pem") in proxy.tls_info()["reload"]["files"]

        second = pki.issue("v2", "127.0.0.1", "localhost")
        kubernetes_secret(secrets, "edge-cert", {"cert.pem": second.chain.read_bytes(),
                                                 "key.pem": second.key.read_bytes()}, 2)

        async def rotated() -> bool:
            return serial_of((await handshake(port, context)).peer_cert) == second.serial

        await eventually(rotated, what="the swapped secret to be served", timeout=10, poll=0.05)
        assert proxy.tls_info()["reload"]["failures"] == 0  # one swap: both files at once


@pytest.mark.parametrize(
    ("certificate", "field", "words"),
    [
        ({"sds": {"secretName": "edge-cert"}}, "spec.listeners[0].tls.certificate.sds.secretName",
         ["not mapped", "proxy.sds.secretsDir"]),
        ({"acm": {"certificateArn": "arn:aws:acm:eu-west-1:1:certificate/x"}},
         "spec.listeners[0].tls.certificate.acm", ["not available outside AWS", "certificate.file"]),
    ],
)
async def test_sources_the_proxy_cannot_use_are_config_errors(
    echo: H1Upstream, certificate: dict[str, object], field: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        async with Proxy(gateway_config(echo.address, listener_tls("STRICT", certificate))):
            pass
    (problem,) = info.value.problems
    assert (problem.resource, problem.field) == ('VirtualGateway "edge"', field)
    assert all(word in problem.message for word in words), problem.message


async def test_a_missing_file_is_named_at_load(tmp_path: Path, echo: H1Upstream) -> None:
    tls = listener_tls("STRICT", {"sds": {"secretName": "edge"}})
    with pytest.raises(ConfigError) as info:
        async with Proxy(gateway_config(echo.address, tls, sds={"secretsDir": str(tmp_path)})):
            pass
    assert str(tmp_path / "edge" / "cert.pem") in str(info.value)
