"""The decision engine (pure): events, samples and the time in, decisions out.

* Kernel verdicts (DENY / WOULD_DENY) become violations naming the kernel rule.
* Rules the kernel cannot express exactly (path globs, prefix globs,
  program-scoped arguments, exec allow-lists, address+port network rules) are
  evaluated here; their DENY becomes KILL_PROCESS, the only way to stop a
  process after the fact.
* Budgets (CPU, memory, pids from cgroup samples; GPU from GpuRules breaches)
  and repeated violations go through one escalation ladder per rule.
* Monitor mode: every decision is marked monitor and nothing is enforced.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeAlias

from .decisions import BOUNDARY_RULE, Action, Breach, Decision, GpuDetail, GpuThrottle
from .escalation import RESPAWN_KILLS, BreachKey, Escalator, Respawns
from .events import (
    FLAG_FILELESS,
    FLAG_HELD,
    FLAG_KILLED,
    FLAG_OTHER_MOVER,
    FLAG_THREAD,
    MAP_CALL_UNTRACKED,
    BoundaryEvent,
    Event,
    ExecEvent,
    ExecMapEvent,
    ExitEvent,
    ForkEvent,
    NetEvent,
    SocketEvent,
    StdioSocketEvent,
    StratumEvent,
    UnixEvent,
    Verdict,
)
from .kernel_rules import compile_policy, kernel_exec_places
from .lineage import Condemned
from .matchers import GlobList
from .policy import NetRule, Policy
from .policy_args import program_args, program_identity
from .processes import ProcessTable
from .rule_ids import rule_id
from .samples import CgroupSample
from .text import safe_text

CPU_BREACH_RATIO = 0.95
PIDS_BREACH_RATIO = 0.95
KERNEL_DONE = (Action.DENY, Action.KILL_PROCESS)   # exec/connect: the kernel already did these
NET_CACHE_MAX = 4096   # destinations whose verdict is remembered until the policy or DNS changes
EXEC_CACHE_MAX = 256   # commands whose user-space exec rule verdict is remembered, likewise
EXEC_CACHE_KEY_BYTES = 1024   # longer commands (a held exec's whole argv) are judged each time

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
# (index in the policy's list, the rule, its networks: CIDRs and resolved host addresses)
_NetEntry: TypeAlias = tuple[int, NetRule, list[_Network]]
# an event handler, as found in Engine._HANDLERS: it takes the event dataclass
# it is registered for (the table pairs them), so the event argument is Any here
_Handler: TypeAlias = Callable[["Engine", Any, str, float], list[Decision]]


def family_name(family: int) -> str:
    """AF_VSOCK for 40; the number where this Python does not know it."""
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"family {family}"


class Engine:
    def __init__(self, policy: Policy, resolved: Mapping[str, list[str]] | None = None,
                 rules: Mapping[int, str] | None = None):
        self.processes = ProcessTable()
        self.condemned = Condemned()      # issue 11: kill-process takes the descendants too
        self.escalator = Escalator()
        self.respawns = Respawns()        # per-process GPU breaches, counted per agent
        self.names: dict[int, str] = {}
        self._cpu: dict[str, tuple[float, float]] = {}      # agent -> (now, cumulative seconds)
        self._cpu_hot: dict[str, int] = {}
        self.agent_since: dict[str, float] = {}             # agent -> wall-clock start (issue 11)
        self.resolved = dict(resolved or {})
        # issue 12: agent -> when (the `now` of on_event) any of its processes
        # last made an unapproved connection: GPU correlation per agent
        self.unapproved_at: dict[str, float] = {}
        self.replace_policy(policy, rules)

    # ---- configuration ----------------------------------------------------------

    def replace_policy(self, policy: Policy, rules: Mapping[int, str] | None = None) -> None:
        """``rules``: the kernel rule ids of compile_policy(policy, resolved),
        when the caller compiled the tables already (compiled here if not)."""
        self.policy = policy
        self.monitor = policy.mode == "monitor"
        # a breach that is not reported again within this time has cleared;
        # GPU breaches come once per GPU sample, so never faster than that
        self.escalator.clear_after_s = max(3.0, 2.5 * policy.gpu.sample_interval_s)
        self.rules = dict(rules) if rules is not None else compile_policy(policy, self.resolved).rules
        in_kernel = kernel_exec_places(policy)      # by place: rules may share an id (core/rule_ids.py)
        ex = policy.exec

        def user(section: str, globs: Sequence[str]) -> GlobList:
            return GlobList((rule_id(policy, f"{section}[{i}]"), g) for i, g in enumerate(globs)
                            if f"{section}[{i}]" not in in_kernel)
        self._exec_allow = GlobList(("exec.allow", g) for g in ex.allow)
        self._user_exec = user("exec.deny", ex.deny)
        self._user_args = user("exec.deny_args", ex.deny_args)
        # a held exec (issue 11) is judged on all rules: the kernel saw only part of its argv
        self._all_exec = GlobList((rule_id(policy, f"exec.deny[{i}]"), g) for i, g in enumerate(ex.deny))
        self._all_args = GlobList((rule_id(policy, f"exec.deny_args[{i}]"), g) for i, g in enumerate(ex.deny_args))
        self._prog_args = [(rule_id(policy, f"exec.deny_program_args[{i}]"), p, a)
                           for i, (p, a) in enumerate(ex.deny_program_args)]
        self._prog_names = GlobList((rule, p) for rule, p, _a in self._prog_args)
        self._nets = self._net_rules(policy)
        # agents talk to the same few destinations over and over: their
        # verdict depends only on the policy and DNS, both fixed until here
        self._net_cache: dict[tuple[str, int, str], tuple[bool, tuple[str, str] | None]] = {}
        # the same for commands (_user_exec_rule)
        self._exec_cache: dict[tuple[bytes, tuple[bytes, ...], bool], tuple[str, str] | None] = {}

    def set_resolved(self, resolved: Mapping[str, list[str]], rules: Mapping[int, str] | None = None) -> None:
        self.resolved = dict(resolved)
        self.replace_policy(self.policy, rules)

    def _net_rules(self, policy: Policy) -> dict[str, list[_NetEntry]]:
        def nets(r: NetRule) -> list[_Network]:
            out: list[_Network] = [ipaddress.ip_network(c, strict=False) for c in r.cidrs]
            for h in r.hosts:
                out += [ipaddress.ip_network(a) for a in self.resolved.get(h, [])]
            return out
        return {"deny": [(i, r, nets(r)) for i, r in enumerate(policy.network.deny)],
                "allow": [(i, r, nets(r)) for i, r in enumerate(policy.network.allow)]}

    def add_agent(self, agent_id: int, name: str) -> None:
        self.names[agent_id] = name

    def remove_agent(self, name: str) -> None:
        for k in [k for k, v in self.names.items() if v == name]:
            del self.names[k]
        self.processes.forget_agent(name)
        self.escalator.forget_agent(name)
        self.respawns.forget_agent(name)
        self._cpu.pop(name, None)
        self._cpu_hot.pop(name, None)
        self.agent_since.pop(name, None)
        self.unapproved_at.pop(name, None)

    # ---- helpers -----------------------------------------------------------------

    def _escalate(self, agent: str, rule: str, action_key: str, now: float, reason: str, *,
                  pid: int | None = None, start_ns: int | None = None, monitor: bool = False,
                  gpu: GpuDetail | None = None, user_space: bool = False, skip: tuple[Action, ...] = (),
                  sustained: bool = False) -> list[Decision]:
        """Run one breach through its action key's ladder. `sustained`:
        budgets and GPU rules (re-reported every sample, stepped up on time);
        otherwise an instant violation (stepped up only when it repeats).
        `user_space`: a rule the kernel did not enforce."""
        spec = self.policy.action(action_key)
        ladder = tuple(a for a in spec.ladder if a not in skip)
        if user_space:
            # the kernel could not deny it: stopping the process is the deny
            ladder = tuple(Action.KILL_PROCESS if a == Action.DENY else a for a in ladder)
        if not ladder:
            return []
        if action_key == "gpu_util" and Action.THROTTLE in ladder:
            # the actuator throttles the GPU by duty-cycling the agent, as the policy says now
            g = self.policy.gpu
            gpu = replace(gpu or GpuDetail(), throttle=GpuThrottle(g.throttle_duty_cycle, g.throttle_period_s))
        if pid is None:
            ladder = tuple(Action.KILL if a == Action.KILL_PROCESS else a for a in ladder)
        # a ladder that starts by killing one process is per process: (pid,
        # start time), so a reused pid never inherits another process's step
        per_process = pid if ladder[0] == Action.KILL_PROCESS else None
        key: BreachKey = (agent, rule) if per_process is None else (agent, rule, per_process, start_ns)
        out = self.escalator.breach(key, agent, rule, ladder, spec.grace_s, now, reason, pid=pid,
                                    start_ns=start_ns, monitor=monitor or self.monitor, gpu=gpu,
                                    sustained=sustained)
        if per_process is not None and sustained:
            out += self._respawned(agent, rule, per_process, start_ns, now, reason, spec.grace_s, monitor, gpu)
        return out

    def _respawned(self, agent: str, rule: str, pid: int, start_ns: int | None, now: float, reason: str,
                   grace_s: float, monitor: bool, gpu: GpuDetail | None) -> list[Decision]:
        """A per-process ladder kills each process once: a supervisor that
        restarts an unapproved GPU program under a new pid would be killed
        once per sample for ever, the agent never. RESPAWN_KILLS distinct
        processes with this breach within the window: the agent is killed,
        through a ladder of its own. Each further new process is
        killed with the agent again: one that appears after the agent's kill
        came from a new run (a reused daemon cgroup) or a survivor."""
        n, new = self.respawns.count(agent, rule, pid, start_ns, now)
        if n < RESPAWN_KILLS:
            return []
        key = (agent, f"{rule}/respawn")        # its own key: never resets the rule's agent-wide ladder
        if new:
            self.escalator.clear(key)               # (KILL,) has nothing to undo: no decision
        why = (f"{n} processes of the agent had this breach within {self.respawns.window_s:g}s (killing each "
               f"one does not stop it); latest: {reason}")
        return self.escalator.breach(key, agent, rule, (Action.KILL,), grace_s, now, why,
                                     monitor=monitor or self.monitor, gpu=gpu, sustained=True)

    # ---- events ------------------------------------------------------------------

    def on_event(self, ev: Event, now: float) -> list[Decision]:
        agent = self.names.get(ev.h.agent_id)
        if agent is None:
            return []
        handler = _handler_of(type(ev))
        if handler is None:
            return []
        out = handler(self, ev, agent, now)
        if isinstance(ev, ExecEvent):   # a descendant whose fork record was not seen
            out += self.condemned.late(self.processes.get(ev.h.pid, ev.h.start_ns), now)
        return self.condemned.family(out, self.processes, now) if out else out

    def _on_fork(self, ev: ForkEvent, agent: str, now: float) -> list[Decision]:
        h = ev.h
        if not h.flags & FLAG_THREAD:
            self.processes.on_fork(h.pid, ev.child_pid, h.ts_ns, agent)
            return self.condemned.late(self.processes.get(ev.child_pid, h.ts_ns), now)
        return []

    def _on_exit(self, ev: ExitEvent, agent: str, now: float) -> list[Decision]:
        h = ev.h
        if not h.flags & FLAG_THREAD:
            self.processes.on_exit(h.pid, h.start_ns, now)
        return []

    def _on_socket(self, ev: SocketEvent, agent: str, now: float) -> list[Decision]:
        if ev.h.verdict == Verdict.ALLOW:
            return []
        what = f"socket({family_name(ev.family)}, type {ev.sock_type})"
        return self._kernel_violation(ev, agent, now, "socket", f"{what} denied in the kernel", what)

    def _kernel_violation(self, ev: Event, agent: str, now: float, key: str, reason: str,
                          what: str | None = None) -> list[Decision]:
        """``reason`` says what the kernel did; in monitor mode it did not,
        and the reason says "would deny ``what``" instead."""
        h = ev.h
        monitor = self.monitor or h.verdict == Verdict.WOULD_DENY
        if monitor:
            reason = f"would deny {what or reason} (monitor mode: allowed to proceed)"
        rule = self.rules.get(h.rule_id, f"kernel#{h.rule_id}")
        out = [Decision(agent=agent, rule=rule, action=Action.DENY, reason=reason, pid=h.pid,
                        start_ns=h.start_ns or None, monitor=monitor)]
        # anything stronger the policy asks for (e.g. exec: kill → the whole agent)
        out += self._escalate(agent, rule, key, now, reason, monitor=monitor, skip=KERNEL_DONE)
        return out

    def _on_exec(self, ev: ExecEvent, agent: str, now: float) -> list[Decision]:
        h = ev.h
        info = self.processes.on_exec(h.pid, h.start_ns, agent, h.ppid, ev.filename, ev.argv, h.ts_ns)
        if h.verdict != Verdict.ALLOW:
            fname = safe_text(ev.filename, 256)
            return self._kernel_violation(ev, agent, now, "exec",
                                          f"exec {fname} denied in the kernel: killed before it ran", f"exec {fname}")
        held = bool(h.flags & FLAG_HELD)
        hit = self._user_exec_rule(ev.filename, ev.argv, everything=held)
        if hit is None and ev.real_path and ev.real_path != ev.filename:
            hit = self._user_exec_rule(ev.real_path, ev.argv, everything=held)   # the file that runs (issue 11)
        if hit is None:
            hit = self._truncated_args(ev)
        if hit is None and ev.ssh_forward:
            hit = "network.ssh.forward", ev.ssh_forward     # issue 12: the effective ssh configuration
        if hit is None and ev.untrusted_script:
            hit = "exec.trusted", ev.untrusted_script       # issue 11: a #! script exec.trusted does not admit
        if hit is None:
            return self._exec_alerts(ev, agent)
        rule, why = hit
        fname = safe_text(ev.filename, 256)
        if rule == "exec.truncated_args" and self.policy.exec.truncated_args == "alert":
            return [Decision(agent=agent, rule=rule, action=Action.ALERT, reason=f"exec {fname}: {why}",
                             pid=h.pid, start_ns=info.start_ns, monitor=self.monitor)]
        return self._escalate(agent, rule, "exec", now, f"exec {fname}: {why}", pid=h.pid, start_ns=info.start_ns,
                              user_space=True)

    def _truncated_args(self, ev: ExecEvent) -> tuple[str, str] | None:
        """issue 11: argument rules that could not see the whole argv fail closed."""
        ex = self.policy.exec
        if not ev.args_truncated or ev.full_argv or not (ex.deny_args or ex.deny_program_args):
            return None
        return "exec.truncated_args", "argv longer than the kernel reads and not readable whole"

    def set_agent_since(self, name: str, wall_s: float) -> None:
        """When the agent started (wall clock): files modified since are its own drops."""
        self.agent_since[name] = wall_s

    def _exec_alerts(self, ev: ExecEvent, agent: str) -> list[Decision]:
        """issue 11: what the default policy records without blocking: fileless
        execution under `exec.fileless: alert`, and files the agent wrote or
        modified since it started (drop-and-execute)."""
        h, exe = ev.h, ev.exe
        out = []
        if h.flags & FLAG_FILELESS and self.policy.exec.fileless == "alert":
            out.append(("exec.fileless", f"exec {safe_text(ev.filename, 256)}: fileless (memfd, deleted or "
                                         "O_TMPFILE file)"))
        since = self.agent_since.get(agent)
        if exe.known and since is not None and exe.mtime_sec >= int(since) and \
                (exe.uid == h.uid or exe.mode & 0o002):
            out.append(("exec.agent_written", f"exec {safe_text(ev.filename, 256)}: {safe_text(exe.name, 256)} "
                                              "was written by the agent"))
        return [Decision(agent=agent, rule=r, action=Action.ALERT, reason=why, pid=h.pid,
                         start_ns=h.start_ns or None, monitor=self.monitor) for r, why in out]

    def _user_exec_rule(self, filename: bytes, argv: Sequence[bytes],
                        everything: bool = False) -> tuple[str, str] | None:
        """The first user-space exec rule this command breaks. Agents run the
        same few commands over and over, and the answer depends only on the
        policy (fixed until replace_policy): remembered for commands of at
        most EXEC_CACHE_KEY_BYTES."""
        key = (filename, tuple(argv), everything)
        if key in self._exec_cache:
            return self._exec_cache[key]
        got = self._exec_rule(filename, argv, everything)
        if len(filename) + sum(len(a) for a in argv) <= EXEC_CACHE_KEY_BYTES:
            if len(self._exec_cache) >= EXEC_CACHE_MAX:
                self._exec_cache.clear()
            self._exec_cache[key] = got
        return got

    def _exec_rule(self, filename: bytes, argv: Sequence[bytes], everything: bool) -> tuple[str, str] | None:
        path = filename.decode(errors="replace")
        base = os.path.basename(path)
        args = [a.decode(errors="replace") for a in argv]
        ex = self.policy.exec

        def match(glob: str, p: str, b: str) -> bool:
            return fnmatch.fnmatchcase((p if "/" in glob else b).lower(), glob.lower())
        if ex.mode == "allow-list" and self._exec_allow.first(path, base) is None:
            return "exec.allow", "not on the exec allow-list"
        hit = (self._all_exec if everything else self._user_exec).first(path, base)
        if hit is not None:
            return hit[0], f"matches {hit[1]!r}"
        hit = (self._all_args if everything else self._user_args).first_arg(args)
        if hit is not None:
            return hit[0], f"an argument matches {hit[1]!r}"
        if self._prog_args:
            prog_base, prog_rest = program_identity(path, args)
            if self._prog_names.first(path, prog_base) is None and \
                    (prog_base == base or self._prog_names.first(path, base) is None):
                return None   # no program-scoped rule names this program
            prog_tokens = program_args(prog_base, prog_rest)
            for rule, prog, g in self._prog_args:
                if (match(prog, path, prog_base) or (prog_base != base and match(prog, path, base))) \
                        and any(fnmatch.fnmatchcase(a, g) for a in prog_tokens):
                    return rule, f"{prog} with an argument matching {g!r}"
        return None

    def _approved(self, daddr: str, dport: int, proto: str) -> bool:
        """Unapproved destinations: denied by the kernel (handled by the
        caller), hit by a deny rule, or, when the policy has an allow list,
        not covered by it. Without an allow list nothing else is unapproved:
        the default policy must leave a typical agent (download data, then
        train on the GPU) running unchanged."""
        try:
            addr = ipaddress.ip_address(daddr)
        except ValueError:
            return True
        if self._net_deny(addr, dport, proto) is not None:
            return False
        if self.policy.network.allow:
            return self._net_allow(addr, dport, proto)
        return True

    @staticmethod
    def _covers(r: NetRule, nets: Sequence[_Network], addr: _Address, port: int, proto: str) -> bool:
        if r.protocol != "any" and r.protocol != proto:
            return False
        if r.ports and not any(lo <= port <= hi for lo, hi in r.ports):
            return False
        if (r.cidrs or r.hosts) and not any(addr.version == n.version and addr in n for n in nets):
            return False
        return True

    def _net_deny(self, addr: _Address, port: int, proto: str) -> int | None:
        for i, r, nets in self._nets["deny"]:
            if self._covers(r, nets, addr, port, proto):
                return i
        return None

    def _net_allow(self, addr: _Address, port: int, proto: str) -> bool:
        return any(self._covers(r, nets, addr, port, proto) for _i, r, nets in self._nets["allow"])

    def user_net_rule(self, daddr: str, dport: int, proto: str) -> tuple[str, str] | None:
        """The network rule user space enforces on a connect/send the kernel
        allowed (address+port or protocol-specific deny rules; port/protocol
        limits of allow entries under `default: deny`), or None."""
        try:
            addr = ipaddress.ip_address(daddr)
        except ValueError:
            return None
        if addr.version == 6 and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        i = self._net_deny(addr, dport, proto)
        if i is not None:
            return rule_id(self.policy, f"network.deny[{i}]"), "matches a deny rule the kernel cannot express"
        if self.policy.network.default == "deny" and not self._net_allow(addr, dport, proto):
            return "network.default", "port or protocol not allowed for this address"
        return None

    def user_exec_rule(self, filename: bytes, argv: Sequence[bytes]) -> tuple[str, str] | None:
        """The exec rule user space enforces on an exec the kernel allowed, or None."""
        return self._user_exec_rule(filename, argv)

    def _on_net(self, ev: NetEvent, agent: str, now: float) -> list[Decision]:
        h = ev.h
        proto = ev.proto_name
        # network hooks cannot read the task's start time: match by the live pid
        info = self.processes.lookup(h.pid) or self.processes.ensure(h.pid, h.start_ns, agent, h.ppid)
        if h.verdict != Verdict.ALLOW:
            dest = f"{ev.daddr}:{ev.dport}/{proto}"
            if info.unapproved_connect_ns is None:
                info.unapproved_connect_ns = h.ts_ns
            self.unapproved_at[agent] = now
            return self._kernel_violation(ev, agent, now, "network",
                                          f"{ev.kind} to {dest} denied in the kernel (EPERM)", f"{ev.kind} to {dest}")
        approved, hit = self._net_verdict(ev.daddr, ev.dport, proto)
        if not approved:
            self.unapproved_at[agent] = now
            if info.unapproved_connect_ns is None:
                info.unapproved_connect_ns = h.ts_ns
        if hit is None:
            return []
        rule, why = hit
        dest = f"{ev.daddr}:{ev.dport}/{proto}"
        return self._escalate(agent, rule, "network", now, f"{ev.kind} to {dest}: {why}", pid=h.pid,
                              start_ns=info.start_ns, user_space=True)

    def routine_net(self, ev: NetEvent) -> bool:
        """True when repeats of this allowed connect/send may be counted in
        the kernel instead of reported (issue 14 part 3): the kernel allowed
        it, the policy approves the destination (an unapproved one marks the
        process for GPU correlation) and no user-space rule applies."""
        if type(ev) is not NetEvent or ev.kind not in ("connect", "send") or ev.h.verdict != Verdict.ALLOW:
            return False
        return self._net_verdict(ev.daddr, ev.dport, ev.proto_name) == (True, None)

    def _net_verdict(self, daddr: str, dport: int, proto: str) -> tuple[bool, tuple[str, str] | None]:
        """(approved, user-space rule hit) for a destination the kernel allowed."""
        key = (daddr, dport, proto)
        got = self._net_cache.get(key)
        if got is None:
            if len(self._net_cache) >= NET_CACHE_MAX:
                self._net_cache.clear()
            got = self._net_cache[key] = (self._approved(daddr, dport, proto),
                                          self.user_net_rule(daddr, dport, proto))
        return got

    def _on_stratum(self, ev: StratumEvent, agent: str, now: float) -> list[Decision]:
        h = ev.h
        info = self.processes.lookup(h.pid)
        if info is not None and info.unapproved_connect_ns is None:
            info.unapproved_connect_ns = h.ts_ns
        self.unapproved_at[agent] = now
        dest = f"{ev.daddr}:{ev.dport}"
        reason = f"mining protocol (stratum) to {dest}: {safe_text(ev.payload, 60)}"
        monitor = self.monitor or h.verdict == Verdict.WOULD_DENY
        rule = self.rules.get(h.rule_id, "network.stratum")
        shown = f"would deny {reason} (monitor mode: not dropped)" if monitor else reason + " (dropped)"
        out = [Decision(agent=agent, rule=rule, action=Action.DENY, reason=shown, pid=h.pid, monitor=monitor)]
        out += self._escalate(agent, rule, "stratum", now, reason, monitor=monitor, skip=(Action.DENY,))
        return out

    # engine logic per event dataclass (which type is which: core.event_types)
    def _on_boundary(self, ev: BoundaryEvent, agent: str, now: float) -> list[Decision]:
        """An agent task left its agent's cgroup (issue 10). The kernel killed
        the mover when it was the agent; a task moved by another one is killed
        here (its identity in the kernel says it is the agent's)."""
        h = ev.h
        monitor = self.monitor or h.verdict == Verdict.WOULD_DENY
        where = safe_text(ev.path, 256)
        killed = bool(h.flags & FLAG_KILLED) and not h.flags & FLAG_OTHER_MOVER
        action = Action.DENY if killed or monitor else Action.KILL_PROCESS
        if h.flags & FLAG_HELD:   # clone3(CLONE_INTO_CGROUP): the kernel's syscall gate kills it
            reason = (f"pid {ev.moved_pid} born into cgroup {where} outside the agent's "
                      "(clone into cgroup): killed at its first system call")
        else:
            reason = (f"pid {ev.moved_pid} moved out of the agent's cgroup to {where}"
                      + (": killed in the kernel" if killed else ""))
        return [Decision(agent=agent, rule=BOUNDARY_RULE, action=action, reason=reason, pid=ev.moved_pid,
                         monitor=monitor)]

    def _on_exec_map(self, ev: ExecMapEvent, agent: str, now: float) -> list[Decision]:
        """issue 11: a file mapped executable, judged by the kernel like an exec."""
        if ev.h.verdict == Verdict.ALLOW:
            return []
        name = safe_text(ev.exe.name, 256)
        what = {"mmap": f"executable mapping of {name}",
                "mprotect": f"mprotect(PROT_EXEC) of a mapping of {name}",
                "mremap": f"mremap of a mapping of {name}"}[ev.call]
        if ev.fd == MAP_CALL_UNTRACKED:
            what = "mprotect(PROT_EXEC) after more mappings of files it may not execute than the kernel tracks"
        return self._kernel_violation(ev, agent, now, "exec", f"{what} denied in the kernel: killed before it ran",
                                      what)

    def _on_stdio_socket(self, ev: StdioSocketEvent, agent: str, now: float) -> list[Decision]:
        """A reverse shell (issue 12): the kernel killed the exec whose stdio
        was a socket to a remote peer; anything stronger comes from `exec`."""
        killed = " (killed in the kernel before it ran)" if ev.h.flags & FLAG_KILLED else ""
        return self._kernel_violation(ev, agent, now, "exec",
                                      f"exec {safe_text(ev.h.comm, 16)} with stdin/stdout/stderr a socket "
                                      f"connected to {ev.daddr}:{ev.dport}: reverse shell{killed}")

    def _on_unix(self, ev: UnixEvent, agent: str, now: float) -> list[Decision]:
        """issue 10: a unix socket outside the agent, refused by the kernel."""
        where = safe_text(ev.shown, 128) if ev.name or ev.abstract else "an unreadable address"
        return self._kernel_violation(ev, agent, now, "network",
                                      f"unix connect to {where} denied in the kernel (EPERM)",
                                      f"unix connect to {where}")

    _HANDLERS: ClassVar[dict[type[Event], _Handler]] = {
        ExecMapEvent: _on_exec_map,
        ForkEvent: _on_fork, ExitEvent: _on_exit, ExecEvent: _on_exec, StratumEvent: _on_stratum,
        NetEvent: _on_net, SocketEvent: _on_socket, BoundaryEvent: _on_boundary,
        StdioSocketEvent: _on_stdio_socket, UnixEvent: _on_unix,
    }

    # ---- samples and breaches ---------------------------------------------------

    def on_cgroup_sample(self, agent: str, s: CgroupSample, now: float) -> list[Decision]:
        b = self.policy.budgets
        breaches = []
        prev = self._cpu.get(agent)
        self._cpu[agent] = (now, s.cpu_usage_seconds)
        if b.cpu and prev and now > prev[0]:
            rate = (s.cpu_usage_seconds - prev[1]) / (now - prev[0])
            if rate >= CPU_BREACH_RATIO * b.cpu:
                self._cpu_hot[agent] = self._cpu_hot.get(agent, 0) + 1
            else:
                self._cpu_hot[agent] = 0
            if self._cpu_hot[agent] >= 2:
                breaches.append(Breach(agent, "budget.cpu", "cpu",
                                       f"CPU use {rate:.2f} cores at the budget of {b.cpu:g}"))
        if b.memory_high_bytes and s.memory_bytes > b.memory_high_bytes:
            breaches.append(Breach(agent, "budget.memory", "memory",
                                   f"memory {s.memory_bytes} bytes above memory_high {b.memory_high_bytes}"))
        if b.pids and s.pids >= PIDS_BREACH_RATIO * b.pids:
            breaches.append(Breach(agent, "budget.pids", "pids", f"{s.pids} processes, budget {b.pids}"))
        # a budget back under its limit clears once it has stayed under for
        # the breach's hold (Escalator.tick), not at the first sample under:
        # 9 s over and 1 s under, again and again, reset the ladder each time
        # and was never killed. A budget the policy no longer has clears now.
        out: list[Decision] = []
        limits = {"budget.cpu": b.cpu, "budget.memory": b.memory_high_bytes, "budget.pids": b.pids}
        for rule, limit in limits.items():
            if not limit:
                out += self.escalator.clear((agent, rule), monitor=self.monitor)
        return out + self.on_breaches(breaches, now)

    def on_breaches(self, breaches: list[Breach], now: float) -> list[Decision]:
        out = []
        for br in breaches:
            out += self._escalate(br.agent, br.rule, br.action_key, now, br.reason, pid=br.pid,
                                  start_ns=br.start_ns, gpu=br.gpu, sustained=True)
        return self.condemned.family(out, self.processes, now)

    def tick(self, now: float) -> list[Decision]:
        return self.escalator.tick(now, monitor=self.monitor)


_HANDLER_OF: dict[type, _Handler | None] = {}


def _handler_of(cls: type) -> _Handler | None:
    """The handler of an event dataclass, or of its nearest base that has
    one (None: the engine ignores it), found once per class."""
    try:
        return _HANDLER_OF[cls]
    except KeyError:
        found = next((h for c in cls.__mro__ if (h := Engine._HANDLERS.get(c)) is not None), None)
        _HANDLER_OF[cls] = found
        return found
