"""GPU-safe actions: stuck kills are reported with GPU memory and retried;
cuda-checkpoint locks CUDA work around a long freeze; kill thaws v1 first."""

from __future__ import annotations

from pycontain.actuate.gpu_safe import CudaLock, KillRetry, stuck_report
from pycontain.core.decisions import Action, Decision


class StuckCg:
    def __init__(self, survive: int):
        self.survive = survive          # how many kill calls time out
        self.kills = 0
        self.frozen = False

    def kill(self, timeout=5.0):
        self.kills += 1
        if self.kills <= self.survive:
            raise TimeoutError("survived")

    def pids(self):
        return [11, 12] if self.kills <= self.survive else []

    def freeze(self):
        self.frozen = True

    def thaw(self):
        self.frozen = False

    throttled_cores = None


class InstantTimer:
    """Runs the retry at once (no timed tests)."""
    def __init__(self, delay, fn, args):
        self.fn, self.args, self.daemon = fn, args, False

    def start(self):
        self.fn(*self.args)

    def cancel(self):
        pass


def test_stuck_kill_reports_gpu_memory_and_is_retried_until_done():
    told = []
    kr = KillRetry(gpu_memory=lambda: {11: 1000, 12: 24, 99: 5}, report=lambda a, r: told.append(r),
                   timer=InstantTimer)
    cg = StuckCg(survive=2)
    result = kr.kill("a", cg)
    assert result.startswith("failed: 2 process(es) survived kill") and "holding 1024 bytes of GPU memory" in result
    assert result.endswith("retrying")
    assert told[0].startswith("failed: retry 1") and told[-1] == "done: kill completed on retry 2"
    assert cg.kills == 3


def test_retries_give_up_and_say_so():
    told = []
    kr = KillRetry(report=lambda a, r: told.append(r), delays=(1.0,), timer=InstantTimer)
    kr.kill("a", StuckCg(survive=99))
    assert "gave up after 1 retries" in told[-1]


def test_stuck_report_without_nvml():
    assert stuck_report([1], None) == "1 process(es) survived kill (pids 1; stuck in the driver?)"


def test_actuator_kill_goes_through_kill_retry_and_freeze_locks_cuda():
    from pycontain.actuate.actuators import Actuator
    cg = StuckCg(survive=0)
    act = Actuator({"a": cg})
    calls = []
    act.cuda_lock = CudaLock(gpu_memory=lambda: {11: 1}, tool="/usr/bin/cuda-checkpoint",
                             run=lambda argv, **kw: calls.append(argv) or type("R", (), {"returncode": 0})())
    assert act.apply(Decision(agent="a", rule="manual", action=Action.FREEZE, reason="x")) == "done"
    assert cg.frozen and calls == [["/usr/bin/cuda-checkpoint", "--action", "lock", "--pid", "11", "--timeout", "2000"]]
    act.apply(Decision(agent="a", rule="manual", action=Action.THAW, reason="x"))
    assert not cg.frozen and calls[-1][:3] == ["/usr/bin/cuda-checkpoint", "--action", "unlock"]
    assert act.apply(Decision(agent="a", rule="manual", action=Action.KILL, reason="x")) == "done"


def test_no_cuda_checkpoint_no_lock():
    lock = CudaLock(gpu_memory=lambda: {11: 1}, tool="")
    assert not lock.available() and lock.lock("a", StuckCg(0)) == []


def test_kill_thaws_v1_freezer_and_uses_cgroup_kill(tmp_path, monkeypatch):
    """Hybrid: cgroup.kill on v2, then the v1 freezer thawed so frozen tasks can take SIGKILL."""
    from pycontain.actuate.cgroups import fs
    from pycontain.actuate.cgroups.agent import AgentCgroup
    v2, fr = tmp_path / "v2", tmp_path / "freezer"
    v2.mkdir()
    fr.mkdir()
    (v2 / "cgroup.kill").write_text("")
    (v2 / "cgroup.procs").write_text("")
    (fr / "freezer.state").write_text("FROZEN\n")
    (fr / "cgroup.procs").write_text("")
    order = []
    real = fs.write
    monkeypatch.setattr(fs, "write", lambda p, v: (order.append((p.rsplit("/", 1)[1], str(v))), real(p, v)))
    cg = AgentCgroup("a", str(v2), {"freezer": str(fr)}, kind="hybrid")
    cg.kill(timeout=1.0)
    assert order[:2] == [("cgroup.kill", "1"), ("freezer.state", "THAWED")]
