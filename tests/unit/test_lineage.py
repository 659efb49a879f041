"""kill-process takes every descendant of the violator (issue 11), found by
the lineage kept in the process table, also after a double fork."""

from __future__ import annotations

from pycontain.core.decisions import Action
from pycontain.core.events import EventType, ExitEvent
from tests.unit.test_engine import engine, exec_event, fork_event, header

WALLET = b"48" + b"A" * 93          # the Monero wallet glob of default: judged in user space, after the exec
MS = 1_000_000


def start(e, pid=100, start_ns=1000):
    """A benign program `pid` runs; returns its exec's decisions."""
    return e.on_event(exec_event(b"/tmp/h", [b"h"], pid=pid, start_ns=start_ns, ts_ns=start_ns), 1.0)


def exit_(e, pid, start_ns):
    e.on_event(ExitEvent(h=header(EventType.EXIT, pid=pid, start_ns=start_ns), exit_code=0), 1.0)


def kills(ds):
    return sorted(d.pid for d in ds if d.action == Action.KILL_PROCESS)


def test_double_forked_grandchild_known_at_the_verdict_is_killed():
    e = engine()
    assert start(e) == []
    e.on_event(fork_event(100, 101, 2 * MS), 1.0)          # child
    e.on_event(fork_event(101, 102, 3 * MS), 1.0)          # grandchild (setsid + fork)
    exit_(e, 101, 2 * MS)                                  # the child exits: the grandchild goes to init
    e.on_event(fork_event(102, 103, 4 * MS), 1.0)          # and forks again
    ds = e.on_event(exec_event(b"/tmp/h", [b"h", WALLET], pid=100, start_ns=1000, ts_ns=5 * MS), 1.0)
    assert kills(ds) == [100, 102, 103]
    grandchild = next(d for d in ds if d.pid == 102)
    assert grandchild.start_ns == 3 * MS and "descendant of pid 100" in grandchild.reason


def test_a_fork_record_arriving_after_the_verdict_is_killed_then():
    e = engine()
    start(e)
    ds = e.on_event(exec_event(b"/tmp/h", [b"h", WALLET], pid=100, start_ns=1000, ts_ns=5 * MS), 1.0)
    assert kills(ds) == [100]
    assert kills(e.on_event(fork_event(100, 101, 6 * MS), 1.5)) == [101]
    assert kills(e.on_event(fork_event(101, 102, 7 * MS), 1.5)) == [102]


def test_unrelated_processes_and_a_reused_pid_are_spared():
    e = engine()
    start(e)
    start(e, pid=200, start_ns=1500)                       # a sibling program of the same agent
    e.on_event(fork_event(200, 201, 2 * MS), 1.0)
    ds = e.on_event(exec_event(b"/tmp/h", [b"h", WALLET], pid=100, start_ns=1000, ts_ns=5 * MS), 1.0)
    assert kills(ds) == [100]
    # pid 100 reused by another process a minute later: its children are not the violator's
    start(e, pid=100, start_ns=60_000 * MS)
    assert kills(e.on_event(fork_event(100, 104, 60_001 * MS), 61.0)) == []


def test_condemnation_expires_and_monitor_mode_kills_nothing():
    e = engine()
    start(e)
    e.on_event(exec_event(b"/tmp/h", [b"h", WALLET], pid=100, start_ns=1000, ts_ns=5 * MS), 1.0)
    assert kills(e.on_event(fork_event(100, 101, 6 * MS), 100.0)) == []
    m = engine()
    m.monitor = True
    start(m)
    m.on_event(fork_event(100, 101, 2 * MS), 1.0)
    ds = m.on_event(exec_event(b"/tmp/h", [b"h", WALLET], pid=100, start_ns=1000, ts_ns=5 * MS), 1.0)
    assert all(d.monitor for d in ds) and [d.pid for d in ds] == [100]
