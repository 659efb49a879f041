"""What the actuator's GPU-safe actions (actuate/gpu_safe.py) need from NVML:
the GPU memory each pid still holds (the controller passes it in)."""

from __future__ import annotations


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

