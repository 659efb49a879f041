"""Periodic GPU readings as pure GpuSample values."""

from __future__ import annotations

from ..core.errors import GpuUnavailable
from ..core.samples import GpuSample
from .nvml import DeviceGone, Nvml


class GpuSampler:
    def __init__(self, nvml: Nvml, interval_s: float = 1.0):
        self.nvml = nvml
        self.interval_s = interval_s

    def sample(self, now: float) -> GpuSample:
        nv = self.nvml
        if not nv.available:
            return GpuSample(ts=now, status=nv.status)
        if nv.gone:
            nv.refresh_devices()      # a lost GPU may come back after a reset
        devices, procs = [], []
        for i in nv.device_indices:
            try:
                devices.append(nv.device(i))
                procs.extend(nv.processes(i))
            except DeviceGone:
                continue
        nv._update_status()
        return GpuSample(ts=now, devices=tuple(devices), processes=tuple(procs), status=nv.status)


def check_gpu_requirement(policy_gpu, allow_no_gpu: bool, nvml: Nvml) -> None:
    """A policy that requires GPU enforcement refuses to start without NVML."""
    if getattr(policy_gpu, "required", False) and not nvml.available and not allow_no_gpu:
        raise GpuUnavailable(f"policy requires GPU enforcement but NVML is {nvml.status}",
                             "install the NVIDIA driver, or pass --allow-no-gpu to run without GPU rules")
