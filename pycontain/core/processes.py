"""Process records built from the kernel stream, keyed by (pid, start_ns).

pids are reused; a record is only ever looked up by pid together with its
start time, except for "the live process with this pid now" (lookup), which
is what NVML gives us.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_PROCESSES = 65536
MAX_ANCESTORS = 8
MAX_LINEAGE = 32          # (pid, start) keys kept per process: a violator's descendants are found by them
SAME_START_NS = 10_000_000  # a fork record's timestamp vs the kernel's start time of that process
# Exited processes kept for the GPU step (by count and by age): NVML reports a
# process's utilisation after it exited, and /proc can no longer say whose it was
MAX_EXITED = 4096
EXITED_KEEP_S = 60.0


@dataclass
class ProcessInfo:
    pid: int
    start_ns: int
    agent: str
    filename: bytes = b""                 # from the last exec record (untrusted)
    argv: tuple[bytes, ...] = ()          # untrusted
    ppid: int = 0
    ancestors: tuple[tuple[int, bytes], ...] = ()  # (pid, filename) parent first
    exec_ts_ns: int = 0                   # boot ns of the last exec, 0 = unknown
    # boot ns of the first outbound connect/send by this process or an ancestor
    # to a destination the policy does not approve (not in allow lists), or None
    unapproved_connect_ns: int | None = None
    # (pid, start_ns) of the ancestors, parent first (start 0: unknown). Kept
    # when an ancestor exits, so a double-forked child reparented to init is
    # still found as a descendant of the process that made it (issue 11)
    lineage: tuple[tuple[int, int], ...] = ()

    def descends_from(self, roots: Sequence[tuple[int, int]]) -> bool:
        return any(same_process(a, r) for a in self.lineage for r in roots)


def same_process(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Two (pid, start) keys of one process: a start taken from a fork
    record's timestamp differs from the kernel's start time by microseconds;
    0 is an unknown start."""
    return a[0] == b[0] and (not a[1] or not b[1] or abs(a[1] - b[1]) <= SAME_START_NS)


def forked_child(parent: ProcessInfo, child_pid: int, ts_ns: int) -> ProcessInfo:
    """The parent's record for its new child: everything inherited, the
    parent one step up its ancestry. Built field by field rather than with
    dataclasses.replace (~3x the cost, once per fork record); a unit test
    holds the two equal, so a new field cannot be forgotten here."""
    return ProcessInfo(pid=child_pid, start_ns=ts_ns, agent=parent.agent, filename=parent.filename,
                       argv=parent.argv, ppid=parent.pid,
                       ancestors=((parent.pid, parent.filename),) + parent.ancestors[:MAX_ANCESTORS - 1],
                       exec_ts_ns=parent.exec_ts_ns, unapproved_connect_ns=parent.unapproved_connect_ns,
                       lineage=_child_lineage(parent))


def _child_lineage(parent: ProcessInfo) -> tuple[tuple[int, int], ...]:
    return ((parent.pid, parent.start_ns),) + parent.lineage[:MAX_LINEAGE - 1]


class ProcessTable:
    def __init__(self) -> None:
        self._by_key: dict[tuple[int, int], ProcessInfo] = {}
        self._live: dict[int, tuple[int, int]] = {}   # pid -> key of the live process
        # records made from a fork (keyed by the fork's timestamp, not yet by
        # the kernel's start time): the child's exec re-keys them
        self._provisional: set[tuple[int, int]] = set()
        # pid -> (the `now` of its exit, its record), oldest first; and the
        # pids of each agent's, so forgetting an agent costs its own records
        # only (an agent's stop must not scan 4096 others)
        self._exited: dict[int, tuple[float, ProcessInfo]] = {}
        self._exited_of: dict[str, set[int]] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, pid: int, start_ns: int) -> ProcessInfo | None:
        return self._by_key.get((pid, start_ns))

    def lookup(self, pid: int) -> ProcessInfo | None:
        key = self._live.get(pid)
        return self._by_key.get(key) if key else None

    def _put(self, info: ProcessInfo) -> ProcessInfo:
        key = (info.pid, info.start_ns)
        old = self._live.get(info.pid)
        if old is not None and old != key:
            self._by_key.pop(old, None)           # that pid was reused: the old process is gone
        self._by_key[key] = info
        self._live[info.pid] = key
        if len(self._by_key) > MAX_PROCESSES:     # bounded: drop the oldest
            k = next(iter(self._by_key))
            self._by_key.pop(k)
            if self._live.get(k[0]) == k:
                del self._live[k[0]]
        return info

    def ensure(self, pid: int, start_ns: int, agent: str, ppid: int = 0) -> ProcessInfo:
        info = self.get(pid, start_ns)
        if info is None:
            parent = self.lookup(ppid) if ppid else None
            info = ProcessInfo(pid=pid, start_ns=start_ns, agent=agent, ppid=ppid)
            if parent is not None:
                info.ancestors = ((parent.pid, parent.filename),) + parent.ancestors[:MAX_ANCESTORS - 1]
                info.unapproved_connect_ns = parent.unapproved_connect_ns
                info.lineage = _child_lineage(parent)
            elif ppid:
                info.lineage = ((ppid, 0),)
            self._put(info)
        return info

    def on_fork(self, parent_pid: int, child_pid: int, ts_ns: int, agent: str) -> None:
        parent = self.lookup(parent_pid)
        if parent is None:
            child = ProcessInfo(pid=child_pid, start_ns=ts_ns, agent=agent, ppid=parent_pid,
                                lineage=((parent_pid, 0),))
        else:
            child = forked_child(parent, child_pid, ts_ns)
        # the child's start time from the kernel (exec record) may differ by a
        # few microseconds from the fork timestamp; exec re-keys it
        self._put(child)
        self._provisional.add((child_pid, ts_ns))
        if len(self._provisional) > MAX_PROCESSES:
            self._provisional = {k for k in self._provisional if k in self._by_key}

    def on_exec(self, pid: int, start_ns: int, agent: str, ppid: int, filename: bytes, argv: Sequence[bytes],
                ts_ns: int) -> ProcessInfo:
        prev = self.lookup(pid)
        if prev is not None and (prev.pid, prev.start_ns) != (pid, start_ns) \
                and (prev.pid, prev.start_ns) not in self._provisional:
            # a different process that had this pid earlier (its exit was not
            # seen): it must not lend this one its history
            self._by_key.pop((prev.pid, prev.start_ns), None)
            self._live.pop(pid, None)
            prev = None
        info = self.ensure(pid, start_ns, agent, ppid)
        if prev is not None and prev is not info:
            self._provisional.discard((prev.pid, prev.start_ns))
            info.ancestors = prev.ancestors or info.ancestors
            info.lineage = prev.lineage or info.lineage
            if info.unapproved_connect_ns is None:
                info.unapproved_connect_ns = prev.unapproved_connect_ns
            self._by_key.pop((prev.pid, prev.start_ns), None)
        info.filename, info.argv, info.exec_ts_ns = filename, tuple(argv), ts_ns
        return info

    def on_exit(self, pid: int, start_ns: int, now: float = 0.0) -> None:
        key = self._live.get(pid)
        if key is not None and (not start_ns or key[1] == start_ns or key[0] == pid):
            info = self._by_key.pop(key, None)
            del self._live[pid]
            if info is not None:
                self._keep_exited(info, now)

    def _keep_exited(self, info: ProcessInfo, now: float) -> None:
        self._drop_exited(info.pid)               # re-inserted last: the dict stays oldest first
        self._exited[info.pid] = (now, info)
        self._exited_of.setdefault(info.agent, set()).add(info.pid)
        while self._exited:
            pid, (t, _) = next(iter(self._exited.items()))
            if len(self._exited) <= MAX_EXITED and t >= now - EXITED_KEEP_S:
                break
            self._drop_exited(pid)

    def _drop_exited(self, pid: int) -> None:
        got = self._exited.pop(pid, None)
        if got is not None:
            pids = self._exited_of.get(got[1].agent)
            if pids is not None:
                pids.discard(pid)
                if not pids:
                    del self._exited_of[got[1].agent]

    def exited(self, pid: int, since: float) -> ProcessInfo | None:
        """The record of the process with this pid that exited at or after
        `since` (same clock as on_exit's `now`), if it is still kept. For
        readings about the past (NVML's samples of a process that has gone):
        who it belonged to is no longer in /proc."""
        got = self._exited.get(pid)
        return got[1] if got is not None and got[0] >= since else None

    def descendants(self, agent: str, root: tuple[int, int]) -> list[ProcessInfo]:
        """The known live processes of `agent` descending from `root` (pid,
        start_ns), by recorded lineage, not by /proc parent links (which a
        double fork cuts). Deeper than MAX_LINEAGE: found through the
        intermediate processes still alive."""
        roots: list[tuple[int, int]] = [root]
        out: list[ProcessInfo] = []
        found: set[tuple[int, int]] = set()
        while True:
            new = [i for k, i in self._by_key.items()
                   if i.agent == agent and k not in found and not same_process(k, root) and i.descends_from(roots)]
            if not new:
                return out
            out += new
            found.update((i.pid, i.start_ns) for i in new)
            roots = [(i.pid, i.start_ns) for i in new]

    def forget_agent(self, agent: str) -> None:
        for pid in self._exited_of.pop(agent, set()):
            self._exited.pop(pid, None)
        for key, info in list(self._by_key.items()):
            if info.agent == agent:
                self._by_key.pop(key)
                if self._live.get(key[0]) == key:
                    del self._live[key[0]]
