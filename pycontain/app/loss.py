"""Lost records never leave an agent freer (issue 10 part 5).

The kernel counts every record it could not queue, per agent (map
``pc_agent_lost``, ebpf/common.bpf.h), and stops (SIGSTOP) an agent task
whose exec record was lost, entering it in ``pc_exec_held`` (the same hold as
an exec waiting for a user-space verdict, ebpf/exe.bpf.h). After each poll the
controller asks :class:`LossGuard` to look: when an agent's count moved, the
agent is frozen (cgroup freezer) until the controller has caught up: the
rings are drained, every process of the agent is judged again from /proc
(its executable and argv, as if its exec record had arrived), the decisions
are carried out, held tasks that survived are continued, and only then is
the agent thawed. Loss, freeze and thaw are audit records and metrics.

In monitor mode nothing is enforced, so nothing is frozen: the loss is only
recorded. An agent already frozen for another reason stays frozen.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from ..actuate.actuators import proc_start_ns
from ..core.errors import PycontainError
from ..core.events import EventType, ExecEvent, Flag, Header, Verdict

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger("pycontain")

FREEZE_TIMEOUT_S = 2.0
MAX_DRAIN_ROUNDS = 256      # polls of the backlog before judging from /proc


class LossGuard:
    def __init__(self, ctl: Controller):
        self.ctl = ctl
        self._total = 0                   # pc_lost at the last look
        self._per: dict[int, int] = {}    # pc_agent_lost at the last look

    def check(self) -> None:
        """Called after every poll: one map read unless something was lost."""
        probes = self.ctl.probes
        if probes is None:
            return
        total = probes.lost_kernel()
        if total == self._total:
            return
        self._total = total
        per = probes.agent_losses()
        moved = {aid: n - self._per.get(aid, 0) for aid, n in per.items() if n > self._per.get(aid, 0)}
        self._per = per
        for name, lost in self._agents_hit(moved).items():
            self.catch_up(name, lost)

    def _agents_hit(self, moved: dict[int, int]) -> dict[str, int]:
        names = self.ctl.names
        if 0 in moved:      # the kernel could not say whose: every agent
            return {name: moved[0] for name in self.ctl.cgroups}
        return {names[aid]: n for aid, n in moved.items() if names.get(aid) in self.ctl.cgroups}

    def catch_up(self, name: str, lost: int) -> None:
        ctl = self.ctl
        cg = ctl.cgroups[name]
        enforce = ctl.engine is not None and not ctl.engine.monitor
        with ctl.state.lock:
            ctl.state.lost_by_agent[name] += lost
            agent = ctl.state.agents.get(name)
            was_frozen = bool(agent and agent.frozen)
        ctl._record({"ts": ctl.clock.wall(), "agent": name, "kind": "events-lost", "pid": None,
                     "lost": lost, "action": "freeze" if enforce else "none"})
        if not enforce:
            return
        froze = self._freeze(name, cg)
        self._drain()
        judged = self._judge(name, cg)
        held = self._continue_held(cg)
        if froze and not was_frozen:
            cg.thaw()
            self._set_frozen(name, False)
        ctl._record({"ts": ctl.clock.wall(), "agent": name, "kind": "agent-caught-up", "pid": None,
                     "processes": judged, "held": held, "thawed": froze and not was_frozen})

    def _freeze(self, name: str, cg) -> bool:
        ctl = self.ctl
        try:
            cg.freeze(timeout=FREEZE_TIMEOUT_S)
        except (OSError, TimeoutError, PycontainError) as e:
            ctl._record({"ts": ctl.clock.wall(), "agent": name, "kind": "action", "rule": "events-lost",
                         "action": "freeze", "result": f"failed: {e}", "pid": None})
            return False
        with ctl.state.lock:
            ctl.state.loss_freezes[name] += 1
        self._set_frozen(name, True)
        ctl._record({"ts": ctl.clock.wall(), "agent": name, "kind": "action", "rule": "events-lost",
                     "action": "freeze", "result": "done", "pid": None})
        return True

    def _set_frozen(self, name: str, frozen: bool) -> None:
        with self.ctl.state.lock:
            a = self.ctl.state.agents.get(name)
            if a is not None:
                a.frozen = frozen

    def _drain(self) -> None:
        probes = self.ctl.probes
        assert probes is not None
        for _ in range(MAX_DRAIN_ROUNDS):
            if probes.poll(0) == 0:
                break
        self.ctl.apply_pending()

    def _judge(self, name: str, cg) -> int:
        """Every process of the agent through the engine, as a fresh exec."""
        ctl = self.ctl
        assert ctl.engine is not None
        agent_id = next((aid for aid, n in ctl.names.items() if n == name), 0)
        n = 0
        for pid in cg.pids():
            ev = proc_exec_event(pid, agent_id)
            if ev is None:
                continue
            n += 1
            ctl._pending.extend(ctl.engine.on_event(ev, ctl.clock.monotonic()))
        ctl.apply_pending()
        return n

    def _continue_held(self, cg) -> int:
        """SIGCONT the tasks the kernel stopped in this agent that are still
        alive (those judged deny were killed above); forget exited ones."""
        probes = self.ctl.probes
        assert probes is not None
        mine = set(cg.pids())
        n = 0
        for pid in probes.held_pids():
            if pid in mine:
                # out of pc_exec_held first, then SIGCONT (the syscall gate
                # kills a held task that runs while it is still listed)
                n += probes.release_held(pid)
            elif not os.path.exists(f"/proc/{pid}"):
                probes.settle_held(pid)   # gone; another agent's live one is its own catch-up's
        return n


def proc_exec_event(pid: int, agent_id: int, proc_root: str = "/proc") -> ExecEvent | None:
    """What an exec record of ``pid`` would have said, read from /proc: the
    executable the kernel runs (the exe link, not a name the agent chose)
    and its argv. None when the process is gone or is a kernel thread."""
    base = f"{proc_root}/{pid}"
    try:
        exe = os.readlink(f"{base}/exe").encode("utf-8", "surrogateescape")
        with open(f"{base}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"{base}/stat", "rb") as fh:
            stat = fh.read()
        start_ns = proc_start_ns(pid, proc_root)
    except (OSError, ValueError, IndexError):
        return None
    comm = stat[stat.index(b"(") + 1: stat.rindex(b")")][:16]
    ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
    argv = tuple(cmdline.rstrip(b"\0").split(b"\0")) if cmdline.strip(b"\0") else ()
    h = Header(type=EventType.EXEC, verdict=Verdict.ALLOW, flags=Flag(0), rule_id=0, pid=pid, tid=pid,
               ppid=ppid, uid=0, agent_id=agent_id, ts_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
               start_ns=start_ns, cgroup_id=0, comm=comm)
    return ExecEvent(h=h, filename=exe, argv=argv, argc=len(argv))
