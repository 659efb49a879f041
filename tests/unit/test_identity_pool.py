"""The daemon's pool of leased uids (actuate/identity_pool.py), with a fake
allocator: starts take leased uids without allocating, starts that find it
empty wait for one batch of its thread, a changed range or a closing daemon
gives every lease back, a full range does not spin."""

from __future__ import annotations

import threading
import time

import pytest

from pycontain.actuate import identity_pool
from pycontain.actuate.identity_pool import IdentityPool
from pycontain.core.errors import EnvironmentProblem
from tests.unit.lease_fakes import Leases

R = (70000, 79999)


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
    p = IdentityPool(leases, target=4)
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


def test_a_pool_not_started_leases_in_the_request(pool):
    got = pool.take(R, 6)
    assert len({u.identity.uid for u in got}) == 6 and pool.leases.calls == [(R, 6)]


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
        IdentityPool(leases).take(R, 1)   # the request fails: never a uid it cannot lease


def test_starts_that_find_the_pool_empty_wait_for_one_batch_of_the_thread():
    leases = Leases(slow=0.2)        # a /proc scan on a busy node: the waiters pile up behind it
    p = IdentityPool(leases, target=1)
    p.start(R)
    assert until(lambda: p.ready() == 1)
    got: list = []
    takers = [threading.Thread(target=lambda: got.extend(p.take(R, 1))) for _ in range(6)]
    for t in takers:
        t.start()
    for t in takers:
        t.join()
    p.close()
    assert len({u.identity.uid for u in got}) == 6
    assert set(leases.threads) == {"pycontain-uids"}       # no start leased on its own
    assert len(leases.calls) <= 4                          # in batches, not one scan per start


def test_a_narrow_range_is_not_leased_ahead_beyond_a_quarter():
    leases = Leases()
    p = IdentityPool(leases, target=32)
    p.start((70000, 70019))
    assert until(lambda: p.ready() == 5)
    time.sleep(0.1)
    assert leases.calls == [((70000, 70019), 5)]
    p.take((70000, 70019), 2)
    assert until(lambda: p.ready() == 5, timeout=identity_pool.RETRY_S - 1)   # woken by the take
    p.close()
