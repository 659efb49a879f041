"""Hybrid hosts (v1 controllers + controller-less cgroup2), on a fake
cgroupfs (see test_cgroups_fakefs.py), plus mount parsing."""

from __future__ import annotations

import logging
import os

import pytest
from test_cgroups_fakefs import hybrid  # noqa: F401  (fixture)

from pycontain.actuate.cgroups import AgentCgroup, detect_layout, make_home, remove_home
from pycontain.actuate.cgroups.layout import parse_proc_cgroup
from pycontain.core.errors import EnvironmentProblem


def test_detects_hybrid_with_comounted_cpu_cpuacct(hybrid):
    lay = hybrid.layout()
    assert lay.kind == "hybrid"
    assert lay.unified == str(hybrid.unified)
    assert set(lay.v1) == {"cpu", "cpuacct", "memory", "pids", "freezer"}   # name=systemd ignored
    assert lay.v1["cpu"] == lay.v1["cpuacct"]
    assert lay.own_v1("memory") == str(hybrid.v1["memory"] / "process_api/abc")
    assert lay.own_v1("pids") == str(hybrid.v1["pids"])


def test_create_nests_in_every_hierarchy(hybrid):
    cg = AgentCgroup.create("bot", layout=hybrid.layout())
    leaf = os.path.basename(cg.v2_path)
    assert leaf.startswith("pycontain-bot-")
    assert cg.v2_path == str(hybrid.unified / "user.slice/session-1.scope" / leaf)
    assert cg.v1_paths["memory"] == str(hybrid.v1["memory"] / "process_api/abc" / leaf)   # never leaves its memcg
    assert cg.v1_paths["cpu"] == cg.v1_paths["cpuacct"] == str(hybrid.v1["cpu"] / leaf)
    files = cg.procs_files()
    assert files[-1] == cg.v2_path + "/cgroup.procs"         # v2 last: it makes the task an agent's
    assert len(files) == len(set(files)) == 4                 # v2 + cpu,cpuacct + memory + pids
    assert "freezer" not in cg.v1_paths                       # cgroup2's cgroup.freeze serves
    assert all(os.path.exists(f) for f in files)


def test_budgets_land_in_v1_files(hybrid):
    cg = AgentCgroup.create("bot", layout=hybrid.layout())
    cg.set_budgets(cpu_cores=0.25, memory_bytes=64 << 20, memory_high_bytes=32 << 20, pids=20)
    cpu, mem, pids = cg.v1_paths["cpu"], cg.v1_paths["memory"], cg.v1_paths["pids"]
    assert hybrid.read(cpu + "/cpu.cfs_quota_us") == "25000"
    assert hybrid.read(cpu + "/cpu.cfs_period_us") == "100000"
    assert hybrid.read(mem + "/memory.limit_in_bytes") == str(64 << 20)
    assert hybrid.read(mem + "/memory.memsw.limit_in_bytes") == str(64 << 20)   # no escape into swap
    assert hybrid.read(mem + "/memory.soft_limit_in_bytes") == str(32 << 20)
    assert hybrid.read(pids + "/pids.max") == "20"
    # raising the limit must write memsw first (the fake kernel enforces memsw >= limit)
    cg.set_budgets(cpu_cores=None, memory_bytes=256 << 20, memory_high_bytes=None, pids=None)
    assert hybrid.read(mem + "/memory.limit_in_bytes") == str(256 << 20)
    assert hybrid.read(mem + "/memory.memsw.limit_in_bytes") == str(256 << 20)
    assert hybrid.read(cpu + "/cpu.cfs_quota_us") == "-1"
    assert hybrid.read(pids + "/pids.max") == "max"
    cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=None)
    assert int(hybrid.read(mem + "/memory.limit_in_bytes")) > 1 << 60


def test_throttle_and_sample_on_v1(hybrid):
    cg = AgentCgroup.create("bot", layout=hybrid.layout())
    cg.set_budgets(cpu_cores=1.0, memory_bytes=1 << 30, memory_high_bytes=None, pids=None)
    cg.throttle(0.5)
    assert cg.cpu_limit_cores() == pytest.approx(0.5)
    cg.unthrottle()
    assert cg.cpu_limit_cores() == pytest.approx(1.0)
    open(cg.v1_paths["cpuacct"] + "/cpuacct.usage", "w").write("3000000000\n")
    open(cg.v1_paths["memory"] + "/memory.usage_in_bytes", "w").write("4096\n")
    open(cg.v1_paths["memory"] + "/memory.oom_control", "w").write("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    open(cg.v1_paths["pids"] + "/pids.current", "w").write("3\n")
    s = cg.sample()
    assert s.cpu_usage_seconds == pytest.approx(3.0)
    assert (s.memory_bytes, s.pids, s.memory_events_oom_kill) == (4096, 3, 2)
    assert s.memory_max_bytes == 1 << 30 and s.memory_high_bytes is None


def test_v1_freezer_when_cgroup2_has_no_freeze(hybrid):
    """An adopted cgroup whose processes sit in a v1 freezer cgroup of their own."""
    made = AgentCgroup.create("bot", layout=hybrid.layout())
    freezer = str(hybrid.v1["freezer"] / os.path.basename(made.v2_path))
    os.makedirs(freezer)
    open(freezer + "/freezer.state", "w").close()
    cg = AgentCgroup(made.name, made.v2_path, {**made.v1_paths, "freezer": freezer}, kind="hybrid")
    os.unlink(cg.v2_path + "/cgroup.freeze")          # kernel < 5.2
    open(cg.v1_paths["freezer"] + "/freezer.state", "w").write("FROZEN\n")  # the fake freezes at once
    cg.freeze()
    assert hybrid.read(cg.v1_paths["freezer"] + "/freezer.state") == "FROZEN"
    assert cg.is_frozen()
    cg.thaw()
    assert hybrid.read(cg.v1_paths["freezer"] + "/freezer.state") == "THAWED"
    assert not cg.is_frozen()


def test_pids_union_and_remove_all_dirs(hybrid):
    cg = AgentCgroup.create("bot", layout=hybrid.layout())
    assert cg.pids() == []
    cg.remove()
    cg.remove()
    assert not os.path.exists(cg.v2_path)
    assert not any(os.path.exists(p) for p in cg.v1_paths.values())
    assert (hybrid.v1["memory"] / "process_api/abc").is_dir()   # pycontain's own cgroup stays


def test_daemon_home_groups_its_agents_in_each_budget_hierarchy(hybrid):
    """The daemon's started agents share one v1 group per budget hierarchy
    (one CPU peer of the daemon, not one each), under pycontain's own v1
    cgroups, so never outside the memory cgroup it was given."""
    lay = hybrid.layout()
    home = make_home(lay.own_v2(), "pycontain-agents", lay)
    plan = AgentCgroup.plan(home, lay, v1_home="pycontain-agents")
    cg = AgentCgroup.create("bot", plan=plan)
    leaf = os.path.basename(cg.v2_path)
    assert cg.v2_path == os.path.join(home, leaf)
    assert cg.v1_paths["memory"] == str(hybrid.v1["memory"] / "process_api/abc/pycontain-agents" / leaf)
    assert cg.v1_paths["cpu"] == str(hybrid.v1["cpu"] / "pycontain-agents" / leaf)
    assert not (hybrid.v1["freezer"] / "pycontain-agents").exists()    # not joined: nothing made there
    cg.remove()
    remove_home(plan, "pycontain-agents")
    assert not os.path.exists(home)
    assert not (hybrid.v1["memory"] / "process_api/abc/pycontain-agents").exists()
    assert (hybrid.v1["memory"] / "process_api/abc").is_dir()


def test_adopt_finds_exclusive_v1_cgroups_only(hybrid, caplog):
    d = hybrid.make_cgroup("/system.slice/job.service", procs=[501, 502])
    mem = hybrid.mkdirs(hybrid.v1["memory"], "/system.slice/job.service")
    (mem / "cgroup.procs").write_text("501\n502\n")
    hybrid.mkdirs(hybrid.v1["pids"], "/shared")
    (hybrid.v1["pids"] / "shared/cgroup.procs").write_text("501\n502\n999\n")   # someone else too
    for pid in (501, 502):
        hybrid.write_proc_cgroup(pid, "/system.slice/job.service",
                                 {"memory": "/system.slice/job.service", "pids": "/shared"})
    cg = AgentCgroup.adopt(str(d), "job", layout=hybrid.layout())
    assert cg.v1_paths == {"memory": str(mem)}
    assert "shared with processes outside the agent" in cg.missing["pids"]
    assert "cpu" in cg.missing          # they sit in the root cpu cgroup
    with caplog.at_level(logging.WARNING, logger="pycontain.cgroups"):
        cg.set_budgets(cpu_cores=None, memory_bytes=1 << 20, memory_high_bytes=None, pids=10)
    assert hybrid.read(mem / "memory.limit_in_bytes") == str(1 << 20)
    assert "pids" in caplog.text           # logged, not raised: the agent stays tracked


def test_pure_v1_host_is_refused(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")
    with pytest.raises(EnvironmentProblem) as e:
        detect_layout(proc_root=str(tmp_path), mounts_file=str(mi))
    assert "cgroup2" in e.value.message


def test_mountinfo_escapes_and_optional_fields(tmp_path):
    point = tmp_path / "cg two"
    point.mkdir()
    mi = tmp_path / "mountinfo"
    esc = str(point).replace(" ", "\\040")
    mi.write_text(f"30 23 0:26 / {esc} rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw\n")
    lay = detect_layout(proc_root=str(tmp_path), mounts_file=str(mi))
    assert lay.unified == str(point) and lay.kind == "v2"


def test_proc_cgroup_parsing():
    got = parse_proc_cgroup("12:cpu,cpuacct:/a\n4:memory:/m/x\n1:name=systemd:/s\n0::/u/v\n")
    assert got == {"cpu": "/a", "cpuacct": "/a", "memory": "/m/x", "name=systemd": "/s", "": "/u/v"}


def test_mount_showing_a_subtree(tmp_path):
    # inside a container the cgroup2 mount may show only /kubepods/pod1
    point = tmp_path / "cg"
    (point / "agent").mkdir(parents=True)
    mi = tmp_path / "mountinfo"
    mi.write_text(f"30 23 0:26 /kubepods/pod1 {point} rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "self/cgroup").write_text("0::/kubepods/pod1/agent\n")
    lay = detect_layout(proc_root=str(tmp_path), mounts_file=str(mi))
    assert lay.own_v2() == str(point / "agent")
