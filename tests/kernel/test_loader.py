"""The loader: full program load, lost-record accounting, lifecycle."""

from __future__ import annotations

import os
import subprocess

import pytest
from exec_harness import exec_only_ebpf_dir

from pycontain.actuate.cgroups import AgentCgroup
from pycontain.actuate.launch import launch


def test_full_program_loads_and_reports_hooks(privileged):
    """Every hook file present in ebpf/ compiles together as one program."""
    from pycontain.kernel.loader import Probes

    msgs: list[str] = []
    p = Probes(progress=msgs.append)
    try:
        p.load()
        status = p.hook_status()
        assert status["sched:sched_process_exec"] == "attached"
        assert status["sched:sched_process_exit"] == "attached"
        assert any("fork" in k and v == "attached" for k, v in status.items())
        assert any(m.startswith("compiling probes") for m in msgs)
        assert p.features.as_dict()["exec_enforcement"] in ("lsm", "tracepoint+send_signal")
        assert p.lost_kernel() == 0
    finally:
        p.close()
        p.close()   # idempotent


@pytest.fixture
def tiny_ring(privileged, tmp_path, monkeypatch):
    from pycontain.kernel.loader import Probes

    monkeypatch.setenv("PYCONTAIN_EBPF_DIR", str(exec_only_ebpf_dir(tmp_path)))
    p = Probes(ringbuf_pages=1)
    p.load()
    cg = AgentCgroup.create("lost")
    p.track_cgroup(cg.v2_path, 5)
    yield p, cg
    p.close()
    cg.remove()


def test_full_ring_counts_lost_records(tiny_ring):
    p, cg = tiny_ring
    # a 4 KiB ring holds two exec records; nobody polls while 50 execs happen
    proc = launch(["/bin/sh", "-c", "for i in $(seq 50); do /bin/true; done"], cg)
    assert proc.wait(timeout=15) == 0
    assert p.lost_kernel() > 0
    seen: list = []
    p.on_event = seen.append
    p.poll(100)
    assert 0 < len(seen) < 150


def test_callback_errors_are_counted_not_raised(tiny_ring):
    p, cg = tiny_ring

    def boom(_ev):
        raise RuntimeError("consumer bug")

    p.on_event = boom
    assert launch(["/bin/true"], cg).wait(timeout=10) == 0
    handled = p.poll(200)
    assert handled > 0 and p.user_lost == handled


def test_track_sets_level_and_untrack_tolerates_vanished_dir(tiny_ring):
    from pycontain.kernel.loader import cgroup_level

    p, cg = tiny_ring
    cfg = p.bpf[b"pc_config"][0]
    assert cfg.tracked_levels & (1 << cgroup_level(cg.v2_path))
    extra = AgentCgroup.create("vanish")
    p.track_cgroup(extra.v2_path, 6)
    agents = p.bpf[b"pc_agents"]
    assert any(v.value == 6 for v in agents.values())
    extra.remove()
    assert not os.path.exists(extra.v2_path)
    p.untrack_cgroup(extra.v2_path)
    assert not any(v.value == 6 for v in agents.values())
    # the first cgroup is still tracked
    assert p.bpf[b"pc_config"][0].tracked_levels & (1 << cgroup_level(cg.v2_path))


def test_environment_problem_names_what_is_missing(privileged, tmp_path, monkeypatch):
    from pycontain.core.errors import EnvironmentProblem
    from pycontain.kernel.loader import Probes

    monkeypatch.setenv("PYCONTAIN_EBPF_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(EnvironmentProblem) as e:
        Probes().load()
    assert "nowhere" in e.value.message and "doctor" in e.value.hint


def test_closed_probes_stop_enforcing(privileged, tmp_path, monkeypatch):
    from exec_harness import deny_tables, sentinel_script

    from pycontain.kernel.loader import Probes

    monkeypatch.setenv("PYCONTAIN_EBPF_DIR", str(exec_only_ebpf_dir(tmp_path)))
    p = Probes(ringbuf_pages=16)
    p.load()
    cg = AgentCgroup.create("closed")
    try:
        p.track_cgroup(cg.v2_path, 9)
        p.set_tables(deny_tables())
        script, sentinel = sentinel_script(tmp_path, "xmrig")
        assert launch([str(script)], cg).wait(timeout=10) == -9
        p.close()
        assert launch([str(script)], cg).wait(timeout=10) == 0
        assert sentinel.exists()
    finally:
        p.close()
        cg.remove()
    subprocess.run(["true"], check=True)


def test_untrack_forgets_the_agents_live_tasks_only(privileged):
    """Untracking an agent whose processes still run (a released adoption)
    drops their task -> agent entries and leaves another agent's alone."""
    import ctypes

    from pycontain.kernel.loader import Probes

    p = Probes()
    a, b = AgentCgroup.create("walk-a"), AgentCgroup.create("walk-b")
    procs = []
    try:
        p.load()
        procs = [launch(["sleep", "30"], a), launch(["sleep", "30"], b)]
        p.track_cgroup(a.v2_path, 41)
        p.track_cgroup(b.v2_path, 42)
        tasks = p.bpf[b"pc_agent_tasks"]
        assert tasks[ctypes.c_uint32(procs[0].pid)].value == 41
        assert tasks[ctypes.c_uint32(procs[1].pid)].value == 42
        p.untrack_cgroup(a.v2_path)
        assert ctypes.c_uint32(procs[0].pid) not in tasks
        assert tasks[ctypes.c_uint32(procs[1].pid)].value == 42
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        p.close()
        a.remove()
        b.remove()
