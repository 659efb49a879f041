"""Give the actuator's GPU-safe actions (actuate/gpu_safe.py) what they
need from this side: per-pid GPU memory from NVML, and a way to record the
results of kill retries in the audit log."""

from __future__ import annotations

import time


def gpu_memory_fn(nvml):
    """() -> {pid: GPU memory bytes} over every GPU, or None without NVML."""
    if nvml is None or not nvml.available:
        return None

    def read() -> dict[int, int]:
        out: dict[int, int] = {}
        for i in nvml.device_indices:
            try:
                mem = nvml.memory_by_pid(i)   # not processes(): that moves the utilisation cursor
            except Exception:
                continue
            for pid, used in mem.items():
                out[pid] = out.get(pid, 0) + (used or 0)
        return out
    return read


def wire_gpu_safety(ctl) -> None:
    act = ctl.actuator
    nvml = ctl.gpu[0].nvml if ctl.gpu else None
    mem = gpu_memory_fn(nvml)
    act.kill_retry.gpu_memory = mem
    act.cuda_lock.gpu_memory = mem

    def report(agent: str, result: str) -> None:
        ctl._record({"ts": time.time(), "agent": agent, "kind": "action", "rule": "kill-retry",
                     "action": "kill", "result": result, "pid": None})
    act.kill_retry.report = report
