"""Real cgroups on this host (hybrid here, pure v2 on most GPU nodes):
budgets land, limits bite, freeze stops, kill reaches daemons, remove cleans."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from pycontain.actuate.cgroups import AgentCgroup, detect_layout
from pycontain.actuate.launch import launch
from tests.kernel.procs import alive as _alive

PY = sys.executable


@pytest.fixture
def cg(privileged, request):
    c = AgentCgroup.create(f"t{os.getpid()}")
    request.addfinalizer(lambda: c.remove())
    return c


def _read(path):
    with open(path) as fh:
        return fh.read().strip()


def _wait(cond, timeout=5.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _ctl(cg, ctrl, v2_file):
    return (cg.v2_path, True) if cg.kind == "v2" else (cg.v1_paths[ctrl], False)


def test_agent_cgroups_are_nested_under_our_own(cg):
    lay = detect_layout()
    assert os.path.dirname(cg.v2_path) == lay.own_v2()
    assert cg.cgroup_id == os.stat(cg.v2_path).st_ino
    for ctrl, path in cg.v1_paths.items():
        assert os.path.dirname(path) == lay.own_v1(ctrl)      # e.g. our memory cgroup stays the parent


def test_budgets_land_in_the_cgroup_files(cg):
    cg.set_budgets(cpu_cores=0.5, memory_bytes=64 << 20, memory_high_bytes=48 << 20, pids=50)
    d, v2 = _ctl(cg, "cpu", "cpu.max")
    if v2:
        assert _read(d + "/cpu.max") == "50000 100000"
        assert _read(d + "/memory.max") == str(64 << 20)
        assert _read(d + "/memory.high") == str(48 << 20)
        assert _read(d + "/pids.max") == "50"
    else:
        assert _read(d + "/cpu.cfs_quota_us") == "50000"
        assert _read(d + "/cpu.cfs_period_us") == "100000"
        m = cg.v1_paths["memory"]
        assert _read(m + "/memory.limit_in_bytes") == str(64 << 20)
        assert _read(m + "/memory.soft_limit_in_bytes") == str(48 << 20)
        assert _read(cg.v1_paths["pids"] + "/pids.max") == "50"
    s = cg.sample()
    assert s.cpu_limit_cores == pytest.approx(0.5)
    assert (s.memory_max_bytes, s.memory_high_bytes) == (64 << 20, 48 << 20)


def test_unlimited_budgets_of_a_fresh_cgroup_stay_unlimited_and_later_ones_apply(cg):
    # the start path writes nothing for a fresh cgroup's unlimited budgets:
    # what the kernel reports must be the same as if it had
    cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=None)
    s = cg.sample()
    assert (s.cpu_limit_cores, s.memory_max_bytes, s.memory_high_bytes) == (None, None, None)
    pids_dir = cg.v2_path if cg.kind == "v2" else cg.v1_paths["pids"]
    assert _read(pids_dir + "/pids.max") == "max"
    cg.set_budgets(cpu_cores=0.5, memory_bytes=64 << 20, memory_high_bytes=None, pids=50)
    cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=None)   # a reload lifts them
    s = cg.sample()
    assert (s.cpu_limit_cores, s.memory_max_bytes) == (None, None)
    assert _read(pids_dir + "/pids.max") == "max"


def test_cpu_hog_throttled_to_a_fifth_of_a_core(cg):
    proc = launch(["sh", "-c", "while :; do :; done"], cg)
    try:
        cg.throttle(0.2)
        time.sleep(0.3)                          # let the quota take hold
        u0, t0 = cg.sample().cpu_usage_seconds, time.monotonic()
        time.sleep(2.5)
        u1, t1 = cg.sample().cpu_usage_seconds, time.monotonic()
        rate = (u1 - u0) / (t1 - t0)
        assert 0.12 <= rate <= 0.30, f"hog used {rate:.3f} cores under a 0.2-core throttle"
        cg.unthrottle()
    finally:
        cg.kill()
        proc.wait()


FORK_BOMB = r"""
import os, time, sys
ok = failed = 0
for _ in range(200):                      # bounded: 200 tries at most
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    ok += 1
print(ok, failed, flush=True)
"""


def test_pids_max_stops_a_fork_bomb(cg, tmp_path):
    cg.set_budgets(cpu_cores=None, memory_bytes=None, memory_high_bytes=None, pids=16)
    out = tmp_path / "out"
    proc = launch(["sh", "-c", f"exec {PY} -c '{FORK_BOMB}' > {out}"], cg)
    try:
        assert proc.wait(20) == 0
        ok, failed = map(int, out.read_text().split())
        assert ok <= 15 and failed >= 185          # the bomb itself is one of the 16
        assert cg.sample().pids <= 16
    finally:
        cg.kill()


MEM_HOG = "chunks = [b'\\x01' * (1 << 20) for _ in range(256)]; print('survived')"


def test_memory_max_oom_kills_a_hog(cg):
    cg.set_budgets(cpu_cores=None, memory_bytes=64 << 20, memory_high_bytes=None, pids=None)
    proc = launch([PY, "-c", MEM_HOG], cg)
    assert proc.wait(20) == -signal.SIGKILL
    assert cg.sample().memory_events_oom_kill >= 1


COUNTER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
i = 0
while True:
    i += 1
    os.pwrite(fd, b"%012d" % i, 0)
    time.sleep(0.005)
"""


def _count(path) -> int:
    t = path.read_text() if path.exists() else ""
    return int(t) if t.strip() else 0


def test_freeze_stops_progress_and_thaw_resumes(cg, tmp_path):
    counter = tmp_path / "counter"
    proc = launch([PY, "-c", COUNTER, str(counter)], cg)
    try:
        assert _wait(lambda: _count(counter) > 5)
        cg.freeze()
        assert cg.is_frozen()
        a = _count(counter)
        time.sleep(0.5)
        assert _count(counter) == a, "a frozen process made progress"
        assert _alive(proc.pid)
        cg.thaw()
        assert not cg.is_frozen()
        assert _wait(lambda: _count(counter) > a + 5)
    finally:
        cg.kill()
        proc.wait()


DAEMON = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(1000)
    os._exit(0)
os.wait()
os.execvp("sleep", ["sleep", "1000"])
"""


def start_daemon(cg, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    proc = launch([PY, "-c", DAEMON, str(pidfile)], cg)
    assert _wait(pidfile.exists)
    return proc, int(pidfile.read_text())


def test_kill_reaches_a_double_forked_daemon(cg, tmp_path):
    proc, daemon = start_daemon(cg, tmp_path)
    assert daemon in cg.pids() and _alive(daemon)
    assert os.getsid(daemon) != os.getsid(proc.pid)          # it left the agent's session
    cg.kill()
    assert proc.wait(5) == -signal.SIGKILL
    assert _wait(lambda: not _alive(daemon), 3)
    assert cg.pids() == []


def test_kill_of_a_frozen_cgroup(cg):
    proc = launch(["sleep", "1000"], cg)
    cg.freeze()
    cg.kill()
    assert proc.wait(5) == -signal.SIGKILL


def test_remove_leaves_no_dirs(privileged):
    c = AgentCgroup.create(f"rm{os.getpid()}")
    proc = launch(["sleep", "1000"], c)
    dirs = [c.v2_path, *c.v1_paths.values()]
    os.mkdir(c.v2_path + "/inner")                 # an agent may make sub-cgroups
    c.remove()
    assert proc.wait(5) == -signal.SIGKILL
    assert not [d for d in dirs if os.path.exists(d)]
    c.remove()                                      # idempotent


def test_adopt_finds_the_cgroups_of_a_running_agent(cg):
    proc = launch(["sleep", "1000"], cg)
    try:
        other = AgentCgroup.adopt(cg.v2_path, "adopted")
        assert other.cgroup_id == cg.cgroup_id
        for ctrl, path in other.v1_paths.items():
            assert path == cg.v1_paths[ctrl]
        if cg.kind == "hybrid":
            assert {"memory", "pids", "cpu"} <= set(other.v1_paths)
        assert other.pids() == [proc.pid]
        other.remove()                              # not ours: left alone
        assert _alive(proc.pid)
    finally:
        cg.kill()
        proc.wait()


def test_kill_fallback_for_old_kernels(cg, tmp_path, monkeypatch):
    """No cgroup.kill (< 5.14) and, on hybrid hosts, no cgroup.freeze (< 5.2):
    freeze + SIGKILL + thaw through the v1 freezer must still reach a daemon."""
    monkeypatch.setattr(AgentCgroup, "_v2_kill_file", lambda self: None)
    if "freezer" in cg.v1_paths:
        monkeypatch.setattr(AgentCgroup, "_v2_freeze_file", lambda self: None)
    proc, daemon = start_daemon(cg, tmp_path)
    cg.freeze()
    if "freezer" in cg.v1_paths:
        assert _read(cg.v1_paths["freezer"] + "/freezer.state") == "FROZEN"
    cg.kill()
    assert proc.wait(5) == -signal.SIGKILL
    assert _wait(lambda: not _alive(daemon), 3)
    assert cg.pids() == []
