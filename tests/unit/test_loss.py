"""LossGuard (app/loss.py) with fake probes and cgroups: when the kernel
counts a lost record for an agent, the agent is frozen, its processes are
judged again, held tasks continued, and it is thawed; monitor mode only
records; an unattributed loss (key 0) hits every agent."""

from __future__ import annotations

import os
from collections import Counter
from types import SimpleNamespace

from pycontain.app.loss import LossGuard, proc_exec_event
from pycontain.observe.state import AgentState, NodeState


class Probes:
    def __init__(self):
        self.total, self.per, self.held, self.released = 0, {}, set(), []

    def lost_kernel(self):
        return self.total

    def agent_losses(self):
        return dict(self.per)

    def held_pids(self):
        return set(self.held)

    def release_held(self, pid):          # out of the held map, then SIGCONT
        self.released.append(pid)
        return True

    def settle_held(self, pid):           # forgotten (the task is gone)
        self.released.append(pid)

    def poll(self, timeout_ms=0):
        return 0


class Cgroup:
    def __init__(self, pids):
        self._pids, self.log = pids, []

    def pids(self):
        return list(self._pids)

    def freeze(self, timeout=None):
        self.log.append("freeze")

    def thaw(self):
        self.log.append("thaw")


class Engine:
    def __init__(self, monitor=False):
        self.monitor, self.seen = monitor, []

    def on_event(self, ev, now):
        self.seen.append(ev)
        return []


def ctl_with(agents: dict, monitor=False):
    records: list = []
    state = NodeState()
    names = {}
    for i, name in enumerate(agents, 1):
        names[i] = name
        state.agents[name] = AgentState(name=name, cgroup="/x", agent_id=i)
    ctl = SimpleNamespace(probes=Probes(), cgroups=dict(agents), names=names, engine=Engine(monitor),
                          state=state, _pending=[], clock=SimpleNamespace(wall=lambda: 1.0, monotonic=lambda: 2.0),
                          _record=records.append, apply_pending=lambda: None)
    return ctl, records


def test_no_loss_no_action():
    cg = Cgroup([os.getpid()])
    ctl, records = ctl_with({"a": cg})
    LossGuard(ctl).check()
    assert cg.log == [] and records == []


def test_loss_freezes_judges_continues_held_and_thaws():
    me = os.getpid()
    cg, other = Cgroup([me]), Cgroup([])
    ctl, records = ctl_with({"a": cg, "b": other})
    guard = LossGuard(ctl)
    ctl.probes.total, ctl.probes.per, ctl.probes.held = 3, {1: 3}, {999_999_999}
    guard.check()
    assert cg.log == ["freeze", "thaw"] and other.log == []
    assert [e.h.pid for e in ctl.engine.seen] == [me]
    assert ctl.probes.released == [999_999_999]        # gone: forgotten
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "events-lost" and records[0]["lost"] == 3 and kinds[-1] == "agent-caught-up"
    assert ctl.state.lost_by_agent == Counter({"a": 3}) and ctl.state.loss_freezes == Counter({"a": 1})
    assert ctl.state.agents["a"].frozen is False
    guard.check()                                      # nothing new: nothing done
    assert cg.log == ["freeze", "thaw"]


def test_already_frozen_agent_stays_frozen():
    cg = Cgroup([])
    ctl, _ = ctl_with({"a": cg})
    ctl.state.agents["a"].frozen = True
    ctl.probes.total, ctl.probes.per = 1, {1: 1}
    LossGuard(ctl).check()
    assert cg.log == ["freeze"] and ctl.state.agents["a"].frozen is True


def test_monitor_mode_records_only():
    cg = Cgroup([os.getpid()])
    ctl, records = ctl_with({"a": cg}, monitor=True)
    ctl.probes.total, ctl.probes.per = 1, {1: 1}
    LossGuard(ctl).check()
    assert cg.log == [] and records[0]["kind"] == "events-lost" and records[0]["action"] == "none"


def test_unattributed_loss_hits_every_agent():
    a, b = Cgroup([]), Cgroup([])
    ctl, _ = ctl_with({"a": a, "b": b})
    ctl.probes.total, ctl.probes.per = 2, {0: 2}
    LossGuard(ctl).check()
    assert a.log == ["freeze", "thaw"] and b.log == ["freeze", "thaw"]


def test_proc_exec_event_reads_what_the_kernel_runs():
    ev = proc_exec_event(os.getpid(), 7)
    assert ev is not None
    assert ev.filename == os.readlink("/proc/self/exe").encode()
    assert ev.argv and ev.h.agent_id == 7
    assert proc_exec_event(999_999_999, 7) is None
