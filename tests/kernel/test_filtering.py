"""In-kernel exec verdicts: a denied program never runs one instruction.

Each denied program would create a sentinel file as its first action; the
file never appears, the parent sees SIGKILL, and the exec event says DENY.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from exec_harness import (  # noqa: F401  (fixtures)
    agent,
    collector,
    deny_tables,
    exec_probes,
    execs_of,
    sentinel_script,
)

from pycontain.actuate.cgroups import AgentCgroup
from pycontain.actuate.launch import launch
from pycontain.core.events import Flag, Mode, Verdict


@pytest.fixture
def enforcing(exec_probes):
    exec_probes.set_tables(deny_tables())
    yield exec_probes
    exec_probes.set_tables(deny_tables())


def _run(argv, cg) -> int:
    p = launch(argv, cg)
    try:
        return p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()


def _assert_killed(collector, pid: int, rule: int) -> None:
    evs = collector.wait_for(lambda e: e.kind == "exec" and e.h.pid == pid)
    assert evs, "no exec event for the denied program"
    ev = evs[-1]
    assert ev.h.verdict == Verdict.DENY
    assert ev.h.flags & Flag.KILLED
    assert ev.h.rule_id == rule


def test_denied_name_never_runs(enforcing, agent, collector, tmp_path):
    script, sentinel = sentinel_script(tmp_path, "xmrig")
    p = launch([str(script)], agent)
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not sentinel.exists()
    _assert_killed(collector, p.pid, rule=1)


def test_denied_name_is_case_insensitive(enforcing, agent, collector, tmp_path):
    script, sentinel = sentinel_script(tmp_path, "XMRig")
    p = launch([str(script)], agent)
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not sentinel.exists()
    _assert_killed(collector, p.pid, rule=1)


@pytest.mark.parametrize("url", ["stratum+tcp://pool.example:3333", "StRaTuM+TCP://pool.example:3333"])
def test_denied_argv_pattern_never_runs(enforcing, agent, collector, tmp_path, url):
    sentinel = tmp_path / "ran"
    p = launch(["/bin/sh", "-c", f"touch '{sentinel}'", "miner", "--url", url], agent)
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert not sentinel.exists()
    _assert_killed(collector, p.pid, rule=2)


def test_allowed_program_runs(enforcing, agent, collector, tmp_path):
    script, sentinel = sentinel_script(tmp_path, "trainer")
    assert _run([str(script), "--url", "https://example.org"], agent) == 0
    assert sentinel.exists()


def test_monitor_mode_runs_and_reports_would_deny(exec_probes, agent, collector, tmp_path):
    exec_probes.set_tables(deny_tables(mode=Mode.MONITOR))
    try:
        script, sentinel = sentinel_script(tmp_path, "xmrig")
        p = launch([str(script)], agent)
        assert p.wait(timeout=10) == 0
        assert sentinel.exists()
        evs = collector.wait_for(lambda e: e.kind == "exec" and e.h.pid == p.pid)
        assert evs and evs[0].h.verdict == Verdict.WOULD_DENY
        assert evs[0].h.rule_id == 1 and not evs[0].h.flags & Flag.KILLED
    finally:
        exec_probes.set_tables(deny_tables())


def test_process_outside_the_agent_is_untouched(enforcing, agent, collector, tmp_path):
    script, sentinel = sentinel_script(tmp_path, "xmrig")
    p = subprocess.Popen([str(script)])
    assert p.wait(timeout=10) == 0
    assert sentinel.exists()
    collector.drain(0.3)
    assert not execs_of(collector.events, p.pid)


def test_nested_child_cgroup_is_tracked(enforcing, agent, collector, tmp_path):
    nested = AgentCgroup.create("nested", parent=agent.v2_path)
    try:
        script, sentinel = sentinel_script(tmp_path, "xmrig")
        p = launch([str(script)], nested)
        assert p.wait(timeout=10) == -signal.SIGKILL
        assert not sentinel.exists()
        _assert_killed(collector, p.pid, rule=1)
        ev = execs_of(collector.events, p.pid)[-1]
        assert ev.h.agent_id == agent.agent_id and ev.h.cgroup_id == nested.cgroup_id
    finally:
        nested.remove()


def test_reload_swaps_rules(exec_probes, agent, collector, tmp_path):
    from pycontain.core.events import PatternWhere
    from pycontain.core.kernel_rules import KernelTables

    exec_probes.set_tables(KernelTables(exec_names={"minerd": 7},
                                        exec_patterns=[("--donate-level", PatternWhere.ARGS, 8)]))
    try:
        old, old_sentinel = sentinel_script(tmp_path, "xmrig")
        assert _run([str(old)], agent) == 0 and old_sentinel.exists()
        new, new_sentinel = sentinel_script(tmp_path, "minerd")
        assert _run([str(new)], agent) == -signal.SIGKILL and not new_sentinel.exists()
        s = tmp_path / "donate"
        assert _run(["/bin/sh", "-c", f"touch '{s}'", "x", "--DONATE-level=1"], agent) == -signal.SIGKILL
        assert not s.exists()
        s2 = tmp_path / "stratum"
        assert _run(["/bin/sh", "-c", f"touch '{s2}'", "x", "stratum+tcp://a"], agent) == 0
        assert s2.exists()
    finally:
        exec_probes.set_tables(deny_tables())
