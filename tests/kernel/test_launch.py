"""The agent is inside its cgroups at its first instruction, in its own
session, with the privileges asked for; bad commands never start.

Every test runs once per way of making the agent's process (the native vfork
child and the Python fork child, fixture spawn_path)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

import pytest

from pycontain.actuate.cgroups import AgentCgroup, detect_layout
from pycontain.actuate.launch import launch
from pycontain.core.errors import CommandNotFound, EnvironmentProblem

pytestmark = pytest.mark.usefixtures("spawn_path")

TRACEFS = "/sys/kernel/tracing" if os.path.isdir("/sys/kernel/tracing/events") else "/sys/kernel/debug/tracing"
CLONE_VM, CLONE_VFORK = 0x100, 0x4000


@pytest.fixture
def cg(privileged, request):
    c = AgentCgroup.create(f"l{os.getpid()}")
    request.addfinalizer(lambda: c.remove())
    return c


@pytest.fixture
def outdir():
    d = tempfile.mkdtemp(prefix="pycontain-launch-", dir="/tmp")
    os.chmod(d, 0o777)               # writable for --user nobody too (pytest's tmp is 0700)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _rel(path: str, mount: str) -> str:
    return "/" + os.path.relpath(path, mount)


def test_first_instruction_already_runs_in_the_agent_cgroups(cg, outdir):
    out = outdir / "cgroup"
    # dd is the launched program itself: what it reads is its own membership at exec
    proc = launch(["dd", "if=/proc/self/cgroup", f"of={out}", "status=none"], cg)
    assert proc.wait(10) == 0
    lines = dict(line.split(":", 2)[1:] for line in out.read_text().splitlines())
    lay = detect_layout()
    assert lines[""] == _rel(cg.v2_path, lay.unified)
    for ctrl, path in cg.v1_paths.items():
        key = next(k for k in lines if ctrl in k.split(","))
        assert lines[key] == _rel(path, lay.v1[ctrl])


def test_agent_gets_its_own_session_and_process_group(cg):
    proc = launch(["sleep", "1000"], cg)
    try:
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
        assert os.getpgid(proc.pid) == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_user_drops_privileges_after_joining(cg, outdir):
    out = outdir / "id"
    proc = launch(["sh", "-c", f"echo $(id -u) $(id -g) $HOME $USER > {out}; cat /proc/self/cgroup >> {out}"],
                  cg, user="nobody")
    assert proc.wait(10) == 0
    first, *cgroup_lines = out.read_text().splitlines()
    uid, gid, home, user = first.split()
    assert (uid, user) == ("65534", "nobody") and home != os.environ.get("HOME")
    assert any(line.startswith("0::") and line.endswith(os.path.basename(cg.v2_path)) for line in cgroup_lines)


def test_missing_command_is_127_and_nothing_starts(cg):
    with pytest.raises(CommandNotFound) as e:
        launch(["pycontain-no-such-command"], cg)
    assert e.value.exit_code == 127
    assert cg.pids() == []


def test_exec_failure_in_the_child_is_reported(cg, tmp_path):
    bad = tmp_path / "garbage"
    bad.write_bytes(b"\x7fNOT-AN-ELF\x00\x01")
    bad.chmod(stat.S_IRWXU)
    with pytest.raises(CommandNotFound):
        launch([str(bad)], cg)
    assert cg.pids() == []


def test_agent_inherits_only_stdio(cg):
    r, w = os.pipe()
    os.set_inheritable(w, True)      # even an inheritable fd of the controller stays out
    proc = launch(["sleep", "1000"], cg)
    try:
        mine = os.readlink(f"/proc/self/fd/{w}")
        theirs = {}
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            try:
                theirs[int(fd)] = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            except FileNotFoundError:
                pass     # sleep's own short-lived fds (locale files)
        assert mine not in theirs.values()
        assert {0, 1, 2} <= set(theirs)
    finally:
        proc.kill()
        proc.wait()
        os.close(r)
        os.close(w)


def test_signal_to_the_agent_group_does_not_reach_us(cg):
    proc = launch(["sleep", "1000"], cg)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(5) == -signal.SIGTERM


@pytest.fixture
def new_tasks():
    """The kernel's record of each task this process creates (ftrace
    task_newtask, in a private instance): [(pid, clone_flags)]."""
    inst = f"{TRACEFS}/instances/pycontain-launch-{os.getpid()}"
    os.mkdir(inst)
    try:
        Path(f"{inst}/events/task/task_newtask/filter").write_text(f"common_pid == {os.getpid()}")
        Path(f"{inst}/events/task/task_newtask/enable").write_text("1")

        def read() -> list[tuple[int, int]]:
            out = []
            for line in Path(f"{inst}/trace").read_text().splitlines():
                if "task_newtask:" in line:
                    fields = dict(f.split("=", 1) for f in line.split("task_newtask:")[1].split() if "=" in f)
                    out.append((int(fields["pid"]), int(fields["clone_flags"], 16)))
            return out
        yield read
    finally:
        Path(f"{inst}/events/task/task_newtask/enable").write_text("0")
        os.rmdir(inst)


def test_native_path_makes_the_agent_with_vfork(cg, spawn_path, new_tasks):
    proc = launch(["true"], cg)
    assert proc.wait(10) == 0
    flags = dict(new_tasks())[proc.pid]       # as the kernel saw the agent's process being made
    if spawn_path == "native":                # shares our memory until exec: no copy of Python
        assert flags & (CLONE_VM | CLONE_VFORK) == CLONE_VM | CLONE_VFORK
    else:
        assert not flags & CLONE_VM


def test_a_failing_join_is_one_line_and_nothing_runs(cg, outdir):
    sentinel = outdir / "ran"
    os.rmdir(cg.v2_path)                      # the cgroup vanished between creation and launch
    with pytest.raises(EnvironmentProblem) as e:
        launch(["sh", "-c", f"echo ran > {sentinel}"], cg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"could not place the agent in its cgroup {cg.v2_path}")
    time.sleep(0.2)
    assert not sentinel.exists()
    assert cg.pids() == []                    # nothing left in its v1 dirs either
    with open("/proc/self/task/" + str(os.getpid()) + "/children") as fh:
        assert fh.read().split() == []       # the child was reaped: no zombie
