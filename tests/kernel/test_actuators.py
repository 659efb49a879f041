"""Decisions carried out on real cgroups and processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pycontain.actuate.actuators import Actuator, clock_tick_ns, proc_start_ns
from pycontain.actuate.cgroups import AgentCgroup
from pycontain.actuate.launch import launch
from pycontain.core.decisions import Action, Decision, GpuDetail, GpuThrottle

PY = sys.executable
COUNTER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
i = 0
while True:
    i += 1
    os.pwrite(fd, b"%012d" % i, 0)
    time.sleep(0.002)
"""


@pytest.fixture
def cg(privileged, request):
    c = AgentCgroup.create(f"a{os.getpid()}")
    request.addfinalizer(lambda: c.remove())
    return c


def dec(action, **kw):
    return Decision(agent="bot", rule="test", action=action, reason="test", **kw)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _count(path):
    t = path.read_text() if path.exists() else ""
    return int(t) if t.strip() else 0


def _wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_kill_process_checks_the_start_time(cg):
    act = Actuator({"bot": cg})
    proc = launch(["sleep", "1000"], cg)
    try:
        real = proc_start_ns(proc.pid)
        # the same pid with another start time: a reused pid, never hit
        r = act.apply(dec(Action.KILL_PROCESS, pid=proc.pid, start_ns=real + 5_000_000_000))
        assert r.startswith("skipped") and "reused" in r
        r = act.apply(dec(Action.KILL_PROCESS, pid=proc.pid, start_ns=real - 3 * clock_tick_ns()))
        assert r.startswith("skipped")
        time.sleep(0.1)
        assert proc.poll() is None
        # within the documented skew (the kernel stream may stamp at exec)
        assert act.apply(dec(Action.KILL_PROCESS, pid=proc.pid, start_ns=real + clock_tick_ns())) == "done"
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_process_never_reaches_outside_the_agent(cg):
    outsider = subprocess.Popen(["sleep", "1000"])
    try:
        r = Actuator({"bot": cg}).apply(dec(Action.KILL_PROCESS, pid=outsider.pid,
                                            start_ns=proc_start_ns(outsider.pid)))
        assert r.startswith("skipped") and outsider.poll() is None
    finally:
        outsider.kill()
        outsider.wait()


def test_freeze_thaw_kill(cg, tmp_path):
    act = Actuator({"bot": cg})
    counter = tmp_path / "c"
    proc = launch([PY, "-c", COUNTER, str(counter)], cg)
    assert _wait(lambda: _count(counter) > 3)
    assert act.apply(dec(Action.FREEZE)) == "done"
    a = _count(counter)
    time.sleep(0.4)
    assert _count(counter) == a
    assert act.apply(dec(Action.THAW)) == "done"
    assert _wait(lambda: _count(counter) > a + 3)
    assert act.apply(dec(Action.FREEZE, monitor=True)) == "skipped: monitor"
    assert not cg.is_frozen()
    assert act.apply(dec(Action.KILL)) == "done"
    assert proc.wait(5) == -signal.SIGKILL
    assert cg.pids() == []


def test_throttle_lowers_cpu_and_gpu_duty_cycle_pauses(cg, tmp_path):
    cg.set_budgets(cpu_cores=1.0, memory_bytes=None, memory_high_bytes=None, pids=None)
    act = Actuator({"bot": cg})
    counter = tmp_path / "c"
    proc = launch([PY, "-c", COUNTER, str(counter)], cg)
    try:
        assert _wait(lambda: _count(counter) > 3)
        r = act.apply(dec(Action.THROTTLE, gpu=GpuDetail(throttle=GpuThrottle(duty_cycle=0.5, period_s=0.2))))
        assert r == "done"
        assert cg.sample().cpu_limit_cores == pytest.approx(0.5)
        # the duty cycle really stops the agent part of the time: some 60 ms
        # windows show no progress at all, others do
        stalls = moves = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end and not (stalls and moves):
            a = _count(counter)
            time.sleep(0.06)
            if _count(counter) == a:
                stalls += 1
            else:
                moves += 1
        assert stalls and moves
        act.close()
        assert not cg.is_frozen()
        a = _count(counter)
        assert _wait(lambda: _count(counter) > a + 3)
        assert act.apply(dec(Action.THAW)) == "done"
        assert cg.sample().cpu_limit_cores == pytest.approx(1.0)
    finally:
        act.close()
        cg.kill()
        proc.wait()
