"""The daemon's pool of leased uids (actuate/identity_pool.py), with a fake
allocator: starts take leased uids without allocating, a short pool falls
back to allocating in the request and grows, a changed range or a closing
daemon gives every lease back, a full range does not spin."""

from __future__ import annotations

import time

import pytest

from pycontain.actuate import identity_pool
from pycontain.actuate.dynamic_user import Identity
from pycontain.actuate.identity_pool import IdentityPool
from pycontain.core.errors import EnvironmentProblem

R = (70000, 79999)


class User:
    def __init__(self, uid, released):
        self.identity = Identity(uid, uid, (), f"pycontain-{uid}", f"/h/{uid}")
        self._released = released

    def release(self):
        self._released.append(self.identity.uid)


class Leases:
    def __init__(self, fail=False):
        self.calls, self.released, self.next, self.fail = [], [], 70000, fail

    def __call__(self, uid_range, n):
        self.calls.append((uid_range, n))
        if self.fail:
            raise EnvironmentProblem("no free uid in the dynamic-user range")
        self.next += n
        return [User(uid, self.released) for uid in range(self.next - n, self.next)]


def until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def pool():
    leases = Leases()
    p = IdentityPool(leases, target=4, limit=8)
    p.leases = leases
    yield p
    p.close()


def test_starts_take_uids_leased_ahead_in_one_call(pool):
    pool.start(R)
    assert until(lambda: pool.ready() == 4)
    assert pool.leases.calls == [(R, 4)]
    got = pool.take(R, 3)
    assert [u.identity.uid for u in got] == [70000, 70001, 70002]     # the leased-ahead ones
    assert until(lambda: pool.ready() == 4)                           # topped up behind it
    assert pool.leases.calls == [(R, 4), (R, 3)]


def test_a_short_pool_allocates_in_the_request_then_grows_to_the_burst(pool):
    got = pool.take(R, 6)                     # not started: nothing leased ahead
    assert len({u.identity.uid for u in got}) == 6 and pool.leases.calls == [(R, 6)]
    assert pool.target == 6
    pool.start(None)
    assert until(lambda: pool.ready() == 6)
    pool.take(R, 8)
    pool.take(R, 8)
    assert pool.target == 8                   # at most the limit


def test_given_back_uids_are_released_off_the_request_path(pool):
    pool.start(R)
    assert until(lambda: pool.ready() == 4)
    got = pool.take(R, 2)
    pool.give_back(got)
    assert until(lambda: sorted(pool.leases.released) == [70000, 70001])


def test_a_changed_range_and_close_give_every_lease_back(pool):
    pool.start(R)
    assert until(lambda: pool.ready() == 4)
    other = (80000, 80999)
    pool.take(other, 1)
    assert until(lambda: sorted(pool.leases.released) == [70000, 70001, 70002, 70003])
    assert until(lambda: pool.ready() == 4)
    pool.close()
    assert pool.ready() == 0 and len(pool.leases.released) == 8   # 4 of R, 4 left of the new range


def test_a_full_range_waits_instead_of_spinning(monkeypatch):
    monkeypatch.setattr(identity_pool, "RETRY_S", 0.3)
    leases = Leases(fail=True)
    p = IdentityPool(leases, target=4)
    p.start(R)
    time.sleep(0.5)
    p.close()
    assert 1 <= len(leases.calls) <= 3
    with pytest.raises(EnvironmentProblem):
        IdentityPool(leases).take(R, 1)       # the request itself fails: never a uid it cannot lease
