"""Pure cgroup v2 hosts, on a fake cgroupfs (see test_cgroups_fakefs.py)."""

from __future__ import annotations

import pytest
from test_cgroups_fakefs import FakeHost, v2host  # noqa: F401  (fixture)

from pycontain.actuate.cgroups import AgentCgroup
from pycontain.core.errors import EnvironmentProblem, UsageError


def test_detects_pure_v2(v2host):
    lay = v2host.layout()
    assert lay.kind == "v2"
    assert lay.unified == str(v2host.unified)
    assert lay.v1 == {}
    assert {"cpu", "memory", "pids"} <= lay.v2_controllers
    assert lay.own_v2() == str(v2host.unified / "user.slice/session-1.scope")


def test_agent_is_nested_under_own_cgroup_with_unique_name(v2host):
    lay = v2host.layout()
    a = AgentCgroup.create("bot", layout=lay)
    b = AgentCgroup.create("bot", layout=lay)
    own = v2host.unified / "user.slice/session-1.scope"
    for cg in (a, b):
        assert cg.v2_path.startswith(str(own) + "/pycontain-bot-")
        assert cg.procs_files() == [cg.v2_path + "/cgroup.procs"]
        assert cg.v1_paths == {}
    assert a.v2_path != b.v2_path
    # nothing was moved: pycontain is still alone in its own cgroup
    assert v2host.read(own / "cgroup.procs") == "4242"


def test_own_cgroup_with_processes_cannot_delegate_and_budgets_explain(v2host):
    own = v2host.unified / "user.slice/session-1.scope"
    # as systemd sets it up: controllers reach the session scope, which holds pycontain
    (v2host.unified / "user.slice/cgroup.subtree_control").write_text("cpu memory pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    cg = AgentCgroup.create("bot", layout=v2host.layout())
    # no controller was enabled (the kernel said EBUSY) and nothing was moved
    assert v2host.read(own / "cgroup.subtree_control") == ""
    with pytest.raises(EnvironmentProblem) as e:
        cg.set_budgets(cpu_cores=1.0, memory_bytes=1 << 30, memory_high_bytes=None, pids=100)
    assert "no internal processes" in e.value.message
    assert "--cgroup-parent" in e.value.hint
    # the cgroup still works for what needs no controller
    cg.kill()
    assert v2host.read(cg.v2_path + "/cgroup.kill") == "1"


def test_undelegated_controllers_are_named(v2host):
    cg = AgentCgroup.create("bot", layout=v2host.layout())
    with pytest.raises(EnvironmentProblem) as e:
        cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=10)
    assert "pids is not delegated" in e.value.message


def test_no_budgets_needs_no_controllers(v2host):
    cg = AgentCgroup.create("bot", layout=v2host.layout())
    cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=None)


def test_empty_parent_gets_controllers_and_budgets_land(v2host):
    parent = v2host.make_cgroup("/pycontain.slice")      # no processes of its own
    # the root delegates cpu memory pids to its children
    (v2host.unified / "cgroup.subtree_control").write_text("cpu memory pids\n")
    parent_fresh = v2host.unified / "pycontain2.slice"
    v2host.mkdirs(v2host.unified, "pycontain2.slice")
    cg = AgentCgroup.create("bot", parent=str(parent_fresh), layout=v2host.layout())
    assert ("sys/fs/cgroup/pycontain2.slice/cgroup.subtree_control", "+cpu +memory +pids") in v2host.writes
    assert v2host.read(parent_fresh / "cgroup.subtree_control") == "cpu memory pids"
    assert parent.exists()
    cg.set_budgets(cpu_cores=0.5, memory_bytes=64 << 20, memory_high_bytes=48 << 20, pids=32)
    d = cg.v2_path
    assert v2host.read(d + "/cpu.max") == "50000 100000"
    assert v2host.read(d + "/memory.max") == str(64 << 20)
    assert v2host.read(d + "/memory.high") == str(48 << 20)
    assert v2host.read(d + "/memory.swap.max") == "0"
    assert v2host.read(d + "/pids.max") == "32"

    cg.throttle(0.2)
    assert v2host.read(d + "/cpu.max") == "20000 100000"
    cg.throttle(0.001)                       # below the kernel's 1 ms minimum quota
    assert v2host.read(d + "/cpu.max") == "1000 100000"
    cg.unthrottle()
    assert v2host.read(d + "/cpu.max") == "50000 100000"

    cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=None)
    assert v2host.read(d + "/cpu.max") == "max 100000"
    assert v2host.read(d + "/memory.max") == "max"
    assert v2host.read(d + "/memory.high") == "max"
    assert v2host.read(d + "/memory.swap.max") == "max"
    assert v2host.read(d + "/pids.max") == "max"


def test_root_cgroup_may_hold_processes_and_still_delegate(tmp_path, monkeypatch):
    host = FakeHost(tmp_path, monkeypatch, "v2", own_v2="/")
    (host.unified / "cgroup.procs").write_text("1\n4242\n")
    cg = AgentCgroup.create("bot", layout=host.layout())
    assert host.read(host.unified / "cgroup.subtree_control") == "cpu memory pids"
    cg.set_budgets(cpu_cores=2, memory_bytes=None, memory_high_bytes=None, pids=None)
    assert host.read(cg.v2_path + "/cpu.max") == "200000 100000"


def test_already_delegated_parent_is_left_as_is(v2host):
    (v2host.unified / "cgroup.subtree_control").write_text("cpu memory pids\n")
    p = v2host.make_cgroup("/deleg", subtree="cpu memory pids")
    before = len(v2host.writes)
    cg = AgentCgroup.create("bot", parent=str(p), layout=v2host.layout())
    assert not [w for w in v2host.writes[before:] if w[0].endswith("subtree_control")]
    cg.set_budgets(cpu_cores=1, memory_bytes=1 << 20, memory_high_bytes=None, pids=5)


def test_sample_reads_v2_files(v2host):
    (v2host.unified / "cgroup.subtree_control").write_text("cpu memory pids\n")
    p = v2host.make_cgroup("/deleg", subtree="cpu memory pids")
    cg = AgentCgroup.create("bot", parent=str(p), layout=v2host.layout())
    cg.set_budgets(cpu_cores=1.5, memory_bytes=1 << 30, memory_high_bytes=1 << 29, pids=64)
    d = cg.v2_path
    open(d + "/cpu.stat", "w").write("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    open(d + "/memory.current", "w").write("12345\n")
    open(d + "/pids.current", "w").write("7\n")
    open(d + "/memory.events", "w").write("low 0\nhigh 3\nmax 9\noom 1\noom_kill 1\n")
    s = cg.sample()
    assert s.cpu_usage_seconds == pytest.approx(2.5)
    assert (s.memory_bytes, s.pids) == (12345, 7)
    assert s.cpu_limit_cores == pytest.approx(1.5)
    assert (s.memory_max_bytes, s.memory_high_bytes) == (1 << 30, 1 << 29)
    assert (s.memory_events_high, s.memory_events_oom_kill) == (3, 1)


def test_freeze_thaw_and_timeout(v2host):
    cg = AgentCgroup.create("bot", layout=v2host.layout())
    d = cg.v2_path
    with pytest.raises(TimeoutError):          # the fake kernel never reports frozen
        cg.freeze(timeout=0.05)
    assert v2host.read(d + "/cgroup.freeze") == "1"
    open(d + "/cgroup.events", "w").write("populated 1\nfrozen 1\n")
    cg.freeze()
    assert cg.is_frozen()
    cg.thaw()
    assert v2host.read(d + "/cgroup.freeze") == "0"


def test_pids_cover_the_subtree_and_remove_is_idempotent(v2host):
    cg = AgentCgroup.create("bot", layout=v2host.layout())
    open(cg.v2_path + "/cgroup.procs", "w").write("")
    v2host.mkdirs(v2host.unified, cg.v2_path[len(str(v2host.unified)):] + "/inner/deeper")
    cg.remove()
    cg.remove()
    import os
    assert not os.path.exists(cg.v2_path)


def test_parent_outside_cgroup2_is_refused(v2host, tmp_path):
    with pytest.raises(UsageError):
        AgentCgroup.create("bot", parent=str(tmp_path), layout=v2host.layout())
    with pytest.raises(UsageError):
        AgentCgroup.create("bot", parent=str(v2host.unified / "nope"), layout=v2host.layout())


def test_adopt_on_v2_uses_the_dir_and_never_removes_it(v2host):
    d = v2host.make_cgroup("/system.slice/job.service", procs=[77])
    cg = AgentCgroup.adopt(str(d), "job", layout=v2host.layout())
    assert cg.v2_path == str(d) and cg.v1_paths == {}
    cg.remove()
    assert d.exists()


def test_watchdog_roundtrip_of_cgroup_description(v2host):
    cg = AgentCgroup.create("bot", layout=v2host.layout())
    again = AgentCgroup.from_dict(cg.to_dict())
    assert (again.v2_path, again.cgroup_id, again.v1_paths) == (cg.v2_path, cg.cgroup_id, cg.v1_paths)
