"""GPU correlation per agent and time window (issue 12 part 9): an
unapproved connection by one process, GPU use by another process of the
same agent within gpu.correlation_window."""

from __future__ import annotations

from test_engine import engine, net_event

from pycontain.core.decisions import Action
from pycontain.core.events import EventType, Verdict
from pycontain.core.gpu_rules import AttributedGpuProcess, GpuRules
from pycontain.core.policy import load_policy_text
from pycontain.core.samples import GpuSample

POLICY = load_policy_text("""
network: {deny: [{cidr: 198.51.100.0/24}]}
gpu: {correlation_window: 10m}
""")


def _gpu_use(pid: int, agent: str = "trainer") -> list[AttributedGpuProcess]:
    # a process with no unapproved connection of its own (unapproved_connect_ns None)
    return [AttributedGpuProcess(agent=agent, pid=pid, start_ns=None, device=0, used_memory_bytes=1 << 30,
                                 sm_util=90.0, filename=b"/usr/bin/python3")]


def test_connect_by_one_process_then_gpu_by_another_is_correlated():
    e = engine(POLICY)
    e.on_event(net_event("198.51.100.7", 3333, pid=100, verdict=Verdict.DENY, kind=EventType.CONNECT), 1000.0)
    rules = GpuRules(POLICY.gpu)
    breaches = rules.evaluate(GpuSample(ts=1300.0), _gpu_use(200), 1300.0, e.unapproved_at)
    assert [(b.agent, b.rule) for b in breaches] == [("trainer", "gpu.correlation")]
    decisions = e.on_breaches(breaches, 1300.0)
    assert decisions and decisions[0].action == Action.KILL and decisions[0].rule == "gpu.correlation"


def test_outside_the_window_or_another_agent_is_not_correlated():
    e = engine(POLICY)
    e.on_event(net_event("198.51.100.7", 3333, pid=100, verdict=Verdict.DENY), 1000.0)
    rules = GpuRules(POLICY.gpu)
    assert rules.evaluate(GpuSample(ts=1601.0), _gpu_use(200), 1601.0, e.unapproved_at) == []
    assert rules.evaluate(GpuSample(ts=1001.0), _gpu_use(200, "other"), 1001.0, e.unapproved_at) == []


def test_approved_traffic_does_not_arm_the_rule():
    e = engine(POLICY)
    e.on_event(net_event("192.0.2.10", 443, pid=100), 1000.0)
    assert e.unapproved_at == {}
