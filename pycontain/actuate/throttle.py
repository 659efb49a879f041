"""Duty-cycle freezer: how GPU use is throttled.

There is no kernel knob that caps one process's share of a GPU, but a frozen
process submits no new kernels. Freezing the agent's cgroup for
``(1 - duty_cycle) * period_s`` of every ``period_s`` therefore caps its GPU
(and CPU) use at about ``duty_cycle``. Trade-offs (docs/cgroups.md): kernels
already queued keep running while frozen, so the cap is coarse for long
kernels; every freeze is a latency spike for the agent; collective operations
(NCCL) with peers outside the cgroup may time out if periods are long.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("pycontain.throttle")

MIN_PERIOD_S = 0.05


class DutyCycleThrottler:
    def __init__(self, cgroup, duty_cycle: float, period_s: float = 1.0):
        if not 0.0 < duty_cycle <= 1.0:
            raise ValueError(f"duty_cycle {duty_cycle!r} must be in (0, 1]")
        self.cgroup = cgroup
        self.duty_cycle = float(duty_cycle)
        self.period_s = max(MIN_PERIOD_S, float(period_s))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"duty-cycle-{self.cgroup.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop cycling; the cgroup is always left thawed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period_s + 2.0)
            self._thread = None
        try:
            self.cgroup.thaw()
        except OSError as e:
            log.warning("thaw of %s after duty cycle failed: %s", self.cgroup.v2_path, e)

    def _run(self) -> None:
        on = self.period_s * self.duty_cycle
        off = self.period_s - on
        try:
            while not self._stop.is_set():
                if self._stop.wait(on):
                    break
                if off <= 0:
                    continue
                # no wait for "frozen 1": a task in a driver call freezes when it returns
                self.cgroup.freeze(wait=False)
                self._stop.wait(off)
                self.cgroup.thaw()
        except OSError as e:           # the cgroup went away (agent ended)
            log.info("duty cycle for %s ended: %s", self.cgroup.v2_path, e)
        finally:
            try:
                self.cgroup.thaw()
            except OSError:
                pass
