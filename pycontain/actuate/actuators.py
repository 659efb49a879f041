"""Carry out the engine's decisions on agent cgroups and processes.

Every apply returns a short result for the audit log: ``done``,
``skipped: <why>`` or ``failed: <why>``. Monitor-mode decisions are never
acted on. KILL_PROCESS never hits a reused pid: the process is pinned with a
pidfd first, then its start time and cgroup are checked, then the signal goes
to the pidfd (a pid that exits and is reused after the check gets nothing).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping

from ..core.decisions import BOUNDARY_RULE, Action, Decision
from ..core.errors import PycontainError
from .cgroups import AgentCgroup
from .gpu_safe import CudaLock, GpuMemory, KillRetry
from .throttle import DutyCycleThrottler

MIN_THROTTLE_CORES = 0.05


class Actuator:
    def __init__(self, cgroups: Mapping[str, AgentCgroup], *, throttle_cores: Callable[[str], float] | None = None,
                 on_result: Callable[[Decision, str], None] | None = None, proc_root: str = "/proc",
                 gpu_memory: GpuMemory | None = None, report_retry: Callable[[str, str], None] | None = None):
        self.cgroups = cgroups               # live mapping owned by the controller
        self.throttle_cores = throttle_cores
        self.on_result = on_result
        self.proc_root = proc_root
        self._cyclers: dict[str, DutyCycleThrottler] = {}
        self.kill_retry = KillRetry(gpu_memory, report_retry)   # gpu_safe.py
        self.cuda_lock = CudaLock(gpu_memory)
        self._lock = threading.RLock()

    def apply(self, decision: Decision) -> str:
        with self._lock:
            result = self._apply(decision)
        if self.on_result is not None:
            self.on_result(decision, result)
        return result

    def close(self) -> None:
        """Stop every duty cycle (each leaves its cgroup thawed)."""
        with self._lock:
            for name in list(self._cyclers):
                self._stop_cycler(name)
        self.kill_retry.cancel()

    # ---- actions -------------------------------------------------------------------

    def _apply(self, d: Decision) -> str:
        if d.monitor:
            return "skipped: monitor"
        if d.action in (Action.ALERT, Action.DENY):
            return "skipped: nothing to do"   # recorded only / already enforced in the kernel
        cg = self.cgroups.get(d.agent)
        if cg is None:
            return f"failed: no cgroup for agent {d.agent}"
        try:
            if d.action == Action.KILL_PROCESS:
                return self._kill_process(cg, d)
            if d.action == Action.THROTTLE:
                return self._throttle(cg, d)
            if d.action == Action.FREEZE:
                self._stop_cycler(d.agent)
                self.cuda_lock.lock(d.agent, cg)     # a long freeze: CUDA work locked first
                cg.freeze()
            elif d.action == Action.THAW:
                self._stop_cycler(d.agent)
                if cg.throttled_cores is not None:
                    cg.unthrottle()
                cg.thaw()
                self.cuda_lock.unlock(d.agent)
            elif d.action == Action.KILL:
                self._stop_cycler(d.agent)           # leaves the cgroup thawed
                return self.kill_retry.kill(d.agent, cg)
            else:
                return f"failed: unknown action {d.action}"
            return "done"
        except (OSError, TimeoutError, PycontainError) as e:
            return f"failed: {getattr(e, 'strerror', None) or e}"

    def _throttle(self, cg, d: Decision) -> str:
        if self.throttle_cores is not None:
            cores = self.throttle_cores(d.agent)
        else:
            budget = cg.cpu_budget_cores or float(os.cpu_count() or 1)
            cores = budget / 2
        cores = max(MIN_THROTTLE_CORES, cores)
        cg.throttle(cores)
        gpu = d.gpu.throttle if d.gpu is not None else None
        if gpu is not None:
            duty, period = gpu.duty_cycle, gpu.period_s
            cur = self._cyclers.get(d.agent)
            if cur is None or not cur.running or cur.duty_cycle != duty or cur.period_s != period:
                self._stop_cycler(d.agent)
                cyc = DutyCycleThrottler(cg, duty, period)
                cyc.start()
                self._cyclers[d.agent] = cyc
        return "done"

    def _stop_cycler(self, agent: str) -> None:
        cyc = self._cyclers.pop(agent, None)
        if cyc is not None:
            cyc.stop()

    def _kill_process(self, cg, d: Decision) -> str:
        if d.pid is None:
            return "failed: no pid given"
        try:
            pidfd = os.pidfd_open(d.pid)       # pins this process instance
        except ProcessLookupError:
            return f"skipped: pid {d.pid} already exited"
        try:
            if process_exited(d.pid, self.proc_root):     # a zombie: a signal would "succeed" on nothing
                return f"skipped: pid {d.pid} already exited"
            # an escaped task is outside the cgroup by definition: the kernel's
            # identity of the task (ebpf/boundary.c) made it this agent's
            if d.rule != BOUNDARY_RULE and d.pid not in cg.pids():
                return f"skipped: pid {d.pid} is not in agent {d.agent}'s cgroup"
            if d.start_ns is not None:
                try:
                    now_ns = proc_start_ns(d.pid, self.proc_root)
                except (OSError, ValueError, IndexError):
                    return f"skipped: pid {d.pid} already exited"
                if not same_start(d.start_ns, now_ns):
                    return f"skipped: pid {d.pid} is another process now (pid reused)"
            family = descendants(d.pid, cg.pids(), self.proc_root)   # before the kill: it reparents them
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                return f"skipped: pid {d.pid} already exited"
            self._kill_descendants(family)
            return "done"
        finally:
            os.close(pidfd)

    @staticmethod
    def _kill_descendants(pids: list[int]) -> None:
        """issue 11: a violator's children die with it (a tunnel that forked
        into the background must not outlive its parent)."""
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def proc_ppid(pid: int, proc_root: str = "/proc") -> int:
    with open(f"{proc_root}/{pid}/stat", "rb") as fh:
        data = fh.read()
    return int(data[data.rindex(b")") + 2:].split()[1])


def descendants(root: int, pids: list[int], proc_root: str = "/proc") -> list[int]:
    """The pids among `pids` (the agent cgroup's) descending from `root`, by
    parent links read from /proc. A child already reparented away (double
    fork) is not found here; it is still inside the agent cgroup."""
    parent: dict[int, int] = {}
    for p in pids:
        try:
            parent[p] = proc_ppid(p, proc_root)
        except (OSError, ValueError, IndexError):
            continue
    out: list[int] = []
    frontier = {root}
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in out and p != root]
        out += kids
        frontier = set(kids)
    return out


def clock_tick_ns() -> int:
    return 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def process_exited(pid: int, proc_root: str = "/proc") -> bool:
    """The process has exited (a zombie waiting for its parent, or gone)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return True
    return data[data.rindex(b")") + 2:][:1] in (b"Z", b"X")


def proc_start_ns(pid: int, proc_root: str = "/proc") -> int:
    """Start time (ns since boot, CLOCK_BOOTTIME) from /proc/<pid>/stat field
    22, which the kernel gives in clock ticks (10 ms at USER_HZ=100)."""
    with open(f"{proc_root}/{pid}/stat", "rb") as fh:
        data = fh.read()
    rest = data[data.rindex(b")") + 2:].split()   # comm may hold spaces and ')'
    return int(rest[22 - 3]) * clock_tick_ns()


def same_start(start_ns: int, stat_ns: int) -> bool:
    """/proc floors the start time to a tick, so the true start lies in
    [stat_ns, stat_ns + tick). The kernel stream's start_ns may be taken at
    fork or at exec, up to one tick later than the true start. So a match is
    start_ns - stat_ns in [-tick, 2 ticks) (one tick below for rounding). A
    reused pid would need the pid space to wrap within that ~20 ms window."""
    tick = clock_tick_ns()
    return -tick <= start_ns - stat_ns < 2 * tick
