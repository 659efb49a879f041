"""The user-space half of the routine-destination counters (app/routine.py):
growth is summarised, and a destination whose kernel count stopped growing
for IDLE_S is removed from the map (the kernel keeps no clock per entry).
A fake map stands in for the kernel's pc_net_quiet."""

from __future__ import annotations

import socket

from pycontain.app.routine import IDLE_S, RoutineNet
from pycontain.core.events import Header, NetEvent, Verdict
from pycontain.kernel.quiet_maps import QuietCount, QuietKey

S = 1_000_000_000


class FakeQuiet:
    """pc_net_quiet as the Probes methods RoutineNet calls see it."""

    def __init__(self):
        self.counts: dict[QuietKey, int] = {}

    def quiet_add(self, key):
        self.counts[key] = 0
        return True

    def quiet_read(self):
        return [QuietCount(k, n) for k, n in self.counts.items()]

    def quiet_delete(self, keys):
        for k in keys:
            self.counts.pop(k, None)

    def quiet_clear(self):
        self.counts.clear()


def _event(dport: int) -> NetEvent:
    h = Header(type=3, verdict=Verdict.ALLOW, flags=0, rule_id=0, pid=10, tid=10, ppid=1, uid=0,
               agent_id=7, ts_ns=0, start_ns=0, cgroup_id=0, comm=b"python")
    return NetEvent(h=h, family=socket.AF_INET, protocol=socket.IPPROTO_TCP, dport=dport, sport=40000,
                    daddr="198.51.100.5", saddr="198.51.100.1")


def _routine(clock):
    lines: list[dict] = []
    kmap = FakeQuiet()
    r = RoutineNet(kmap, {7: "a"}, lines.append, lambda _n, _k: None, lambda: 0.0, boot_clock=lambda: clock[0])
    return r, kmap, lines


def test_a_destination_that_stops_growing_is_removed_after_the_idle_window():
    clock = [100 * S]
    r, kmap, lines = _routine(clock)
    busy, quiet = _event(443), _event(8443)
    r.note(busy)
    r.note(quiet)
    assert len(kmap.counts) == 2
    for step in range(1, 8):                       # every 10 s: the busy one grows, the other never
        clock[0] += 10 * S
        key_busy = next(k for k in kmap.counts if k.dport == 443)
        kmap.counts[key_busy] += 5
        r.report(float(step * 10))
    assert [k.dport for k in kmap.counts] == [443]  # idle > IDLE_S: gone, reported in full again
    assert sum(line["count"] for line in lines) == 35 and {line["dport"] for line in lines} == {443}


def test_growth_restarts_the_idle_window():
    clock = [0]
    r, kmap, _ = _routine(clock)
    r.note(_event(443))
    key = next(iter(kmap.counts))
    clock[0] += int((IDLE_S - 1) * S)
    kmap.counts[key] += 1
    r.report(1.0)                                  # grew just before the window ended
    clock[0] += int((IDLE_S - 1) * S)
    r.report(2.0)
    assert key in kmap.counts                      # idle for less than IDLE_S since it grew
    clock[0] += 2 * S
    r.report(3.0)
    assert key not in kmap.counts
