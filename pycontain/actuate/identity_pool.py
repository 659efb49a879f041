"""The node daemon's fresh uids for the agents it starts (privileges.dynamic_user).

An agent started through the daemon (`pycontain run`, pycontain.client) runs
under a uid of its own, as a standalone run does (actuate/dynamic_user.py):
without one, a rollout worker's episodes would run as the worker, root, and
could write every root-owned file of the node (cron, sshd keys, pycontain's
own code), capabilities dropped or not.

Taking a uid scans /proc under a lock that every `pycontain run` on the node
shares: 2-4 ms on the 2-vCPU VM, more on a node with thousands of processes.
Thirty-two agents started at once would queue behind 32 scans. So the daemon
leases uids ahead, in one scan (their leases name the daemon's pid, their
homes are made), and hands one out with each start. A background thread
tops the pool up and gives uids back (private home, what the uid left in
/tmp, /var/tmp and /dev/shm, the lease) once their agent's cgroup is gone,
so neither a start nor a stop waits for either. A pool found short grows
to the burst that emptied it (at most `limit`); an empty pool falls back to
taking uids in the request, never to running the agent as the caller.

Hand-written: systemd's allocator lives in PID 1 and nss-systemd.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..core.errors import PycontainError
from .dynamic_user import DynamicUser

log = logging.getLogger("pycontain.daemon")

UidRange = tuple[int, int]
Allocate = Callable[[UidRange, int], list[DynamicUser]]

DEFAULT_TARGET = 32      # issue 14's burst: 32 agents at once
LIMIT = 128              # one /v1/starts request's most
RETRY_S = 5.0            # after a failed top-up (range full): try again this much later


class IdentityPool:
    """take() hands out leased uids; give_back() returns them once their agent is gone."""

    def __init__(self, allocate: Allocate = DynamicUser.allocate_many, target: int = DEFAULT_TARGET,
                 limit: int = LIMIT):
        self._allocate, self.target, self.limit = allocate, target, limit
        self._cond = threading.Condition()
        self._ready: deque[DynamicUser] = deque()
        self._returned: list[DynamicUser] = []
        self._range: UidRange | None = None      # what the pool holds; None: nothing asked yet
        self._taken_since_full = 0
        self._retry_at = 0.0                     # after a failed top-up (range full): wait
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self, uid_range: UidRange | None) -> None:
        """Start the top-up thread; uid_range: fill now (the node policy's)."""
        with self._cond:
            if uid_range is not None:
                self._retarget(uid_range)
        self._thread = threading.Thread(target=self._work, name="pycontain-uids", daemon=True)
        self._thread.start()

    def take(self, uid_range: UidRange, n: int = 1) -> list[DynamicUser]:
        """n uids of uid_range: from the pool, the shortfall taken here."""
        with self._cond:
            self._retarget(uid_range)
            got = [self._ready.popleft() for _ in range(min(n, len(self._ready)))]
            self._taken_since_full += n
            if self._taken_since_full > self.target:
                self.target = min(self.limit, self._taken_since_full)
            self._cond.notify()
        if len(got) < n:
            try:
                got += self._allocate(uid_range, n - len(got))
            except BaseException:
                self.give_back(got)
                raise
        return got

    def give_back(self, users: list[DynamicUser]) -> None:
        """After every process of these uids is gone (their cgroups removed)."""
        if not users:
            return
        with self._cond:
            self._returned.extend(users)
            self._cond.notify()
        if self._thread is None:
            self._release_returned()

    def close(self) -> None:
        """Stop the thread; give back every uid the pool holds."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._cond:
            self._returned.extend(self._ready)
            self._ready.clear()
        self._release_returned()

    def ready(self) -> int:
        with self._cond:
            return len(self._ready)

    # ---- under self._cond ----------------------------------------------------

    def _retarget(self, uid_range: UidRange) -> None:
        if uid_range != self._range:         # the policy's range changed: old leases go back
            self._returned.extend(self._ready)
            self._ready.clear()
            self._range, self._retry_at = uid_range, 0.0

    def _want(self) -> int:
        if self._range is None or time.monotonic() < self._retry_at:
            return 0
        return self.target - len(self._ready)

    def _has_work(self) -> bool:
        return self._closing or bool(self._returned) or self._want() > 0

    # ---- the top-up thread -----------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._has_work, timeout=RETRY_S)
                if self._closing:
                    return
                want, uid_range = self._want(), self._range
            self._release_returned()
            if want > 0 and uid_range is not None:
                self._top_up(uid_range, want)

    def _top_up(self, uid_range: UidRange, want: int) -> None:
        try:
            fresh = self._allocate(uid_range, want)
        except PycontainError as e:
            log.warning("leasing %d uids ahead: %s", want, e)
            with self._cond:
                self._retry_at = time.monotonic() + RETRY_S
            return
        with self._cond:
            if uid_range == self._range and not self._closing:
                self._ready.extend(fresh)
                if len(self._ready) >= self.target:
                    self._taken_since_full = 0
            else:
                self._returned.extend(fresh)

    def _release_returned(self) -> None:
        with self._cond:
            back, self._returned = self._returned, []
        for du in back:
            try:
                du.release()
            except OSError as e:       # release() ignores what is already gone
                log.warning("giving uid %d back: %s", du.identity.uid, e)
