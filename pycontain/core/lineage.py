"""kill-process takes the violator's descendants with it (issue 11).

A program killed for a violation may have forked already: a tunnel that
double-forks (setsid, fork, parent exits) leaves a grandchild that /proc no
longer links to it (it was reparented to init or a subreaper). The process
table keeps each process's lineage of (pid, start) keys, so every known
descendant gets a kill-process of its own. A descendant whose fork record
arrives after the verdict (the records of forks travel on the unhurried
ring) is killed when that record arrives: the violator stays condemned for
CONDEMNED_S.
"""

from __future__ import annotations

from dataclasses import replace

from .decisions import Action, Decision
from .processes import ProcessInfo, ProcessTable

CONDEMNED_S = 10.0     # far longer than a fork record takes to arrive
MAX_CONDEMNED = 1024   # bounded: the oldest go first


class Condemned:
    def __init__(self) -> None:
        # (agent, pid, start_ns) -> (until, the decision that killed it)
        self._roots: dict[tuple[str, int, int], tuple[float, Decision]] = {}

    def family(self, decisions: list[Decision], table: ProcessTable, now: float) -> list[Decision]:
        """`decisions` plus a kill-process for each known descendant of each
        process they kill; those processes are remembered as condemned."""
        out = list(decisions)
        for d in decisions:
            if d.action != Action.KILL_PROCESS or d.monitor or d.pid is None:
                continue
            root = (d.pid, d.start_ns or 0)
            self._add(d, now)
            out += [_kill(d, info) for info in table.descendants(d.agent, root)]
        return out

    def late(self, info: ProcessInfo | None, now: float) -> list[Decision]:
        """A kill-process for `info` (a process just forked or exec'd) if it
        descends from a condemned process."""
        if info is None or not self._roots:
            return []
        self._expire(now)
        for (agent, pid, start), (_until, d) in self._roots.items():
            if agent == info.agent and info.descends_from([(pid, start)]):
                return [_kill(d, info)]
        return []

    def _add(self, d: Decision, now: float) -> None:
        assert d.pid is not None
        self._roots[(d.agent, d.pid, d.start_ns or 0)] = (now + CONDEMNED_S, d)
        while len(self._roots) > MAX_CONDEMNED:
            del self._roots[next(iter(self._roots))]

    def _expire(self, now: float) -> None:
        for k in [k for k, (until, _d) in self._roots.items() if until < now]:
            del self._roots[k]


def _kill(root: Decision, info: ProcessInfo) -> Decision:
    return replace(root, pid=info.pid, start_ns=info.start_ns,
                   reason=f"descendant of pid {root.pid}, killed with it: {root.reason}")
