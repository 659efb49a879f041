"""Actuators, the duty-cycle throttler and launch's checks, on a fake
cgroupfs (no root needed; the kernel tests do the real thing)."""

from __future__ import annotations

import time

import pytest
from test_cgroups_fakefs import v2host  # noqa: F401  (fixture)

from pycontain.actuate.actuators import Actuator, clock_tick_ns, proc_start_ns, same_start
from pycontain.actuate.cgroups import AgentCgroup
from pycontain.actuate.launch import launch, resolve_command
from pycontain.actuate.throttle import DutyCycleThrottler
from pycontain.core.decisions import Action, Decision, GpuDetail, GpuThrottle
from pycontain.core.errors import CommandNotFound, UsageError


@pytest.fixture
def cg(v2host):
    (v2host.unified / "cgroup.subtree_control").write_text("cpu memory pids\n")
    p = v2host.make_cgroup("/deleg", subtree="cpu memory pids")
    c = AgentCgroup.create("bot", parent=str(p), layout=v2host.layout())
    c.set_budgets(cpu_cores=1.0, memory_bytes=None, memory_high_bytes=None, pids=None)
    return c


def d(action, **kw):
    return Decision(agent=kw.pop("agent", "bot"), rule="test", action=action, reason="test", **kw)


def read(path):
    return open(path).read().strip()


def test_monitor_alert_deny_and_unknown_agent_are_not_acted_on(cg):
    results = []
    act = Actuator({"bot": cg}, on_result=lambda dec, r: results.append((dec.action, r)))
    assert act.apply(d(Action.KILL, monitor=True)) == "skipped: monitor"
    assert act.apply(d(Action.FREEZE, monitor=True)) == "skipped: monitor"
    assert read(cg.v2_path + "/cgroup.kill") == "" and read(cg.v2_path + "/cgroup.freeze") == "0"
    assert act.apply(d(Action.ALERT)).startswith("skipped")
    assert act.apply(d(Action.DENY)).startswith("skipped")
    assert act.apply(d(Action.KILL, agent="ghost")).startswith("failed: no cgroup")
    assert [r for _, r in results][0] == "skipped: monitor" and len(results) == 5


def test_throttle_halves_the_budget_and_thaw_restores_it(cg):
    act = Actuator({"bot": cg})
    assert act.apply(d(Action.THROTTLE)) == "done"
    assert read(cg.v2_path + "/cpu.max") == "50000 100000"
    assert act.apply(d(Action.THAW)) == "done"
    assert read(cg.v2_path + "/cpu.max") == "100000 100000"


def test_throttle_callback_and_floor(cg):
    act = Actuator({"bot": cg}, throttle_cores=lambda agent: 0.01)
    act.apply(d(Action.THROTTLE))
    assert read(cg.v2_path + "/cpu.max") == "5000 100000"       # min 0.05 cores


def test_gpu_throttle_starts_duty_cycle_and_close_leaves_thawed(cg, v2host):
    act = Actuator({"bot": cg})
    act.apply(d(Action.THROTTLE, gpu=GpuDetail(throttle=GpuThrottle(duty_cycle=0.5, period_s=0.1))))
    seen = set()
    end = time.monotonic() + 1.0
    while time.monotonic() < end and seen != {"0", "1"}:
        seen.add(read(cg.v2_path + "/cgroup.freeze"))
        time.sleep(0.005)
    assert seen == {"0", "1"}                                    # it really alternates
    act.close()
    assert read(cg.v2_path + "/cgroup.freeze") == "0"


def test_freeze_stops_the_duty_cycle(cg):
    act = Actuator({"bot": cg})
    act.apply(d(Action.THROTTLE, gpu=GpuDetail(throttle=GpuThrottle(period_s=0.05))))
    open(cg.v2_path + "/cgroup.events", "w").write("populated 1\nfrozen 1\n")   # the fake "freezes"
    assert act.apply(d(Action.FREEZE)) == "done"
    time.sleep(0.2)
    assert read(cg.v2_path + "/cgroup.freeze") == "1"            # no cycler thaws it again
    act.close()


def test_duty_cycle_rejects_bad_values(cg):
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError):
            DutyCycleThrottler(cg, bad, 1.0)


def test_start_time_window():
    tick = clock_tick_ns()
    stat = 123 * tick
    assert same_start(stat, stat)
    assert same_start(stat + tick + tick // 2, stat)             # exec-time stamp, < 2 ticks late
    assert same_start(stat - tick // 2, stat)
    assert not same_start(stat + 5 * tick, stat)
    assert not same_start(stat - 2 * tick, stat)


def test_proc_start_ns_survives_hostile_comm(tmp_path):
    (tmp_path / "99").mkdir()
    fields = ["S"] + [str(i) for i in range(4, 22)] + ["4567"] + ["0"] * 30   # field 22 = 4567
    (tmp_path / "99/stat").write_bytes(b"99 (evil) 1 2 (x) " + " ".join(fields).encode() + b"\n")
    assert proc_start_ns(99, str(tmp_path)) == 4567 * clock_tick_ns()


def test_kill_process_without_pid_fails(cg):
    assert Actuator({"bot": cg}).apply(d(Action.KILL_PROCESS)).startswith("failed")


def test_launch_refuses_unknown_command_before_anything_runs(cg):
    with pytest.raises(CommandNotFound) as e:
        launch(["no-such-command-pycontain-xyz"], cg)
    assert e.value.exit_code == 127 and "command not found" in e.value.message
    assert read(cg.v2_path + "/cgroup.procs") == ""
    with pytest.raises(CommandNotFound):
        resolve_command("./nope", "/usr/bin")
    assert resolve_command("sh", "/usr/bin:/bin").endswith("/sh")
    with pytest.raises(CommandNotFound):
        resolve_command("sh", "/nonexistent-dir")               # the agent's PATH decides


def test_launch_refuses_unknown_user(cg):
    with pytest.raises(UsageError):
        launch(["true"], cg, user="no-such-user-pycontain")


def test_descendants_follow_parent_links(tmp_path):
    """issue 11: kill-process also kills what the process forked (children, grandchildren)."""
    from pycontain.actuate.actuators import descendants

    tree = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    for pid, ppid in tree.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_bytes(f"{pid} (evil) x) S {ppid} 0 0".encode())
    assert sorted(descendants(10, list(tree), str(tmp_path))) == [11, 12, 13]
    assert descendants(12, list(tree), str(tmp_path)) == []


class _PidsCgroup:
    def __init__(self, pids):
        self._pids = set(pids)

    def pids(self):
        return self._pids


def test_a_process_that_already_exited_is_not_reported_killed():
    """A zombie (exited, not yet reaped) takes SIGKILL without error: the
    result must still say it had exited, and so must a pid that is gone."""
    import subprocess
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:       # until the kernel has made it a zombie (not a time assertion)
        with open(f"/proc/{child.pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1][1:2] == b"Z":
                break
        time.sleep(0.01)
    act = Actuator({"bot": _PidsCgroup({child.pid})})
    try:
        assert act.apply(d(Action.KILL_PROCESS, pid=child.pid)) == f"skipped: pid {child.pid} already exited"
    finally:
        child.wait()
    assert act.apply(d(Action.KILL_PROCESS, pid=child.pid)) == f"skipped: pid {child.pid} already exited"


def test_the_report_says_already_exited():
    import io

    from rich.console import Console

    from pycontain.core.records import decision_records
    from pycontain.observe.report import Reporter
    out = io.StringIO()
    rep = Reporter(console=Console(file=out, width=300, color_system=None))
    dec = Decision(agent="bot", rule="exec.deny:x", action=Action.KILL_PROCESS, reason="exec /tmp/x: matches 'x'",
                   pid=42)
    for rec in decision_records(dec, 1.0, "skipped: pid 42 already exited"):
        rep.record(rec)
    text = out.getvalue()
    assert "ALREADY EXITED" in text and "pid 42 already exited" in text and "STOPPED" not in text
