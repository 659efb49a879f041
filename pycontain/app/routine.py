"""Routine network destinations counted in the kernel (issue 14 part 3).

An allowed connect/send by an agent to a destination the engine judges
routine (Engine.routine_net: allowed in the kernel, approved by the policy,
no user-space rule) is entered in the kernel's ``pc_net_quiet`` map after
its first record has gone through the engine and the audit log. The kernel
then counts repeat connects/sends to it (and drops their TCP state records)
instead of sending records (ebpf/aggregate.bpf.h).

Every ``REPORT_S`` the counters are read: what grew since the last read is
added to ``events_total{kind="net-repeat"}`` and written to the audit log as
one ``net-summary`` line per (agent, destination) with the count. A
destination whose count has not grown for ``IDLE_S`` (seen at these reads:
the kernel keeps no clock per entry, a clock read cost each counted connect
~100 ns) is removed, so the next connect to it is reported in full again.
A policy reload or new DNS answers empty the map (``forget``): approval may
have changed, so every destination is seen once more. Nothing that carries a
verdict is ever counted instead of sent: the kernel checks the map only for
connects its own judgement allowed.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any

from ..core.events import NetEvent, Verdict
from ..kernel.quiet_maps import QuietKey

REPORT_S = 10.0      # counters read and summarised this often
IDLE_S = 60.0        # a destination unused this long is reported in full again
MAX_KNOWN = 16384    # the kernel map's size (PC_QUIET_ENTRIES): beyond it the LRU evicts


def raw_addr(family: int, text: str) -> bytes | None:
    """The 16 bytes the kernel keyed the record on (IPv4 first 4; an
    IPv4-mapped destination of an IPv6 socket as ::ffff:a.b.c.d)."""
    try:
        if family == socket.AF_INET:
            return socket.inet_pton(socket.AF_INET, text) + bytes(12)
        if family == socket.AF_INET6:
            a = ipaddress.ip_address(text)
            if a.version == 4:
                return bytes(10) + b"\xff\xff" + a.packed
            return a.packed
    except (OSError, ValueError):
        return None
    return None


def boot_ns() -> int:
    """CLOCK_BOOTTIME in ns (the clock of bpf_ktime_get_boot_ns)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class RoutineNet:
    """The user-space half of the routine-destination counters."""

    def __init__(self, probes: Any, names: dict[int, str], write: Callable[[dict], None],
                 count: Callable[[str, int], None], wall: Callable[[], float],
                 boot_clock: Callable[[], int] = boot_ns):
        self.probes = probes
        self.names = names          # agent id -> name (the controller's map)
        self.write = write          # an audit record
        self.count = count          # (agent name, repeats) into events_total
        self.wall = wall
        self.boot_clock = boot_clock
        # key -> (count at the last read, boot ns of the read that saw it grow, or of its entry)
        self._known: dict[QuietKey, tuple[int, int]] = {}
        self._last_report = 0.0

    def note(self, ev: NetEvent) -> None:
        """ev went through the engine and was judged routine: count its repeats in the kernel."""
        if ev.h.verdict != Verdict.ALLOW or len(self._known) >= MAX_KNOWN:
            return
        raw = raw_addr(ev.family, ev.daddr)
        if raw is None:
            return
        key = QuietKey(ev.h.agent_id, ev.family, ev.protocol, ev.dport, raw)
        if key not in self._known and self.probes.quiet_add(key):
            self._known[key] = (0, self.boot_clock())     # idle from now

    def forget(self, agent_id: int | None = None) -> None:
        """Report what was counted, then drop every destination (or one agent's)."""
        self.report(None)
        if agent_id is None:
            self.probes.quiet_clear()
            self._known.clear()
            return
        self._drop([k for k in self._known if k.agent == agent_id])

    def _drop(self, keys: list[QuietKey]) -> None:
        self.probes.quiet_delete(keys)
        for k in keys:
            del self._known[k]

    def due(self, now_mono: float) -> bool:
        return bool(self._known) and now_mono - self._last_report >= REPORT_S

    def report(self, now_mono: float | None) -> None:
        """Counters read: growth into events_total and net-summary lines;
        destinations idle for IDLE_S removed. Increments between the read
        and the removal of an idle entry are lost (count only: the next
        connect to it is reported in full)."""
        if now_mono is not None:
            self._last_report = now_mono
        if not self._known:
            return
        now_boot, wall, idle = self.boot_clock(), self.wall(), []
        for c in self.probes.quiet_read():
            known = self._known.get(c.key)
            if known is None:
                continue
            before, grew_ns = known
            if c.total > before:
                self._known[c.key] = (c.total, now_boot)
                name = self.names.get(c.key.agent, "host")
                self.count(name, c.total - before)
                self.write(_summary(name, c.key, c.total - before, wall))
            elif now_boot - grew_ns > IDLE_S * 1e9:
                idle.append(c.key)
        if idle:
            self._drop(idle)


def _summary(name: str, key: QuietKey, grew: int, wall: float) -> dict:
    v4 = key.family == socket.AF_INET
    addr = socket.inet_ntop(socket.AF_INET, key.daddr[:4]) if v4 else str(ipaddress.IPv6Address(key.daddr))
    return {"ts": wall, "agent": name, "kind": "net-summary", "pid": None,
            "protocol": {6: "tcp", 17: "udp"}.get(key.proto, str(key.proto)),
            "daddr": addr, "dport": key.dport, "count": grew}
