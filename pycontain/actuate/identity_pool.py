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
so neither a start nor a stop waits for either; it does so when starts and
stops pause (QUIET_S, or MAX_DEFER_S at most), not in the middle of a burst,
where its work would take the interpreter from the requests, and gives
uids back in one pass over the scratch directories. The pool holds 128
(one /v1/starts request's most; a quarter of a narrower range). A start
that finds it empty waits for the thread, which leases for every such
start in one scan, and takes its own uid only if the thread cannot serve it
in WAIT_S; never does it run the agent as the caller. When it starts, the
thread gives back the leases whose holder died without releasing them (a
daemon killed with its 128), unless a running process still holds the uid.

Hand-written: systemd's allocator lives in PID 1 and nss-systemd.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

from ..core.errors import PycontainError
from .dynamic_user import DynamicUser

log = logging.getLogger("pycontain.daemon")

UidRange = tuple[int, int]


class LeaseStore(Protocol):
    """Where uids are leased (DynamicUser's node-wide lease directory)."""

    def allocate_many(self, uid_range: UidRange, n: int) -> list[DynamicUser]: ...
    def release_many(self, users: list[DynamicUser]) -> None: ...
    def collect_stale(self) -> int: ...


TARGET = 128             # leased ahead: one /v1/starts request's most (homes are empty dirs in /run)
RETRY_S = 5.0            # after a failed top-up (range full): try again this much later
QUIET_S = 0.2            # lease work waits until starts and stops have paused this long...
MAX_DEFER_S = 1.0        # ...or this long at most (a node that never pauses still gets its pool)
WAIT_S = 2.0             # a start the pool cannot serve waits this long for the thread's batch


class IdentityPool:
    """take() hands out leased uids; give_back() returns them once their agent is gone."""

    def __init__(self, store: LeaseStore = DynamicUser, target: int = TARGET):
        self._store, self.target = store, target
        self._cond = threading.Condition()
        self._ready: deque[DynamicUser] = deque()
        self._returned: list[DynamicUser] = []
        self._range: UidRange | None = None      # what the pool holds; None: nothing asked yet
        self._waiting = 0                        # uids that blocked starts still wait for
        self._retry_at = 0.0                     # after a failed top-up (range full): wait
        self._last_activity = 0.0                # the last take or give_back
        self._work_since: float | None = None    # when the pending lease work first waited
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
        """n uids of uid_range: from the pool, or from the thread's next
        batch, or (the thread failing or too slow) taken here."""
        with self._cond:
            self._retarget(uid_range)
            if len(self._ready) >= self._ahead():
                self._cond.notify()       # later takes find the thread already waiting out the burst
            got = self._pop(n)
            self._last_activity = time.monotonic()
            if len(got) < n and self._thread is not None:
                got += self._wait_for_batch(uid_range, n - len(got))
        if len(got) < n:
            try:
                got += self._store.allocate_many(uid_range, n - len(got))
            except BaseException:
                self.give_back(got)
                raise
        return got

    def give_back(self, users: list[DynamicUser]) -> None:
        """After every process of these uids is gone (their cgroups removed)."""
        if not users:
            return
        with self._cond:
            if not self._returned:
                self._cond.notify()
            self._returned.extend(users)
            self._last_activity = time.monotonic()
        if self._thread is None:
            self._release_returned()

    def close(self) -> None:
        """Stop the thread; give back every uid the pool holds."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
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

    def _pop(self, n: int) -> list[DynamicUser]:
        return [self._ready.popleft() for _ in range(min(n, len(self._ready)))]

    def _wait_for_batch(self, uid_range: UidRange, n: int) -> list[DynamicUser]:
        """Up to n uids from the thread's batches, within WAIT_S."""
        got: list[DynamicUser] = []
        self._waiting += n
        self._cond.notify_all()
        end = time.monotonic() + WAIT_S
        try:
            while len(got) < n and self._serving(uid_range):
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                more = self._pop(n - len(got))
                got += more
                self._waiting -= len(more)
        finally:
            self._waiting -= n - len(got)
        return got

    def _serving(self, uid_range: UidRange) -> bool:
        """The thread can still serve a start waiting for uid_range."""
        return not self._closing and uid_range == self._range and time.monotonic() >= self._retry_at

    def _retarget(self, uid_range: UidRange) -> None:
        if uid_range != self._range:         # the policy's range changed: old leases go back
            self._returned.extend(self._ready)
            self._ready.clear()
            self._range, self._retry_at = uid_range, 0.0
            self._cond.notify_all()

    def _ahead(self) -> int:
        """How many to hold: a narrow range is not hoarded from standalone runs."""
        if self._range is None:
            return 0
        return min(self.target, (self._range[1] - self._range[0] + 1) // 4)

    def _want(self) -> int:
        if self._range is None or time.monotonic() < self._retry_at:
            return 0
        return self._ahead() + self._waiting - len(self._ready)

    def _has_work(self) -> bool:
        return self._closing or bool(self._returned) or self._want() > 0

    def _defer(self, now: float) -> float:
        """How long lease work still waits: a /proc scan or a home removal in
        the middle of a burst of starts would take the interpreter from the
        requests (measured: p99 start 45 -> 80 ms for 32 at once). Not at
        all while starts wait for it."""
        if self._waiting:
            return 0.0
        if self._work_since is None:
            self._work_since = now
        if now - self._work_since >= MAX_DEFER_S:
            return 0.0
        return max(0.0, self._last_activity + QUIET_S - now)

    # ---- the top-up thread -----------------------------------------------------

    def _work(self) -> None:
        self._collect_stale()
        while True:
            with self._cond:
                if not self._cond.wait_for(self._has_work, timeout=RETRY_S):
                    continue
                if self._closing:
                    return
                defer = self._defer(time.monotonic())
                if defer > 0:
                    self._cond.wait(defer)
                    continue
                self._work_since = None
                want, uid_range = self._want(), self._range
            if want > 0 and uid_range is not None:
                self._top_up(uid_range, want)     # first: starts may be waiting for it
            self._release_returned()

    def _top_up(self, uid_range: UidRange, want: int) -> None:
        try:
            fresh = self._store.allocate_many(uid_range, want)
        except PycontainError as e:
            log.warning("leasing %d uids ahead: %s", want, e)
            with self._cond:
                self._retry_at = time.monotonic() + RETRY_S
                self._cond.notify_all()           # waiting starts try for themselves
            return
        with self._cond:
            if uid_range == self._range and not self._closing:
                self._ready.extend(fresh)
                self._cond.notify_all()
            else:
                self._returned.extend(fresh)

    def _collect_stale(self) -> None:
        """Once, at start: what daemons and runs killed outright left leased."""
        try:
            n = self._store.collect_stale()
        except (OSError, PycontainError) as e:
            log.warning("giving back stale uid leases: %s", e)
            return
        if n:
            log.info("gave back %d uids whose lease holder had died", n)

    def _release_returned(self) -> None:
        with self._cond:
            back, self._returned = self._returned, []
        if not back:
            return
        try:
            self._store.release_many(back)
        except OSError as e:       # release ignores what is already gone
            log.warning("giving %d uids back: %s", len(back), e)
