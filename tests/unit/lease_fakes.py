"""A fake lease store for the daemon's identity pool (actuate/identity_pool.py):
records its calls, and the threads they came from, and hands out uids
70000, 70001, ... (no /run, no /proc, no root)."""

from __future__ import annotations

import threading
import time

from pycontain.actuate.dynamic_user import Identity
from pycontain.core.errors import EnvironmentProblem


class User:
    """A leased uid (actuate/dynamic_user.DynamicUser) that records its release."""

    def __init__(self, uid, released):
        self.identity = Identity(uid, uid, (), f"pycontain-{uid}", f"/run/pycontain-agents/{uid}")
        self._released = released

    def release(self):
        self._released.append(self.identity.uid)


class Leases:
    """allocate_many, release_many and collect_stale of DynamicUser."""

    def __init__(self, fail=False, slow=0.0):
        self.calls, self.threads, self.released, self.next = [], [], [], 70000
        self.fail, self.slow, self.collected = fail, slow, False

    def allocate_many(self, uid_range, n):
        self.calls.append((uid_range, n))
        self.threads.append(threading.current_thread().name)
        time.sleep(self.slow)
        if self.fail:
            raise EnvironmentProblem("no free uid in the dynamic-user range")
        self.next += n
        return [User(uid, self.released) for uid in range(self.next - n, self.next)]

    def release_many(self, users):
        for u in users:
            u.release()

    def collect_stale(self):
        self.collected = True
        return 0
