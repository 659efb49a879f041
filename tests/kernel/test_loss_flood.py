"""No verdict depends on a record that can be lost (issue 10 part 5).

A flood fills the ring buffers; the exec record of a denied program that
follows is lost. The attack: without pycontain the program runs (sentinel
written). Under pycontain the kernel counts the loss for the agent and stops
the task whose exec record it could not queue; the controller freezes the
agent, judges its processes from /proc, kills the denied one, and thaws.
Checked from outside: the sentinel is never written; the audit log says so.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

import pytest

from pycontain.core.events import EventType

PY = sys.executable

# argv carries "--coin", a whole-argument rule of the default policy that only
# user space evaluates: nothing in the kernel would stop this exec
MINER = "import sys,time; time.sleep(0.5); open(sys.argv[1],'w').write('ran')"

# n children exec /bin/true at once (nobody drains: they fill the rings), then
# the agent execs the miner. The agent's own exec must not be held for user
# space before it floods: its argv stays short (the kernel holds an argv that
# names an argument rule, or one long enough for the wallet glob), so the
# miner's code and sentinel come through the environment
AGENT = r"""
import os, sys, time
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        os.execv("/bin/true", ["/bin/true"])
time.sleep(0.3)
os.execv(sys.executable, [sys.executable, "-c", os.environ["MINER"], os.environ["SENTINEL"], "--coin"])
"""


def _agent(sentinel: str, cgroup_procs: str | None, n: int = 16) -> subprocess.Popen:
    d = tempfile.mkdtemp(prefix="pcl", dir="/tmp")
    script = os.path.join(d, "a.py")
    with open(script, "w") as fh:
        fh.write(AGENT)
    argv = [PY, script, str(n)]
    if cgroup_procs:
        argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', cgroup_procs, *argv]
    return subprocess.Popen(argv, env={**os.environ, "MINER": MINER, "SENTINEL": sentinel})


@pytest.fixture
def small_ring_controller(privileged, tmp_path):
    """The real controller (default policy, real actuator) with one-page rings."""
    from pycontain.actuate.cgroups import AgentCgroup
    from pycontain.app.controller import Controller
    from pycontain.app.edges import Edges
    from pycontain.core.policy import builtin_policy
    from pycontain.kernel.loader import Probes
    from pycontain.observe.audit import AuditLog
    from pycontain.observe.state import NodeState

    def probes(**kw):
        return Probes(ringbuf_pages=1, verdict_pages=1, **kw)
    audit = tmp_path / "audit.jsonl"
    ctl = Controller(builtin_policy("default"), audit=AuditLog(str(audit)), state=NodeState(),
                     allow_no_gpu=True, edges=Edges(probes=probes, nvml=None))
    ctl.start()
    name = f"loss{secrets.token_hex(3)}"
    cg = AgentCgroup.create(name)
    ctl.add_agent(name, cg, apply_budgets=False)
    yield ctl, cg, name, audit
    try:
        cg.thaw()
        cg.remove()
    finally:
        ctl.close()


def test_flood_then_denied_exec_is_held_judged_and_killed(small_ring_controller, tmp_path):
    ctl, cg, name, audit = small_ring_controller
    # without pycontain: the same agent runs its miner
    bare = str(tmp_path / "bare")
    p = _agent(bare, None)
    p.wait(timeout=30)
    assert open(bare).read() == "ran"

    sentinel = str(tmp_path / "contained")
    lost0 = ctl.probes.lost_kernel()
    p = _agent(sentinel, cg.procs_files()[-1])
    time.sleep(2.0)          # nobody drains: the flood fills both rings
    assert ctl.probes.lost_kernel() > lost0, "the flood did not overflow the rings"
    assert not os.path.exists(sentinel), "the held exec ran before the controller looked"
    deadline = time.monotonic() + 15
    while p.poll() is None and time.monotonic() < deadline:
        ctl.step(50)
    time.sleep(1.0)          # had it survived, the miner would have written by now
    assert not os.path.exists(sentinel)
    assert p.returncode == -9
    recs = [json.loads(line) for line in open(audit)]
    kinds = [r["kind"] for r in recs if r.get("agent") == name]
    assert "events-lost" in kinds and "agent-caught-up" in kinds
    assert any(r.get("action") == "freeze" and r.get("result") == "done" for r in recs)
    assert not cg.is_frozen(), "the agent was not thawed after catching up"
    snap = ctl.state.snapshot()
    assert snap["lost_by_agent"][name] > 0 and snap["loss_freezes"][name] >= 1


def test_routine_flood_cannot_crowd_out_exec_records(privileged, tmp_path):
    """Routine records (fork, exit) fill their ring; exec records still arrive."""
    from pycontain.actuate.cgroups import AgentCgroup
    from pycontain.core.kernel_rules import KernelTables
    from pycontain.kernel.loader import Probes

    probes = Probes(ringbuf_pages=1, verdict_pages=64)
    probes.load()
    cg = AgentCgroup.create(f"loss{secrets.token_hex(3)}")
    try:
        probes.set_tables(KernelTables())
        probes.track_cgroup(cg.v2_path, 4242)
        got: list = []
        probes.on_event = got.append
        # 300 forks and exits without draining: 4 KiB holds ~30 of them
        p = subprocess.Popen(["sh", "-c", 'echo $$ > "$0" && exec "$@"', cg.procs_files()[-1], PY, "-c",
                              "import os\nfor _ in range(300):\n pid=os.fork()\n if pid==0: os._exit(0)\n"
                              " os.waitpid(pid,0)\nos.execv('/bin/true',['/bin/true'])"])
        p.wait(timeout=30)
        time.sleep(0.2)
        assert probes.agent_losses().get(4242, 0) > 0, "routine records were not lost: no flood"
        for _ in range(5):
            probes.poll(0)
        execs = [e for e in got if e.h.type == EventType.EXEC and e.filename == b"/bin/true"]
        assert len(execs) == 1
    finally:
        probes.close()
        cg.remove()
