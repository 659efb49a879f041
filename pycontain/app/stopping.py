"""`pycontain run` stops like `docker stop` (issue 13 part 4), standalone or
through the node daemon: the first stop signal is forwarded to the agent and
starts --stop-timeout; an agent still running when it ends is killed, every
process of its cgroup, traps or not."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable


class Stopping:
    def __init__(self, timeout: float, note: Callable[[str], None], kill: Callable[[], None]):
        self.timeout, self.note, self.kill = timeout, note, kill
        self.deadline: float | None = None
        self.killed = False

    def signalled(self, signum: int) -> None:
        """A stop signal was forwarded to the agent: the first one starts the clock."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
            self.note(f"stopping the agent ({signal.Signals(signum).name}; killed after {self.timeout:g}s)")

    def check(self) -> None:
        """Called while supervising: kill the agent once the timeout has passed."""
        if self.deadline is None or self.killed or time.monotonic() < self.deadline:
            return
        self.killed = True
        self.note(f"the agent did not stop within {self.timeout:g}s: killing it")
        self.kill()


def kill_whole_agent(cgroup, proc) -> None:
    """Every process of the agent's cgroup (daemons that left the process
    tree included), then the launched process group."""
    if cgroup is not None:
        cgroup.kill()
    if proc is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
