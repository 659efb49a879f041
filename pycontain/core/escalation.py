"""One escalation mechanism for every rule.

A breach (or a repeated violation) of a rule starts at the first step of the
rule's ladder; while it persists past the grace window it steps up, one step
at a time, never skipping and never going back. When it has not been seen for
`clear_after_s` it resets, and a THROTTLE or FREEZE it left behind is undone
with a THAW decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .decisions import Action, Decision

UNDOABLE = (Action.THROTTLE, Action.FREEZE)


@dataclass
class _State:
    step: int
    stepped_at: float
    seen_at: float
    last_action: Action
    detail: dict = field(default_factory=dict)


class Escalator:
    def __init__(self, clear_after_s: float = 3.0):
        self.clear_after_s = clear_after_s
        self._s: dict[tuple, _State] = {}

    def active(self) -> dict[tuple, _State]:
        return dict(self._s)

    def breach(self, key: tuple, agent: str, rule: str, ladder, grace_s: float, now: float, reason: str,
               *, pid: int | None = None, start_ns: int | None = None, monitor: bool = False,
               detail: dict | None = None) -> list[Decision]:
        st = self._s.get(key)
        if st is None:
            st = _State(step=0, stepped_at=now, seen_at=now, last_action=ladder[0], detail=dict(detail or {}))
            self._s[key] = st
        else:
            st.seen_at = now
            if st.step + 1 < len(ladder) and now - st.stepped_at >= grace_s:
                st.step += 1
                st.stepped_at = now
                st.last_action = ladder[st.step]
            else:
                return []          # same step already taken; wait for grace
        return [Decision(agent=agent, rule=rule, action=ladder[st.step], reason=reason, pid=pid,
                         start_ns=start_ns, monitor=monitor, detail=dict(detail or {}))]

    def tick(self, now: float, monitor: bool = False) -> list[Decision]:
        out = []
        for key, st in list(self._s.items()):
            if now - st.seen_at >= self.clear_after_s:
                out += self.clear(key, monitor=monitor)
        return out

    def clear(self, key: tuple, monitor: bool = False) -> list[Decision]:
        """The breach is over: reset its ladder; undo a throttle or freeze."""
        st = self._s.pop(key, None)
        if st is None or st.last_action not in UNDOABLE:
            return []
        agent, rule = key[0], key[1]
        return [Decision(agent=agent, rule=rule, action=Action.THAW,
                         reason=f"{rule}: breach cleared, lifting {st.last_action.value}",
                         monitor=monitor, detail=st.detail)]

    def forget_agent(self, agent: str) -> None:
        for key in [k for k in self._s if k[0] == agent]:
            del self._s[key]
