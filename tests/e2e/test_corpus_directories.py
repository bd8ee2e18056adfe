"""Every example of ../shared/appmesh-corpus/walkthroughs imported as a whole directory (as
`meshplane import DIR` does), then validated, and served where it describes a complete mesh.

An example is a walkthrough directory, or each controller version of it (`v1beta1/`,
`v1beta2/`). Shell placeholders are filled first, as the walkthroughs' `envsubst` did (the
helper of tests/unit/config/test_corpus.py). What each example may come to:

- **served**: every gateway and node of the mesh starts as a meshplane.Proxy (ports 0; the
  endpoints may be unreachable). TLS files the walkthroughs mount are replaced by certificates
  made here; SDS secret names are mapped to them.
- **refused**: serving is refused only for an AWS-only feature (ACM certificates or trust).
- **partial**: the directory holds bare specs whose names or parents the walkthrough passed on
  the command line, or names filled in by its shell at run time; every unresolved reference
  must be to such a name.

A walkthrough directory often holds successive versions of one resource (`*-update.json`,
`updates/`, `route-*-timeout20s.json`): importing it whole is refused, each duplicate naming
both files. The test then checks the first version of every resource as the mesh (by shortest
file name, as the walkthroughs create them before updating) and each later version in its place.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from meshplane.config import from_dict, to_native, validate_resources
from meshplane.config.checks import UNRESOLVED
from meshplane.config.loaders import import_paths
from meshplane.config.model import Resource
from meshplane.config.tls import NOT_SERVABLE
from meshplane.errors import ConfigError

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "appmesh-corpus" / "walkthroughs"
sys.path.insert(0, str(REPO / "tests" / "unit"))  # the placeholder filler of test_corpus.py
_helpers = importlib.import_module("config.test_corpus")
PLACEHOLDER, plausible, fill_placeholders = (
    _helpers.PLACEHOLDER,
    _helpers.plausible,
    _helpers.fill_placeholders,
)

# Upstream files that are not valid YAML (see test_corpus.BROKEN_YAML): the directory import
# reports each of them, and the test goes on without them.
BROKEN_YAML = {str(Path(rel)) for rel in _helpers.BROKEN_YAML}
DUPLICATE = "defined twice: here and in "
# Literal placeholders the reader replaces by hand (checked in the files): the ARN of a virtual
# service that lives in the other cluster's manifest.
LITERAL_PLACEHOLDERS = {"colorapp-service-ARN"}


def examples() -> list[str]:
    if not CORPUS.is_dir():
        return []
    out = []
    for walkthrough in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        versions = [v for v in ("v1beta1", "v1beta2") if (walkthrough / v).is_dir()]
        out += [str((walkthrough / v).relative_to(CORPUS)) for v in versions] or [walkthrough.name]
    return out


def filled_copy(src: Path, dst: Path) -> set[str]:
    """Copy `src` to `dst` with placeholders filled; the values filled in."""
    filled: set[str] = set()
    for f in sorted(src.rglob("*")):
        if not f.is_file():
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = f.read_text(encoding="utf-8", errors="replace")
        if "AWS::AppMesh::" not in text:  # CloudFormation's ${X} belong to !Sub
            filled |= {plausible(m) for m in PLACEHOLDER.finditer(text)}
            text = fill_placeholders(text, f.suffix == ".json")
        target.write_text(text)
    return filled


def states(found: Any) -> list[tuple[str, list[Resource]]]:
    """("base", resources) with the first version of each resource, then ("<file>", resources)
    for each file holding a later version of some resource, that version in its place."""
    order = sorted(set(found.origins), key=lambda o: (len(Path(o).name), o))
    rank = {o: i for i, o in enumerate(order)}
    chosen: dict[tuple[str, str | None, str], tuple[int, Resource]] = {}
    later: dict[str, list[Resource]] = {}
    for r, origin in zip(found.resources, found.origins, strict=True):
        key = (r.kind, r.parent, r.name)
        if key not in chosen or rank[origin] < chosen[key][0]:
            if key in chosen:
                loser = order[chosen[key][0]]
                later.setdefault(loser, []).append(chosen[key][1])
            chosen[key] = (rank[origin], r)
        else:
            later.setdefault(origin, []).append(r)
    base = [r for _, r in chosen.values()]
    out = [("base", base)]
    for origin, replacements in sorted(later.items()):
        keys = {(r.kind, r.parent, r.name) for r in replacements}
        out.append(
            (origin, [r for r in base if (r.kind, r.parent, r.name) not in keys] + replacements)
        )
    return out


def is_partial(problems: list[Any], filled: set[str], bare: bool) -> bool:
    """Whether every problem is an unresolved reference to a name the walkthrough gave outside
    its files: a filled placeholder, a `<...>` the reader replaces, or (when the directory holds
    bare specs, named after their files) a name or parent given on the command line."""
    for p in problems:
        if not p.message.startswith(UNRESOLVED):
            return False
        named = re.search(r'named "([^"]*)"', p.message)
        name = named.group(1) if named else None
        if bare or name in filled | LITERAL_PLACEHOLDERS or (name or "").startswith("<"):
            continue
        return False
    return True


def has_bare_specs(found: Any) -> bool:
    """Whether some resource took its file's name (a bare `{"spec": ...}`)."""
    return any(
        r.name == Path(origin).name.split(".")[0]
        for r, origin in zip(found.resources, found.origins, strict=True)
    )


class Pki:
    """One CA and one certificate standing in for every file the walkthroughs mount."""

    def __init__(self, root: Path) -> None:
        trustme = pytest.importorskip("trustme")
        ca = trustme.CA()
        cert = ca.issue_cert("*.local", "*.svc.cluster.local", "localhost")
        root.mkdir(parents=True, exist_ok=True)
        self.chain, self.key, self.ca = root / "cert.pem", root / "key.pem", root / "ca.pem"
        cert.private_key_pem.write_to_path(str(self.key))
        cert.cert_chain_pems[0].write_to_path(str(self.chain))
        ca.cert_pem.write_to_path(str(self.ca))
        self.secrets: set[str] = set()

    def localize(self, value: Any, key: str = "") -> Any:
        """`value` with certificate and trust files replaced by this PKI's files; SDS secret
        names recorded for `proxy.sds`."""
        if isinstance(value, list):
            return [self.localize(v) for v in value]
        if not isinstance(value, dict):
            return value
        out = {k: self.localize(v, k) for k, v in value.items()}
        if key == "file" and "privateKey" in out:
            out.update(certificateChain=str(self.chain), privateKey=str(self.key))
        elif key == "file" and "certificateChain" in out:
            out["certificateChain"] = str(self.ca)
        if key == "sds" and isinstance(out.get("secretName"), str):
            self.secrets.add(out["secretName"])
        return out

    def sds(self) -> dict[str, Any]:
        files = {"certificateChain": str(self.chain), "privateKey": str(self.key), "trust": str(self.ca)}
        return {"secrets": {name: files for name in sorted(self.secrets)}}


def targets(resources: list[Resource]) -> list[tuple[str, str]]:
    out = [("gateway", r.name) for r in resources if r.kind == "VirtualGateway"]
    return out + [("node", r.name) for r in resources if r.kind == "VirtualNode"]


def proxy_section(mode: str) -> dict[str, Any]:
    """Loopback only; the listener ports are bound on 0 when served (`port_overrides`)."""
    if mode == "gateway":
        return {"bind": "127.0.0.1"}
    return {"bind": "127.0.0.1", "outbound": "127.0.0.1:0", "app": "127.0.0.2:1"}


def configs(
    resources: list[Resource], mesh: str, pki: Pki, where: str, partial: Any
) -> tuple[list[Any], list[str]]:
    """A validated config per gateway and node, and the AWS-only refusals met; a target whose
    only problems are `partial` (names given outside the files) is left out."""
    localized = [Resource(r.kind, r.name, pki.localize(r.spec), r.parent) for r in resources]
    out, refused = [], []
    for mode, name in targets(localized):
        doc = to_native(localized, mesh, **{mode: name}, **proxy_section(mode))
        if pki.secrets:
            doc["proxy"]["sds"] = pki.sds()
        try:
            cfg = from_dict(doc, f"{where} as {mode} {name}")
        except ConfigError as exc:
            if partial(exc.problems):
                continue
            assert all(p.message.startswith(NOT_SERVABLE) for p in exc.problems), str(exc)
            assert all("ACM" in p.message for p in exc.problems), str(exc)
            refused += [str(p) for p in exc.problems]
            continue
        out.append(cfg)
    return out, refused


async def serve(cfg: Any) -> None:
    pytest.importorskip("meshplane._core", reason="meshplane._core is not built")
    from meshplane import Proxy

    async with Proxy(cfg, admin="127.0.0.1:0", drain_ms=0, port_overrides=_all_ports(cfg)) as proxy:
        assert proxy.listener_addresses(), f"{cfg.source}: no listener started"


def _all_ports(cfg: Any) -> dict[int, int]:
    from meshplane.config.topology import proxy_listeners

    return {pl.port: 0 for pl in proxy_listeners(cfg) if pl.role != "outbound"}


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"App Mesh corpus not found at {CORPUS}")
@pytest.mark.parametrize("example", examples() or ["<corpus missing>"])
async def test_example_directory_imports_validates_and_serves(example: str, tmp_path: Path) -> None:
    root = tmp_path / "example"
    filled = filled_copy(CORPUS / example, root)
    found = import_paths([root])
    assert found.skipped == [], "a corpus file was taken for a non-App Mesh file"
    for p in found.problems:
        rel = str((Path(example) / Path(p.file).relative_to(root)).as_posix())
        if rel in BROKEN_YAML:
            assert p.message.startswith("invalid YAML"), str(p)
            continue
        # Successive versions of one resource: the only other refusal, naming both files.
        assert DUPLICATE in p.message, str(p)
        other = p.message.split(DUPLICATE, 1)[1].split(" (", 1)[0]
        assert Path(p.file).is_file() and Path(other).is_file() and p.file != other
    mesh = (found.mesh_names() or ["mesh"])[0]
    pki = Pki(tmp_path / "pki")
    bare = has_bare_specs(found)

    def outside(problems: list[Any]) -> bool:
        return is_partial(problems, filled, bare)

    served = refused = partial = 0
    for label, resources in states(found):
        where = f"{example} ({label})"
        problems = validate_resources(resources, where)
        if problems:
            assert outside(problems), "\n".join(map(str, problems))
            partial += 1
            continue
        cfgs, aws_only = configs(resources, mesh, pki, where, outside)
        refused += bool(aws_only)
        if label != "base":
            continue  # later versions: validated and planned; the base mesh is served
        for cfg in cfgs:
            await serve(cfg)
            served += 1
    duplicates = sum(DUPLICATE in p.message for p in found.problems)
    print(f"{example}: served {served}, refused {refused}, partial {partial}, dups {duplicates}")
    assert served or refused or partial, "nothing was checked"
