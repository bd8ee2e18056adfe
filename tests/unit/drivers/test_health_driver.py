"""`ActiveHealthChecks` without sockets: probes are fakes, time is trio's MockClock (autojump),
the core is a recorder. A probe that raises is logged at error level, counted and recorded as a
network failure, and the host keeps being checked."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import trio
import trio.testing
from meshplane.config.resilience import ResilienceTarget
from meshplane.drivers import health
from meshplane.drivers.health import ActiveHealthChecks
from meshplane.drivers.probes import ProbeSpec
from meshplane.policy import ProbeResult

HOST = "10.0.0.1:80"
CHECK = {"protocol": "http", "path": "/health", "healthyThreshold": 2, "unhealthyThreshold": 2,
         "timeoutMillis": 2000, "intervalMillis": 5000}


class Recorder:
    def __init__(self) -> None:
        self.verdicts: list[bool] = []
        self.changed = trio.Event()

    def set_host_health(self, cluster: str, address: str, healthy: bool) -> None:
        self.verdicts.append(healthy)
        self.changed.set()


class ScriptedProbe:
    """Raises for the first `raises` probes, then succeeds."""

    def __init__(self, raises: int) -> None:
        self.raises = raises
        self.calls = 0

    async def probe(self) -> ProbeResult:
        self.calls += 1
        if self.calls <= self.raises:
            raise RuntimeError("a bug in the probe")
        return ProbeResult.SUCCESS

    def close(self) -> None:
        pass


async def test_a_probe_that_raises_is_logged_counted_and_the_host_stays_checked(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = ScriptedProbe(raises=2)

    def make_probe(spec: ProbeSpec, ip: str, port: int) -> ScriptedProbe:
        return probe

    monkeypatch.setattr(health, "make_probe", make_probe)
    core = Recorder()
    checks = ActiveHealthChecks(core)
    checks.retarget([ResilienceTarget("c", "n", 80, "http", (HOST,), "n", health_check=CHECK)])
    with caplog.at_level(logging.ERROR, logger="meshplane.health"):
        async with trio.open_nursery() as nursery:
            await nursery.start(checks.run)
            # Two raising probes (two failures: unhealthy), then two successes: healthy again.
            with trio.fail_after(600):  # virtual seconds
                while core.verdicts[-1:] != [True]:
                    await core.changed.wait()
                    core.changed = trio.Event()
            nursery.cancel_scope.cancel()
    assert core.verdicts == [False, True]
    assert probe.calls == 4 and checks.errors == 2
    stats = checks.stats()["c"]
    assert (stats["attempt"], stats["failure"], stats["network_failure"], stats["success"]) == (4, 2, 2, 2)
    assert len(caplog.records) == 2
    assert all(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    assert f"the probe of cluster c host {HOST} failed (RuntimeError: a bug in the probe)" in caplog.records[0].getMessage()


async def test_read_hosts_in_steps_equals_hosts_and_stats_count_the_same() -> None:
    """The per-host view copied in steps (checkpoints between them) is the one-moment copy
    when nothing changes meanwhile, and the `healthy` gauge counts what it shows."""
    checks = ActiveHealthChecks(Recorder())
    hosts = tuple(f"10.0.{i // 256}.{i % 256}:80" for i in range(10))
    checks.retarget([ResilienceTarget("c", "n", 80, "http", hosts, "n", health_check=CHECK)])
    whole = checks.hosts()
    for step in (1, 3, 10, 1024):
        assert await checks.read_hosts(step) == whole
    healthy = sum(1 for h in whole["c"].values() if h["state"] == "healthy")
    assert checks.stats()["c"]["healthy"] == healthy


def test_the_policy_modules_load_with_the_first_checked_cluster_only() -> None:
    # A proxy without health checks or outlier detection never loads meshplane.policy nor the
    # probes (~0.4 MiB resident; benches/README.md, "Memory, fourth pass").
    code = (
        "import sys\n"
        "from meshplane.config.resilience import ResilienceTarget\n"
        "from meshplane.drivers.resilience import Resilience\n"
        "def loaded():\n"
        "    return sorted(m for m in sys.modules if m.startswith(('meshplane.policy', 'meshplane.drivers.probes')))\n"
        "class Core:\n"
        "    def set_host_health(self, *a): pass\n"
        "    def set_host_ejected(self, *a): pass\n"
        "async def main():\n"
        "    r = Resilience(Core())\n"
        "    r.retarget([ResilienceTarget('c', 'n', 80, 'http', ('10.0.0.1:80',), 'n')])\n"
        "    print(loaded() == [])\n"
        f"    r.retarget([ResilienceTarget('c', 'n', 80, 'http', ('10.0.0.1:80',), 'n', health_check={CHECK!r})])\n"
        "    print('meshplane.policy' in loaded(), r.health.stats()['c']['attempt'])\n"
        "import trio\n"
        "trio.run(main)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True", "0"], out.stderr


async def test_annotate_from_the_packed_view_equals_annotate_from_dicts(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ResilienceView.annotate` gives hosts the same `active_hc` and `health_flags` (in the same
    order, beside `outlier`) from the compact view as from a dict per host: healthy, unknown,
    unhealthy after a timeout, a host the stats lack, a host the checker lacks."""
    from meshplane.drivers.resilience import ResilienceView

    results = {"10.0.0.1:80": ProbeResult.SUCCESS, "10.0.0.2:80": ProbeResult.TIMEOUT}

    class Fixed:
        def __init__(self, key: str) -> None:
            self.key = key

        async def probe(self) -> ProbeResult:
            return results[self.key]

        def close(self) -> None:
            pass

    monkeypatch.setattr(health, "make_probe", lambda spec, ip, port: Fixed(f"{ip}:{port}"))
    checks = ActiveHealthChecks(Recorder())
    hosts = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")
    check = {**CHECK, "protocol": "tcp"}
    extension = {"initialJitterMillis": 0}
    checks.retarget([ResilienceTarget("c", "n", 80, "tcp", hosts, "n", health_check=check,
                                      health_extension=extension)])
    checks.set_endpoints("c", hosts[:2])  # 10.0.0.3 unchecked again: the core still has it
    async with trio.open_nursery() as nursery:
        await nursery.start(checks.run)
        await trio.sleep(30)  # virtual: both hosts probed several times
        nursery.cancel_scope.cancel()

    def stats() -> dict[str, object]:
        core_hosts = {key: {"healthy": key != hosts[1], "failed_active_hc": key == hosts[1]}
                      for key in (*hosts[1:], "10.0.0.9:80")}
        return {"clusters": {"c": {"hosts": core_hosts}}}

    od = {"c": {hosts[1]: {"ejected": False, "num_ejections": 0}}}
    from_dicts = ResilienceView({}, {}, checks.hosts(), od).annotate(stats())
    from_packed = ResilienceView({}, {}, checks.packed(), od).annotate(stats())
    assert from_packed == from_dicts
    got = from_packed["clusters"]["c"]["hosts"]  # type: ignore[index]
    assert [list(h) for h in got.values()] == [list(h) for h in from_dicts["clusters"]["c"]["hosts"].values()]  # type: ignore[index]
    assert got[hosts[1]]["health_flags"] == "/failed_active_hc/active_hc_timeout"
    assert got[hosts[1]]["active_hc"]["last_result"] == "timeout"
    assert "active_hc" not in got["10.0.0.9:80"] and "active_hc" not in got["10.0.0.3:80"]


class CountingProbe:
    """Succeeds after one checkpoint; counts its probes in `probed`."""

    def __init__(self, probed: dict[str, int], key: str) -> None:
        self.probed, self.key = probed, key

    async def probe(self) -> ProbeResult:
        await trio.lowlevel.checkpoint()
        self.probed[self.key] = self.probed.get(self.key, 0) + 1
        return ProbeResult.SUCCESS

    def close(self) -> None:
        pass


@pytest.mark.parametrize("max_concurrent", [3, 512])
async def test_every_due_host_of_every_cluster_starts_without_the_clock_moving(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, max_concurrent: int
) -> None:
    """More hosts due at one moment than the scheduler takes per pass (`DUE_PER_STEP`, per
    cluster) and starts per pass (`PROBES_PER_STEP`): all of them are probed at that moment,
    in both clusters, the clock standing still (no pass waits for a timer)."""
    probed: dict[str, int] = {}

    def make_probe(spec: ProbeSpec, ip: str, port: int) -> CountingProbe:
        return CountingProbe(probed, f"{ip}:{port}")

    monkeypatch.setattr(health, "make_probe", make_probe)
    count = 3 * health.DUE_PER_STEP + 5
    clusters = {name: tuple(f"10.{k}.{i // 256}.{i % 256}:80" for i in range(count))
                for k, name in enumerate(("a", "b"))}
    checks = ActiveHealthChecks(Recorder(), max_concurrent=max_concurrent)
    checks.retarget([ResilienceTarget(name, "n", 80, "http", hosts, "n", health_check=CHECK)
                     for name, hosts in clusters.items()])
    mock_clock.jump(10)  # past every host's first due time (initial jitter: one 5 s interval)
    async with trio.open_nursery() as nursery:
        await nursery.start(checks.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert probed == {key: 1 for hosts in clusters.values() for key in hosts}
