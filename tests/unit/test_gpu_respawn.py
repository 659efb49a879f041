"""An unapproved GPU program restarted under new pids escalates to the agent.

`gpu_program: kill-process` kills one process; a supervisor inside the agent
that restarts the miner would get it killed once per sample for ever and the
agent never. The real rules and engine; the decisions are the outcome.
"""

from __future__ import annotations

from pycontain.core.engine import Engine
from pycontain.core.gpu_rules import AttributedGpuProcess, GpuRules
from pycontain.core.policy import load_policy_text
from pycontain.core.samples import GpuDeviceSample, GpuSample

# as documented (docs/policy.md): the third process within 60 s kills the agent
RESPAWN_KILLS, RESPAWN_WINDOW_S = 3, 60.0
POLICY = "name: x\ngpu:\n  allowed_programs: [trainer]\nactions:\n  gpu_program: kill-process\n"


def _run(pids_per_sample, policy: str = POLICY, step_s: float = 1.0) -> list:
    """One GPU sample per entry (the agent's GPU pids then); every decision."""
    pol = load_policy_text(policy)
    engine, rules = Engine(pol), GpuRules(pol.gpu)
    dev = GpuDeviceSample(0, "GPU-a", "H100", 90.0, 1, 2, 300.0)
    out = []
    for i, pids in enumerate(pids_per_sample):
        now = 100.0 + i * step_s
        procs = [AttributedGpuProcess("a", pid, pid * 10, 0, 1000, 90.0, b"/home/a/miner") for pid in pids]
        out += [(d.rule, d.action.value, d.pid) for d in
                engine.on_breaches(rules.evaluate(GpuSample(now, (dev,)), procs, now), now)]
        out += [(d.rule, d.action.value, d.pid) for d in engine.tick(now)]
    return out


def test_a_respawned_miner_gets_the_agent_killed():
    got = _run([[1000 + i] for i in range(6)])              # a new pid every sample
    assert got[:RESPAWN_KILLS] == [("gpu.program", "kill-process", 1000 + i) for i in range(RESPAWN_KILLS)]
    assert ("gpu.program", "kill", None) in got
    assert got.index(("gpu.program", "kill", None)) == RESPAWN_KILLS     # at the third process, not later


def test_every_new_process_after_the_agent_kill_is_answered_again():
    """A process that appears after the agent's kill (a new run in a reused
    cgroup): killed with the agent again, not left at the top of a ladder."""
    got = _run([[1000 + i] for i in range(6)])
    assert got.count(("gpu.program", "kill", None)) == 6 - RESPAWN_KILLS + 1


def test_one_process_seen_for_long_or_rare_restarts_do_not_kill_the_agent():
    assert ("gpu.program", "kill", None) not in _run([[1000]] * 200)            # one process, re-reported
    slow = [[1000 + i] for i in range(5)]                                      # one restart per window
    assert ("gpu.program", "kill", None) not in _run(slow, step_s=RESPAWN_WINDOW_S / 2 + 1)


def test_an_alert_only_policy_never_kills_the_agent():
    pol = "name: x\ngpu:\n  allowed_programs: [trainer]\nactions:\n  gpu_program: alert\n"
    assert {a for _r, a, _p in _run([[1000 + i] for i in range(6)], pol)} == {"alert"}
