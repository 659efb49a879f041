"""GPU work split into processes that live less than one sampling interval.

NVML keeps a process's utilisation samples after it exits, but it is gone
from the running-process lists and from /proc by the next reading. A miner
that runs each burst in a fresh process must still count toward its agent's
`gpu.sm_util` budget (through the engine's record of the exited process), and
samples nobody can attribute must be counted, not dropped. Real pynvml calls
through the fake driver (`exited=1`: samples only), the real engine, rules
and GPU step; the decisions the step returns are the outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.fake_nvml.build import env_for

# above PID_MAX_LIMIT (2^22): never a live pid on this host, as a process that
# has exited is not
DEAD_PID = 4_194_400
STRANGER_PID = 4_194_300     # exited too, and never seen by the engine

STEP = textwrap.dedent("""
    import json, os, sys
    from types import SimpleNamespace
    from pycontain.core.engine import Engine
    from pycontain.core.events import EventType, ExecEvent, ExitEvent, Header, Verdict
    from pycontain.core.gpu_rules import GpuRules
    from pycontain.core.policy import load_policy_text
    from pycontain.gpu.loop import gpu_step
    from pycontain.gpu.nvml import Nvml
    from pycontain.gpu.sampler import GpuSampler

    scen, mode, dead, stranger = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    pol = load_policy_text("name: x\\ngpu:\\n  sm_util: {max: 50, window: 3s}\\n"
                           "actions:\\n  gpu_util: {ladder: [throttle, kill], grace: 30s}\\n")
    engine, rules, sampler = Engine(pol), GpuRules(pol.gpu), GpuSampler(Nvml())
    engine.add_agent(7, "miner")
    cgroups = {"miner": SimpleNamespace(v2_path="/sys/fs/cgroup/pc-test-miner", v1_paths={})}
    layout = SimpleNamespace(unified="/sys/fs/cgroup", v1={})

    def header(kind, pid, start_ns):
        return Header(type=kind, verdict=Verdict.ALLOW, flags=0, rule_id=0, pid=pid, tid=pid, ppid=1, uid=0,
                      agent_id=7, ts_ns=start_ns, start_ns=start_ns, cgroup_id=1, comm=b"burst")

    decisions, lost = [], []
    kw = {"on_unattributed": lost.extend} if mode == "count" else {}
    for step in range(6):
        now, pid = 100.0 + step, dead + step
        # a burst process: started, hashed for under a second, exited before the reading
        engine.on_event(ExecEvent(h=header(EventType.EXEC, pid, step + 1), filename=b"/tmp/burst",
                                  argv=(b"burst",), argc=1), now - 0.6)
        engine.on_event(ExitEvent(h=header(EventType.EXIT, pid, step + 1), exit_code=0), now - 0.1)
        with open(scen, "w") as fh:
            fh.write(f"device 0\\nprocess device=0 pid={pid} sm=90 exited=1\\n"
                     f"process device=0 pid={stranger + step} sm=30 exited=1\\n")
        os.utime(scen, ns=(10**9 * (step + 1), 10**9 * (step + 1)))   # a new mtime: the driver re-reads
        decisions += [(d.rule, d.action.value) for d in gpu_step(sampler, rules, engine, cgroups, now,
                                                                  layout=layout, **kw)]
    print(json.dumps({"decisions": decisions, "lost": sorted({p.pid for p in lost})}))
""")


def _run(tmp_path, mode: str) -> dict:
    scen = tmp_path / "scenario.txt"
    scen.write_text("device 0\n")
    r = subprocess.run([sys.executable, "-c", STEP, str(scen), mode, str(DEAD_PID), str(STRANGER_PID)],
                       env=env_for(scen), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_miner_split_into_short_processes_is_throttled(tmp_path):
    """Each 90 % burst runs in its own process, gone before the reading: the
    engine's record of the exited process names its agent."""
    out = _run(tmp_path, "decide")
    assert ["gpu.sm_util", "throttle"] in out["decisions"], out


def test_readings_of_exited_pids_nobody_knows_are_counted(tmp_path):
    """A pid gone from /proc and from the engine's records: not anyone's as
    far as can be told, so no decision, but each one is counted."""
    out = _run(tmp_path, "count")
    assert out["lost"] == [STRANGER_PID + i for i in range(6)], out


def test_an_exited_record_is_kept_only_for_a_while():
    """The engine keeps exited processes for the GPU step, not for ever: a
    pid reused by someone else much later must not be taken for the agent's."""
    from pycontain.core.processes import EXITED_KEEP_S, ProcessTable
    t = ProcessTable()
    t.on_exec(42, 1, "a", 1, b"/tmp/burst", (b"burst",), 1)
    t.on_exit(42, 1, now=10.0)
    assert t.lookup(42) is None and t.exited(42, since=9.0).agent == "a"
    assert t.exited(42, since=10.5) is None                # exited before the span asked about
    t.on_exec(43, 1, "a", 1, b"/tmp/burst", (), 1)
    t.on_exit(43, 1, now=10.0 + EXITED_KEEP_S + 1)         # another exit, much later: the old record goes
    assert t.exited(42, since=0.0) is None
    t.on_exec(44, 1, "a", 1, b"/tmp/burst", (), 1)
    t.on_exit(44, 1, now=5.0)
    t.forget_agent("a")
    assert t.exited(44, since=0.0) is None


def test_the_count_reaches_the_metrics():
    from prometheus_client import generate_latest

    from pycontain.observe.metrics import make_registry
    from pycontain.observe.state import NodeState
    s = NodeState()
    s.gpu_unattributed = 6
    assert "pycontain_gpu_unattributed_processes_total 6.0" in generate_latest(make_registry(s)).decode()
