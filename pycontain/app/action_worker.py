"""Slow actions off the intake path.

Draining the ring must never wait for an action: a whole-agent kill waits
for the cgroup to empty (up to 5 s), a freeze for the freezer and for CUDA
locks (NVML), a throttle writes cgroup files. Those run here, one at a time
in the order they were decided (so a freeze and the thaw after it keep their
order), on one daemon thread. Killing one process (pidfd, a few syscalls)
stays inline: it is what stops an `ssh -R` before it connects.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ..core.decisions import Action

log = logging.getLogger("pycontain")

SLOW_ACTIONS = frozenset({Action.KILL, Action.FREEZE, Action.THAW, Action.THROTTLE})


class ActionWorker:
    def __init__(self, name: str = "actions") -> None:
        self._q: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._queued = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        with self._idle:
            self._queued += 1
        self._q.put(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once every job submitted so far has run."""
        with self._idle:
            return self._idle.wait_for(lambda: self._queued == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued (a kill decided before shutdown still happens), then stop."""
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._q.get()) is not None:
            try:
                job()
            except Exception:       # the job counts its own failures; never let the worker die
                log.exception("action worker job failed")
            finally:
                with self._idle:
                    self._queued -= 1
                    self._idle.notify_all()
