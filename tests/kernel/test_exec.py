"""Exec / fork / exit records of agent processes, read back from the kernel."""

from __future__ import annotations

import os

from exec_harness import agent, collector, exec_probes, execs_of  # noqa: F401  (fixtures)

from pycontain.actuate.launch import launch
from pycontain.core.events import ExecEvent, ExitEvent, Flag, ForkEvent, Verdict


def _proc_start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def test_exec_event_has_filename_argv_lineage_and_truncation(agent, collector):
    big = "x" * 5000
    proc = launch(["/bin/sh", "-c", "read _ignored; exit 0", "argv0", big], agent)
    try:
        hits = collector.wait_for(lambda e: isinstance(e, ExecEvent) and e.h.pid == proc.pid)
        assert hits, "no exec event for the launched shell"
        ev = hits[0]
        # compare with what /proc says about the live process
        ticks = os.sysconf("SC_CLK_TCK")
        start_ticks = _proc_start_ticks(proc.pid)
    finally:
        proc.communicate(b"\n", timeout=5)
    assert ev.filename == b"/bin/sh"
    assert ev.argv[:4] == (b"/bin/sh", b"-c", b"read _ignored; exit 0", b"argv0")
    assert ev.argc == 5                      # real argc, though the big arg was cut
    assert ev.h.flags & Flag.ARGS_TRUNCATED and ev.args_truncated
    assert len(b"\0".join(ev.argv)) <= 1024
    assert ev.argv[4] and set(ev.argv[4]) == {ord("x")}
    assert ev.h.ppid == os.getpid()          # launch() forks from this process
    assert ev.h.uid == os.getuid()
    assert ev.h.agent_id == agent.agent_id
    assert ev.h.cgroup_id == agent.cgroup_id
    assert ev.h.verdict == Verdict.ALLOW
    assert abs(ev.h.start_ns * ticks // 1_000_000_000 - start_ticks) <= 1
    assert 0 < ev.h.start_ns <= ev.h.ts_ns


def test_fork_and_exit_lineage(agent, collector):
    proc = launch(["/bin/sh", "-c", "/bin/true; exit 3"], agent)
    assert proc.wait(timeout=10) == 3
    sh = proc.pid
    forks = collector.wait_for(lambda e: isinstance(e, ForkEvent) and e.h.pid == sh)
    assert forks, "no fork event from the agent shell"
    child = forks[0].child_pid
    assert not forks[0].h.flags & Flag.THREAD
    child_exec = collector.wait_for(lambda e: isinstance(e, ExecEvent) and e.h.pid == child)
    assert child_exec and child_exec[0].filename == b"/bin/true"
    assert child_exec[0].h.ppid == sh
    exits = collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.h.pid in (sh, child)
                               and any(x.h.pid == sh for x in collector.events if isinstance(x, ExitEvent)))
    by_pid = {e.h.pid: e for e in exits if not e.h.flags & Flag.THREAD}
    assert by_pid[child].exit_code == 0
    assert by_pid[sh].exit_code == 3 << 8      # wait(2) status encoding
    assert by_pid[child].h.ppid == sh


def test_thread_exit_is_marked(agent, collector):
    # join() returns before the OS thread is gone; the sleep lets it finish do_exit
    # while the main thread lives (else exit_group may make it the group's last)
    code = "import threading, time; t = threading.Thread(target=lambda: None); t.start(); t.join(); time.sleep(0.3)"
    import sys
    proc = launch([sys.executable, "-c", code], agent)
    assert proc.wait(timeout=20) == 0
    exits = collector.wait_for(lambda e: isinstance(e, ExitEvent) and e.h.pid == proc.pid
                               and e.h.tid != proc.pid)
    assert exits and all(e.h.flags & Flag.THREAD for e in exits)
    forks = [e for e in collector.events if isinstance(e, ForkEvent) and e.h.pid == proc.pid]
    assert any(f.h.flags & Flag.THREAD for f in forks)


def test_untracked_processes_produce_no_events(exec_probes, collector):
    import subprocess
    p = subprocess.Popen(["/bin/true"])
    p.wait()
    collector.drain(0.3)
    assert not execs_of(collector.events, p.pid)


def test_trace_all_flag_survives_set_tables(exec_probes, collector):
    from exec_harness import deny_tables

    from pycontain.core.events import ConfigFlag

    exec_probes.trace_all = True
    try:
        exec_probes.set_tables(deny_tables())
        cfg = exec_probes.bpf[b"pc_config"][0]
        assert cfg.flags & ConfigFlag.TRACE_ALL
        import subprocess
        p = subprocess.Popen(["/bin/true"])
        p.wait()
        hits = collector.wait_for(lambda e: isinstance(e, ExecEvent) and e.h.pid == p.pid)
        assert hits and hits[0].h.agent_id == 0
        assert hits[0].h.verdict == Verdict.ALLOW     # rules apply to agents only
    finally:
        exec_probes.trace_all = False
        exec_probes.set_tables(deny_tables())
    assert not exec_probes.bpf[b"pc_config"][0].flags & ConfigFlag.TRACE_ALL
