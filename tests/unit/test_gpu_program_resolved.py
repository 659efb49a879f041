"""gpu.program judges the file the kernel runs, not the agent's spelling of it.

The kernel's exec record carries the name the agent passed to execve. A name
through `..` (`/usr/bin/../../tmp/m/python3`) or a link of the agent's own
(`bin/python3 -> miner`) leads to a file the allow-list does not name: real
processes exec'd that way, a fake NVML sample with their pids, the real
engine, rules and GPU step; the decisions the step returns are the outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from pycontain.core.engine import Engine
from pycontain.core.errors import PolicyError
from pycontain.core.gpu_rules import AttributedGpuProcess, GpuRules
from pycontain.core.policy import load_policy_text
from pycontain.core.samples import GpuDeviceSample, GpuSample
from tests.fake_nvml.build import env_for

STEP = textwrap.dedent("""
    import json, os, sys
    from types import SimpleNamespace
    import pycontain.gpu.attribution as attribution
    from pycontain.core.engine import Engine
    from pycontain.core.events import EventType, ExecEvent, Header, Verdict
    from pycontain.core.gpu_rules import GpuRules
    from pycontain.core.policy import load_policy_text
    from pycontain.gpu.loop import gpu_step
    from pycontain.gpu.nvml import Nvml
    from pycontain.gpu.sampler import GpuSampler

    allowed, pid, execd = sys.argv[1], int(sys.argv[2]), os.fsencode(sys.argv[3])
    pol = load_policy_text(f"name: x\\ngpu:\\n  allowed_programs: [{allowed!r}]\\n"
                           "actions:\\n  gpu_program: kill-process\\n")
    engine, rules, sampler = Engine(pol), GpuRules(pol.gpu), GpuSampler(Nvml())
    engine.add_agent(7, "a")
    # the cgroup test is not what this checks: the child is the agent's
    attribution.agent_of = lambda p, *a, **k: "a" if p == pid else None
    h = Header(type=EventType.EXEC, verdict=Verdict.ALLOW, flags=0, rule_id=0, pid=pid, tid=pid, ppid=1, uid=0,
               agent_id=7, ts_ns=5, start_ns=5, cgroup_id=1, comm=b"x")
    # the kernel's record: the name the agent passed to execve
    engine.on_event(ExecEvent(h=h, filename=execd, argv=(execd, b"30"), argc=2), 100.0)
    got = gpu_step(sampler, rules, engine, {"a": SimpleNamespace(v2_path="/x", v1_paths={})}, 101.0,
                   layout=SimpleNamespace(unified="/sys/fs/cgroup", v1={}))
    print(json.dumps([[d.rule, d.action.value, d.pid, d.reason] for d in got]))
""")


def _decisions(tmp_path, allowed: str, execd: str) -> list:
    """Start `execd` (exactly as spelled) on the fake GPU; the decisions."""
    child = subprocess.Popen([execd, "30"], executable=execd)
    try:
        scen = tmp_path / "scenario.txt"
        scen.write_text(f"device 0\nprocess device=0 pid={child.pid} mem=1000 sm=90\n")
        r = subprocess.run([sys.executable, "-c", STEP, allowed, str(child.pid), execd], env=env_for(scen),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [tuple(d) for d in json.loads(r.stdout)]
    finally:
        child.kill()
        child.wait()


def _miner(tmp_path, name: str) -> str:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    shutil.copy("/bin/sleep", d / name)
    return str(d / name)


def test_a_dotdot_exec_name_is_judged_by_the_file_it_reaches(tmp_path):
    """`/usr/bin/../../tmp/.../python3` matched `/usr/bin/*` as a string."""
    miner = _miner(tmp_path, "python3")
    execd = "/usr/bin/../.." + miner
    got = _decisions(tmp_path, "/usr/bin/*", execd)
    assert [(r, a) for r, a, *_ in got] == [("gpu.program", "kill-process")], got
    assert miner in got[0][3]                           # the record names the file that ran


def test_a_link_the_agent_made_lends_no_name(tmp_path):
    """`bin/python3 -> miner`: the link's name is the agent's choice."""
    miner = _miner(tmp_path, "miner")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    link = bindir / "python3"
    link.symlink_to(miner)
    if os.geteuid() == 0:
        os.lchown(link, 65534, 65534)                   # the agent's link, as the agent's uid makes it
    got = _decisions(tmp_path, "python3", str(link))
    assert [(r, a) for r, a, *_ in got] == [("gpu.program", "kill-process")], got


def _admin_python3_links() -> list[str]:
    """python3 links here that lead to another name (python3.11), through
    root's links in directories only root writes (a venv's python3 ->
    /usr/bin/python3 -> python3.11)."""
    out = []
    for link in (os.path.join(os.path.dirname(sys.executable), "python3"), "/usr/bin/python3"):
        st = os.lstat(link) if os.path.lexists(link) else None
        if st is not None and os.path.islink(link) and st.st_uid == 0 \
                and os.path.basename(os.path.realpath(link)) != "python3":
            out.append(link)
    return out


@pytest.mark.parametrize("link", _admin_python3_links() or [pytest.param("", marks=pytest.mark.skip("no link"))])
def test_an_administrators_link_keeps_its_name(tmp_path, link):
    """`/usr/bin/python3 -> python3.11` (root's, in a directory only root
    writes): `python3` on the allow-list still admits it."""
    child = subprocess.Popen([link, "-c", "import time; time.sleep(30)"], executable=link)
    try:
        scen = tmp_path / "scenario.txt"
        scen.write_text(f"device 0\nprocess device=0 pid={child.pid} mem=1000 sm=90\n")
        r = subprocess.run([sys.executable, "-c", STEP, "python3", str(child.pid), link], env=env_for(scen),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr
    finally:
        child.kill()
        child.wait()


def _engine_decisions(allowed: tuple[str, ...], filename: bytes) -> list:
    globs = ", ".join(repr(g) for g in allowed)
    pol = load_policy_text(f"name: x\ngpu:\n  allowed_programs: [{globs}]\nactions:\n  gpu_program: kill-process\n")
    engine, rules = Engine(pol), GpuRules(pol.gpu)
    dev = GpuDeviceSample(0, "GPU-a", "H100", 90.0, 1, 2, 300.0)
    proc = AttributedGpuProcess("a", 9, 1, 0, 1000, 90.0, filename)
    return [(d.rule, d.action.value) for d in engine.on_breaches(rules.evaluate(GpuSample(1.0, (dev,)), [proc], 1.0),
                                                                  1.0)]


def test_a_path_glob_star_stays_in_its_directory():
    """`/opt/conda/bin/*` names the files in that directory, not a file
    any number of directories below it."""
    assert _engine_decisions(("/opt/conda/bin/*",), b"/opt/conda/bin/python") == []
    assert _engine_decisions(("/opt/conda/bin/*",), b"/opt/conda/bin/envs/x/m") == [("gpu.program", "kill-process")]


@pytest.mark.parametrize("key", ["allowed_programs", "signature: {allowed_programs"])
def test_a_program_path_with_dotdot_is_refused_at_load(key):
    text = f"name: x\ngpu:\n  {key}: ['/usr/bin/../tmp/*']" + ("}" if "{" in key else "") + "\n"
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    msg = str(e.value)
    assert msg.startswith("p.yaml:3: gpu.") and "allowed_programs[0]" in msg and "'..'" in msg, msg
    assert "\n" not in msg
