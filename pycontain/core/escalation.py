"""One escalation mechanism for every rule (pure).

Each breach key (agent, rule[, pid]) climbs the rule's ladder, e.g.
``[alert, throttle, freeze, kill]``:

* The first report of a breach takes the first step at once.
* While the breach persists, the next step is taken once ``grace_s`` has
  passed since the last step — one step at a time, never skipping, never
  going back. Two kinds of breaches:

  - *sustained* (budgets, GPU rules): re-reported with every sample; the
    breach persists while reports keep coming, and :meth:`Escalator.tick`
    steps it up on time even between samples. It has cleared when it was
    not reported for ``clear_after_s`` (or the engine says so at once with
    :meth:`Escalator.clear`, e.g. a cgroup sample back under budget).
  - *instant* (violations such as a denied exec): a single event has no
    duration, so only a *repeated* violation steps up, and only when it comes
    ``grace_s`` or more after the last step. The state is kept for
    ``hold_s`` (at least twice the grace) after the last violation, then it
    resets. A repeated violation at a ``kill-process`` step is killed again:
    that action answers one event, it is not a state of the agent.

* Clearing resets the ladder; a THROTTLE or FREEZE taken on the way is
  undone with one THAW decision (the actuator lifts both, CPU and GPU duty cycle).
* A ladder kept per process (one starting with ``kill-process``) answers
  one process; :class:`Respawns` counts, per agent and rule, the processes
  that breach it, so an agent whose supervisor restarts a killed program
  under new pids is itself killed after a few (core.engine).
* Nothing here acts: decisions come out, actuators carry them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from .decisions import Action, Decision, GpuDetail

# a breach's identity; it starts with the agent's name: (agent, rule), or
# (agent, rule, pid, start_ns) for a ladder kept per process (core.engine)
BreachKey: TypeAlias = tuple[str, str] | tuple[str, str, int, int | None]

UNDOABLE = (Action.THROTTLE, Action.FREEZE)


@dataclass
class _State:
    agent: str
    rule: str
    ladder: tuple[Action, ...]
    grace_s: float
    step: int
    stepped_at: float
    seen_at: float
    reason: str
    sustained: bool = True
    hold_s: float = 3.0
    pid: int | None = None
    start_ns: int | None = None
    monitor: bool = False
    gpu: GpuDetail | None = None

    @property
    def last_action(self) -> Action:
        return self.ladder[self.step]

    def decision(self) -> Decision:
        return Decision(agent=self.agent, rule=self.rule, action=self.ladder[self.step], reason=self.reason,
                        pid=self.pid, start_ns=self.start_ns, monitor=self.monitor, gpu=self.gpu)


class Escalator:
    def __init__(self, clear_after_s: float = 3.0):
        # a sustained breach not reported again within this time has cleared
        self.clear_after_s = clear_after_s
        self._s: dict[BreachKey, _State] = {}

    def active(self) -> dict[BreachKey, _State]:
        return dict(self._s)

    def level(self, key: BreachKey) -> Action | None:
        """The step a breach is at now, or None when it is not active."""
        st = self._s.get(key)
        return st.last_action if st else None

    def breach(self, key: BreachKey, agent: str, rule: str, ladder: Iterable[Action], grace_s: float, now: float,
               reason: str, *, pid: int | None = None, start_ns: int | None = None, monitor: bool = False,
               gpu: GpuDetail | None = None, sustained: bool = True) -> list[Decision]:
        """Report that `key` is breached now; returns the step taken, if any."""
        ladder = tuple(ladder)
        if not ladder:
            return []
        st = self._s.get(key)
        if st is None:
            st = _State(agent=agent, rule=rule, ladder=ladder, grace_s=grace_s, step=0, stepped_at=now,
                        seen_at=now, reason=reason, sustained=sustained,
                        hold_s=self.clear_after_s if sustained else max(self.clear_after_s, 2 * grace_s),
                        pid=pid, start_ns=start_ns, monitor=monitor, gpu=gpu)
            self._s[key] = st
            return [st.decision()]
        # the latest report describes the breach best (a policy reload may
        # have changed the ladder: keep the step, bounded by the new ladder)
        st.seen_at, st.reason, st.monitor, st.grace_s = now, reason, monitor, grace_s
        st.pid, st.start_ns = pid, start_ns
        if gpu is not None:
            # e.g. the latest SM utilisation; what this report leaves out stays
            st.gpu = st.gpu.merged(gpu) if st.gpu is not None else gpu
        if ladder != st.ladder:
            st.ladder = ladder
            st.step = min(st.step, len(ladder) - 1)
        out = self._step_up(st, now)
        if not out and not sustained and st.last_action == Action.KILL_PROCESS:
            # a kill-process answers one event: a repeated violation (the
            # kill raced an exec, a thread survived) is killed again
            out = [st.decision()]
        return out

    def _step_up(self, st: _State, now: float) -> list[Decision]:
        if st.step + 1 >= len(st.ladder) or now - st.stepped_at < st.grace_s:
            return []               # top of the ladder, or still within grace
        st.step += 1
        st.stepped_at = now
        return [st.decision()]

    def tick(self, now: float, monitor: bool = False) -> list[Decision]:
        """Time passes: clear what has not been seen for its hold time; step
        up sustained breaches that persist past their grace."""
        out: list[Decision] = []
        for key, st in list(self._s.items()):
            if now - st.seen_at >= st.hold_s:
                out += self.clear(key, monitor=monitor)
            elif st.sustained:
                out += self._step_up(st, now)
        return out

    def clear(self, key: BreachKey, monitor: bool = False) -> list[Decision]:
        """The breach is over: reset its ladder; undo a throttle or freeze."""
        st = self._s.pop(key, None)
        if st is None:
            return []
        undo = [a for a in st.ladder[: st.step + 1] if a in UNDOABLE]
        if not undo:
            return []           # alerts / kills only: nothing to lift
        # lifted even after a KILL: a daemon-selected cgroup (a systemd unit,
        # a Slurm step) may be reused by the next run of the agent
        return [Decision(agent=st.agent, rule=st.rule, action=Action.THAW,
                         reason=f"{st.rule}: breach cleared, lifting {undo[-1].value}",
                         monitor=monitor or st.monitor, gpu=st.gpu)]

    def forget_agent(self, agent: str) -> None:
        # keys start with the agent name: (agent, rule[, pid])
        for key in [k for k in self._s if k[0] == agent]:
            del self._s[key]


# an agent that had this many processes breach one rule within the window
# is killed as a whole: killing each new pid answers none of them
RESPAWN_KILLS = 3
RESPAWN_WINDOW_S = 60.0


class Respawns:
    """Distinct processes (pid, start) breaching a rule, per agent, over
    the last ``window_s``: what per-process ladders cannot see."""

    def __init__(self, window_s: float = RESPAWN_WINDOW_S):
        self.window_s = window_s
        # (agent, rule) -> (pid, start_ns) -> when last reported
        self._seen: dict[tuple[str, str], dict[tuple[int, int | None], float]] = {}

    def count(self, agent: str, rule: str, pid: int, start_ns: int | None, now: float) -> tuple[int, bool]:
        """Record one report of the breach by this process: (how many
        distinct processes reported it within the window, whether this one
        is new to the count)."""
        seen = self._seen.setdefault((agent, rule), {})
        for proc in [p for p, t in seen.items() if now - t > self.window_s]:
            del seen[proc]
        new = (pid, start_ns) not in seen
        seen[(pid, start_ns)] = now
        return len(seen), new

    def forget_agent(self, agent: str) -> None:
        for key in [k for k in self._seen if k[0] == agent]:
            del self._seen[key]
