"""GPU-safe freeze and kill.

* A kill that does not complete (a process in uninterruptible sleep inside
  the NVIDIA driver, e.g. while the GPU is being reset or a DMA is pending)
  is reported with the pids that survived and the GPU memory they still hold,
  and retried with back-off: the driver usually lets go once the call returns.
* Before a freeze that is not part of the throttle's duty cycle, the agent's
  CUDA processes are locked with `cuda-checkpoint --action lock` where it is
  installed: the lock waits for launched work to finish and blocks new CUDA
  calls, so the freeze does not stop a process in the middle of a driver call
  or with kernels in flight (docs/gpu.md, "Freeze hazards").
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable

log = logging.getLogger("pycontain.actuate")

RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
LOCK_TIMEOUT_MS = 2000

GpuMemory = Callable[[], dict[int, int]]   # pid -> GPU memory bytes, every GPU process on the node


def stuck_report(pids: list[int], gpu_memory: GpuMemory | None) -> str:
    held = None
    if gpu_memory is not None:
        try:
            mem = gpu_memory()
            held = sum(mem.get(p, 0) for p in pids)
        except Exception as e:      # NVML trouble must not hide the stuck kill
            log.debug("GPU memory of stuck pids: %s", e)
    gpu = f", holding {held} bytes of GPU memory" if held is not None else ""
    shown = ",".join(map(str, pids[:8])) + ("..." if len(pids) > 8 else "")
    return f"{len(pids)} process(es) survived kill (pids {shown}; stuck in the driver?){gpu}"


class KillRetry:
    """Kill an agent cgroup; if some processes survive, report and retry."""

    def __init__(self, gpu_memory: GpuMemory | None = None,
                 report: Callable[[str, str], None] | None = None,
                 delays: tuple[float, ...] = RETRY_DELAYS_S, timer=threading.Timer):
        self.gpu_memory = gpu_memory
        self.report = report              # (agent, result) of each retry
        self.delays = delays
        self.timer = timer
        self.pending: dict[str, threading.Timer] = {}   # from self.timer

    def kill(self, agent: str, cg, timeout: float = 5.0) -> str:
        try:
            cg.kill(timeout=timeout)
            return "done"
        except TimeoutError:
            msg = stuck_report(cg.pids(), self.gpu_memory)
            self._schedule(agent, cg, 0)
            return f"failed: {msg}; retrying"

    def _schedule(self, agent: str, cg, attempt: int) -> None:
        if attempt >= len(self.delays):
            self._tell(agent, f"failed: {stuck_report(cg.pids(), self.gpu_memory)}; gave up after "
                              f"{attempt} retries")
            return
        t = self.timer(self.delays[attempt], self._retry, (agent, cg, attempt))
        t.daemon = True
        self.pending[agent] = t
        t.start()

    def _retry(self, agent: str, cg, attempt: int) -> None:
        self.pending.pop(agent, None)
        try:
            cg.kill(timeout=1.0)
            self._tell(agent, f"done: kill completed on retry {attempt + 1}")
        except TimeoutError:
            self._tell(agent, f"failed: retry {attempt + 1}: {stuck_report(cg.pids(), self.gpu_memory)}")
            self._schedule(agent, cg, attempt + 1)
        except OSError as e:             # the cgroup is gone: nothing left to kill
            self._tell(agent, f"done: cgroup gone ({e.strerror or e})")

    def _tell(self, agent: str, result: str) -> None:
        log.warning("agent %s: kill %s", agent, result)
        if self.report is not None:
            self.report(agent, result)

    def cancel(self) -> None:
        for t in list(self.pending.values()):
            t.cancel()
        self.pending.clear()


class CudaLock:
    """cuda-checkpoint lock/unlock around a long freeze (no-op where the tool
    or the GPU processes are absent)."""

    def __init__(self, gpu_memory: GpuMemory | None = None, tool: str | None = None, run=subprocess.run):
        self.gpu_memory = gpu_memory
        self.tool = tool if tool is not None else (shutil.which("cuda-checkpoint") or "")
        self.run = run
        self.locked: dict[str, list[int]] = {}

    def available(self) -> bool:
        return bool(self.tool)

    def lock(self, agent: str, cg) -> list[int]:
        """Lock the agent's CUDA processes; return the pids locked."""
        if not self.tool or self.gpu_memory is None:
            return []
        try:
            on_gpu = self.gpu_memory()
        except Exception:
            return []
        done = []
        for pid in cg.pids():
            if pid in on_gpu and self._action("lock", pid, "--timeout", str(LOCK_TIMEOUT_MS)):
                done.append(pid)
        self.locked[agent] = done
        return done

    def unlock(self, agent: str) -> None:
        for pid in self.locked.pop(agent, []):
            self._action("unlock", pid)

    def _action(self, action: str, pid: int, *extra: str) -> bool:
        try:
            r = self.run([self.tool, "--action", action, "--pid", str(pid), *extra],
                         capture_output=True, text=True, timeout=LOCK_TIMEOUT_MS / 1000 + 5)
        except (OSError, subprocess.TimeoutExpired) as e:
            log.warning("cuda-checkpoint %s pid %d: %s", action, pid, e)
            return False
        if r.returncode != 0:
            log.warning("cuda-checkpoint %s pid %d: %s", action, pid, (r.stderr or r.stdout).strip()[:200])
        return r.returncode == 0
