"""Periodic measurements fed to the engine (pure data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CgroupSample:
    """One reading of an agent's cgroup files (v1 or v2)."""

    cpu_usage_seconds: float          # cumulative
    memory_bytes: int
    pids: int
    cpu_limit_cores: float | None = None
    memory_max_bytes: int | None = None
    memory_high_bytes: int | None = None
    memory_events_high: int = 0       # times memory.high was hit (v2), 0 when unknown
    memory_events_oom_kill: int = 0


@dataclass(frozen=True)
class GpuDeviceSample:
    index: int
    uuid: str
    name: str
    util_gpu: float | None            # percent; None = unavailable
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_watts: float | None
    mig: bool = False
    int_util: float | None = None     # GPM integer-pipe activity, percent; None = no GPM
    tensor_util: float | None = None  # GPM tensor activity (any), percent


@dataclass(frozen=True)
class GpuProcessSample:
    pid: int                          # host pid namespace
    device: int
    used_memory_bytes: int | None     # None = unavailable
    sm_util: float | None             # percent over the last interval; None = unavailable (e.g. MIG)


@dataclass(frozen=True)
class GpuSample:
    ts: float                         # time.monotonic() of the reading
    devices: tuple[GpuDeviceSample, ...] = ()
    processes: tuple[GpuProcessSample, ...] = ()
    status: str = "ok"                # "ok", "degraded: <why>", "unavailable: <why>"
