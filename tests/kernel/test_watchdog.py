"""Fail closed: SIGKILL the controller and its agents (daemons included)
die within seconds and their cgroups go; a clean shutdown disarms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pycontain.actuate.cgroups import AgentCgroup
from tests.kernel.procs import alive as _alive

CONTROLLER = r"""
import json, os, sys, time
from pycontain.actuate.cgroups import AgentCgroup
from pycontain.actuate.launch import launch
from pycontain.actuate.watchdog import Watchdog

name, mode, pidfile, clean = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "clean"
cg = AgentCgroup.create(name)
wd = Watchdog.start([cg], mode=mode)
agent = launch(["sleep", "1000"], cg)
daemon_code = '''
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(1000)
    os._exit(0)
'''
launch([sys.executable, "-c", daemon_code, pidfile], cg).wait()
while not os.path.exists(pidfile):
    time.sleep(0.01)
if clean:
    wd.disarm()
    wd.close()
print(json.dumps({"cg": cg.to_dict(), "agent": agent.pid, "daemon": int(open(pidfile).read()),
                  "watchdog": wd.proc.pid, "wd_fd": wd.proc.args[4]}), flush=True)
if clean:
    sys.exit(0)
time.sleep(1000)
"""


def _wait(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _start(tmp_path, mode="kill", clean=False):
    ctl = subprocess.Popen([sys.executable, "-c", CONTROLLER, f"wd{os.getpid()}", mode,
                            str(tmp_path / "daemon.pid"), "clean" if clean else "crash"],
                           stdout=subprocess.PIPE, text=True)
    line = ctl.stdout.readline()
    assert line, "controller did not start"
    info = json.loads(line)
    return ctl, info, AgentCgroup.from_dict(info["cg"])


def _pipe_inode(pid: int, fd: int | str) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


@pytest.fixture
def cleanup():
    todo = []
    yield todo.append
    for ctl, cg in todo:
        if ctl.poll() is None:
            ctl.kill()
        ctl.wait()
        cg.owned = True
        cg.thaw()
        cg.remove()


def test_sigkill_of_the_controller_kills_agents_and_daemons(privileged, tmp_path, cleanup):
    ctl, info, cg = _start(tmp_path)
    cleanup((ctl, cg))
    agent, daemon, wd = info["agent"], info["daemon"], info["watchdog"]
    assert _alive(agent) and _alive(daemon)
    assert {agent, daemon} <= set(cg.pids())
    # the watchdog lives outside the agent cgroups and its own session
    assert wd not in cg.pids() and os.getsid(wd) == wd
    # no agent process holds the watchdog's pipe (or EOF would never come)
    pipe = _pipe_inode(wd, info["wd_fd"])
    for pid in cg.pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            assert _pipe_inode(pid, fd) != pipe
    ctl.send_signal(signal.SIGKILL)
    ctl.wait()
    assert _wait(lambda: not _alive(agent) and not _alive(daemon), 3), "agent outlived its controller"
    dirs = [cg.v2_path, *cg.v1_paths.values()]
    assert _wait(lambda: not any(os.path.exists(d) for d in dirs), 3)
    assert _wait(lambda: not _alive(wd), 3)


def test_freeze_mode_freezes_instead(privileged, tmp_path, cleanup):
    ctl, info, cg = _start(tmp_path, mode="freeze")
    cleanup((ctl, cg))
    ctl.send_signal(signal.SIGKILL)
    ctl.wait()
    assert _wait(cg.is_frozen, 3)
    assert _alive(info["agent"]) and _alive(info["daemon"])      # frozen, kept for inspection
    state = open(f"/proc/{info['daemon']}/stat").read().rsplit(")", 1)[1].split()[0]
    assert state in ("S", "D", "T")                                # not running


def test_clean_shutdown_disarms(privileged, tmp_path, cleanup):
    ctl, info, cg = _start(tmp_path, clean=True)
    cleanup((ctl, cg))
    assert ctl.wait(10) == 0
    assert _wait(lambda: not _alive(info["watchdog"]), 3)
    time.sleep(0.3)
    assert _alive(info["agent"]) and _alive(info["daemon"])      # the watchdog stayed quiet
    assert os.path.isdir(cg.v2_path)
