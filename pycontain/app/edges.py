"""The edges the controller drives, as factories: BPF probes, the actuator,
NVML, DNS, the metrics and state API servers and the clocks.

`Edges()` is the real machine; tests pass fakes (tests/unit/test_app_session.py).
Nothing here imports bcc or pynvml: Probes.load and Nvml() import them when
called, so importing the app layer stays light.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..actuate.actuators import Actuator
from ..gpu.nvml import Nvml
from ..kernel.loader import Probes
from ..observe.metrics import start_metrics_server
from ..observe.state_api import StateServer


def boot_to_wall_offset() -> float:
    """Add to boot-clock seconds (bpf_ktime_get_boot_ns) to get wall-clock time."""
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Clock:
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    boot_offset: Callable[[], float] = boot_to_wall_offset
    boot_ns: Callable[[], int] = lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME)   # held-exec timeouts


def dns_lookup(name: str) -> list[str]:
    try:
        return sorted({str(ai[4][0]) for ai in socket.getaddrinfo(name, None)})
    except OSError:
        return []


def _actuator(cgroups, *, gpu_memory=None, report_retry=None) -> Actuator:
    return Actuator(cgroups, on_result=None, gpu_memory=gpu_memory, report_retry=report_retry)


@dataclass
class Edges:
    probes: Callable[..., Any] = Probes                   # (progress=, trace_all=) -> Probes
    actuator: Callable[..., Any] = _actuator              # (live cgroups, gpu_memory=, report_retry=) -> Actuator
    nvml: Callable[[], Any] | None = Nvml                 # None: no GPU sampling at all
    lookup: Callable[[str], list[str]] = dns_lookup       # host name -> addresses
    state_server: Callable[..., Any] = StateServer        # (state, path, handlers=) -> .start()/.close()
    metrics_server: Callable[..., Any] = start_metrics_server  # (port, state, addr=) -> (server, registry)
    clock: Clock = field(default_factory=Clock)
