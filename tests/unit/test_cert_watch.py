"""CertWatch.check against real files (no sockets, no core): reload only when some file's
content changes, keep going after a rejected reload, wait while a file is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from meshplane.drivers.cert_watch import CertWatch, observe


class Reloader:
    def __init__(self) -> None:
        self.calls = 0
        self.fail: str | None = None

    def __call__(self) -> int:
        self.calls += 1
        if self.fail:
            raise ValueError(self.fail)
        return 1


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    out = [tmp_path / "cert.pem", tmp_path / "key.pem"]
    for i, path in enumerate(out):
        path.write_text(f"v1-{i}")
    return out


def watching(files: list[Path], reload: Reloader) -> CertWatch:
    watch = CertWatch(reload)
    watch.retarget(observe(str(f) for f in files))
    return watch


def bump(path: Path, text: str) -> None:
    """Write `text` and make sure the mtime moves even on a coarse clock."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_nothing_changed_nothing_reloaded(files: list[Path]) -> None:
    reload = Reloader()
    watch = watching(files, reload)
    assert watch.check() is None
    bump(files[0], "v1-0")  # same bytes, new mtime (touch, editor save)
    assert watch.check() is None
    assert reload.calls == 0
    assert watch.paths == sorted(str(f) for f in files)


def test_a_content_change_reloads_once(files: list[Path]) -> None:
    reload = Reloader()
    watch = watching(files, reload)
    bump(files[0], "v2-0")
    bump(files[1], "v2-1")
    assert watch.check() is True
    assert watch.check() is None
    assert (reload.calls, watch.reloads, watch.failures) == (1, 1, 0)
    assert watch.last_reload is not None


def test_a_rejected_reload_is_reported_and_retried_on_the_next_change(
    files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    reload = Reloader()
    watch = watching(files, reload)
    reload.fail = "key.pem: private key does not match the certificate"
    bump(files[0], "v2-0")  # the certificate first: key and certificate disagree
    assert watch.check() is False
    assert watch.failures == 1 and "key.pem" in (watch.last_error or "")
    assert "previous certificates keep serving" in caplog.text
    assert watch.check() is None  # no change, no retry
    reload.fail = None
    bump(files[1], "v2-1")  # then the key
    assert watch.check() is True
    assert watch.last_error is None and reload.calls == 2


def test_a_missing_file_holds_the_reload_until_it_is_back(files: list[Path]) -> None:
    reload = Reloader()
    watch = watching(files, reload)
    files[1].unlink()
    bump(files[0], "v2-0")
    assert watch.check() is None
    assert reload.calls == 0
    files[1].write_text("v2-1")
    assert watch.check() is True
    assert reload.calls == 1


def test_retarget_replaces_the_files_and_clears_the_error(files: list[Path], tmp_path: Path) -> None:
    reload = Reloader()
    watch = watching(files, reload)
    reload.fail = "bad"
    bump(files[0], "v2-0")
    assert watch.check() is False
    other = tmp_path / "other.pem"
    other.write_text("x")
    watch.retarget(observe([str(other)]))
    assert watch.paths == [str(other)] and watch.last_error is None
    bump(files[0], "v3-0")  # no longer watched
    assert watch.check() is None
