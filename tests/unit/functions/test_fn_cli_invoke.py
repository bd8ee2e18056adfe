"""`meshplane fn invoke`'s command line: options, payload sources, and what it says when the
payload is bad or no proxy answers (the runs against a proxy are in tests/e2e/functions)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from meshplane.cli import main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_lists_every_option_and_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["fn", "invoke", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for option in ("NAME[:QUALIFIER]", "--payload", "--async", "--dry-run", "--log", "--admin",
                   "--timeout", "MESHPLANE_ADMIN", "exit status", "5 no proxy answered"):
        assert option in text


def test_async_and_dry_run_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["fn", "invoke", "hello", "--async", "--dry-run"])
    assert caught.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_payload_that_is_not_json_is_refused_before_connecting(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["fn", "invoke", "hello", "--payload", "{oops", "--admin", f"127.0.0.1:{free_port()}"]) == 1
    assert "--payload: not JSON" in capsys.readouterr().err
    assert main(["fn", "invoke", "hello", "--payload", f"@{tmp_path}/missing.json"]) == 1
    assert "missing.json" in capsys.readouterr().err


def test_no_proxy_at_the_admin_address(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("MESHPLANE_ADMIN", f"127.0.0.1:{port}")
    assert main(["fn", "invoke", "hello", "--payload", "{}"]) == 5
    err = capsys.readouterr().err
    assert f"no proxy answered at 127.0.0.1:{port}" in err and "--admin" in err
    assert main(["fn", "invoke", "hello", "--admin", "nonsense"]) == 1
    assert "--admin" in capsys.readouterr().err
