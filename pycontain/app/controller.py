"""The controller loop shared by `pycontain run`, `pycontain daemon` and
`pycontain trace` (through app/session.py).

It drives the edges (probes, cgroups, actuators, the GPU sampler, the audit
log; all built by the injected app/edges.py factories) and feeds the pure
engine: kernel events, cgroup and GPU samples and the time go in, decisions
come out and are carried out and recorded. Nothing here decides policy.

Decisions are only collected in the ring-buffer callback and carried out once
the poll has returned; slow ones (a whole-agent kill that waits up to 5 s,
freeze, thaw, throttle: cgroup writes and NVML) on the action worker
(app/action_worker.py), so no action ever stops the ring from being drained.

Without a policy (``policy=None``, `pycontain trace`) the controller only
observes: monitor mode, empty deny tables, no engine, no actuator, and every
event of a tracked agent is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import threading
from collections import deque
from typing import Any

from ..actuate import held
from ..actuate.held_script import script_verdict
from ..actuate.ssh_config import ssh_forward
from ..core.decisions import Action, Decision
from ..core.engine import Engine
from ..core.errors import PycontainError
from ..core.events import (
    FLAG_HELD,
    FLAG_KILLED,
    FLAG_SCRIPT,
    BoundaryEvent,
    ConfigFlag,
    Event,
    ExecEvent,
    Mode,
    NetEvent,
    Verdict,
)
from ..core.gpu_rules import GpuRules
from ..core.hooks_needed import hooks_needed
from ..core.kernel_rules import KernelTables, compile_policy
from ..core.records import connection_entry, decision_records, event_record, routine_connection, routine_line
from ..core.resolve import Resolver, hosts_in_policy
from ..core.rule_ids import meta_by_id
from ..gpu.loop import GpuUseLog, gpu_step, use_by_agent
from ..gpu.safety import gpu_memory_fn
from ..gpu.sampler import GpuSampler, check_gpu_requirement
from ..kernel.loader import Probes
from ..observe.audit import AuditLog
from ..observe.state import AgentState, GpuUse, NodeState
from .action_worker import SLOW_ACTIONS, ActionWorker
from .edges import Edges, boot_to_wall_offset
from .loss import LossGuard
from .routine import RoutineNet

__all__ = ["SAMPLE_INTERVAL_S", "Controller", "boot_to_wall_offset"]

log = logging.getLogger("pycontain")

SAMPLE_INTERVAL_S = 1.0
_CONNECTION_KINDS = ("connect", "send")
# 4 MB (run: 1 MB): 128 agents released into exec loops at once overran 1 MB
# (scripts/bench_scale.py, records lost), an exec record being ~0.7 KB
NODE_VERDICT_PAGES = 1024
HOLD_TIMEOUT_S = 2.0      # a held exec nobody decided on by then is killed (lost record: fail closed)


class Controller:
    def __init__(self, policy, *, audit: AuditLog, state: NodeState,
                 report=None, allow_no_gpu: bool = False, progress=None,
                 trace_all: bool = False, edges: Edges | None = None, gpu_devices=None):
        self.policy = policy                # None: observe only (trace)
        self.audit = audit
        self.state = state
        self.report = report or (lambda rec: None)
        self.allow_no_gpu = allow_no_gpu
        self.progress = progress or (lambda msg: None)
        self.trace_all = trace_all
        self.edges = edges or Edges()
        self.clock = self.edges.clock
        self.gpu_devices = gpu_devices    # gpu/devices.py GpuDevices: GPU allocation per agent, or None
        self.cgroups: dict = {}           # agent name -> AgentCgroup
        self.names: dict[int, str] = {}   # agent id -> name (the engine's own map once started)
        self._next_id = 1
        self.probes: Probes | None = None
        self.engine: Engine | None = None
        self.actuator: Any = None         # edges.actuator(...): an Actuator, or a test fake
        self.gpu: tuple[GpuSampler, GpuRules | None] | None = None   # (sampler, rules or None) or None
        self.resolver: Resolver | None = None
        self.handler_errors = 0           # decisions collected in the callback that failed later
        self._pending: list[Decision] = []
        self._counts: dict[tuple[str, str], int] = {}   # (agent, kind) -> events of this poll
        self._connections: list[tuple[str, dict]] = []  # (agent, recent connection) of this poll
        self._held: list[tuple[int, int]] = []   # (pid, boot ns of the exec) held at exec (issue 11)
        self.hold_ns: deque[int] = deque(maxlen=10_000)   # exec -> release, for scripts/bench_exec_hold.py
        self._gpu_use_log = GpuUseLog()
        self._offset = self.clock.boot_offset()
        self._last_sample = 0.0
        self._last_gpu = 0.0
        self.started_ready_s: float | None = None
        self.on_birth: Any = None          # daemon: called with each cgroup-birth event (issue 10)
        self.loss = LossGuard(self)
        self.pin_root: str | None = None   # set by the daemon before start(): kernel/pins.py
        self.worker: ActionWorker | None = None    # slow actions, once an actuator exists
        self.routine: RoutineNet | None = None     # repeat allowed destinations counted in the kernel

    @property
    def observe_only(self) -> bool:
        return self.policy is None

    @property
    def rules(self) -> dict[int, str]:
        """Kernel rule id -> rule name: one map, the engine's."""
        return self.engine.rules if self.engine is not None else {}

    # ---- life cycle -------------------------------------------------------

    def start(self) -> None:
        t0 = self.clock.monotonic()
        # NVML start-up (up to a second on big nodes) and DNS overlap the
        # probe compile (~1.5 s of clang): both are needed only after it
        side: dict = {}

        def side_work():
            try:
                self.resolver = self._make_resolver()
                self._start_gpu()
            except BaseException as e:      # re-raised in this thread below
                side["error"] = e
        worker = threading.Thread(target=side_work, name="start-side", daemon=True)
        worker.start()
        self.progress("compiling and loading the BPF probes")
        # the node daemon: enforcement outlives it, and its decision ring takes
        # the exec bursts of every agent on the node at once
        node = {"pin_root": self.pin_root, "verdict_pages": NODE_VERDICT_PAGES} if self.pin_root else {}
        probes: Probes = self.edges.probes(progress=self.progress, trace_all=self.trace_all, **node)
        self.probes = probes
        probes.on_event = self.on_event
        try:
            probes.load()
        finally:
            worker.join()
        if "error" in side:
            probes.close()
            raise side["error"]
        if self.observe_only:
            flags = ConfigFlag.TRACE_ALL if self.trace_all else ConfigFlag(0)
            probes.set_tables(KernelTables(mode=Mode.MONITOR, flags=flags))
        else:
            resolved = self.resolver.addresses if self.resolver else None
            tables = compile_policy(self.policy, resolved)
            probes.set_tables(tables)
            self.engine = Engine(self.policy, resolved, rules=tables.rules)
            self.audit.rule_meta = meta_by_id(self.policy)       # severity and tags in audit records
            self.names = self.engine.names
            self.routine = RoutineNet(probes, self.names, self._record, self._count_repeats, self.clock.wall,
                                      self.clock.boot_ns)
            # stuck-kill reports carry the GPU memory still held; cuda-checkpoint locks need it too
            self.actuator = self.edges.actuator(self.cgroups, gpu_memory=gpu_memory_fn(self._nvml()),
                                                report_retry=self._record_kill_retry)
            self.worker = ActionWorker()
            with self.state.lock:
                self.state.policy_name = self.policy.name
                self.state.mode = self.policy.mode
        self._publish_hooks()
        self.started_ready_s = self.clock.monotonic() - t0

    def _publish_hooks(self) -> None:
        assert self.probes is not None
        status = dict(self.probes.hook_status())
        with self.state.lock:
            self.state.probes = status
            self.state.probes_needed = hooks_needed(self.policy, status)

    def _make_resolver(self) -> Resolver | None:
        hosts = hosts_in_policy(self.policy) if self.policy is not None else []
        if not hosts:
            return None
        r = Resolver(hosts, self.edges.lookup, interval_s=self.policy.network.resolve_interval_s)
        r.refresh(self.clock.monotonic())
        return r

    def _start_gpu(self) -> None:
        if self.edges.nvml is None:
            return
        nvml = self.edges.nvml()
        if self.observe_only:
            if nvml.available:
                self.gpu = (GpuSampler(nvml), None)
            return
        check_gpu_requirement(self.policy.gpu, self.allow_no_gpu, nvml)
        if self.allow_no_gpu and not nvml.available:
            self._record({"ts": self.clock.wall(), "agent": "-", "kind": "notice", "pid": None,
                          "message": f"GPU rules are off (--allow-no-gpu; NVML is {nvml.status}): GPU memory and "
                                     "utilisation budgets, GPU program, correlation and signature rules are not "
                                     "enforced"})
        with self.state.lock:
            self.state.gpu_available = nvml.available
            self.state.gpu_status = nvml.status
        if nvml.available:
            self.gpu = (GpuSampler(nvml, interval_s=self.policy.gpu.sample_interval_s), GpuRules(self.policy.gpu))

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.actuator:
            self.actuator.close()
        if self.gpu_devices is not None:
            self.gpu_devices.close()
        if self.probes:
            try:
                self.drain()
            except Exception:  # pragma: no cover - best effort drain
                pass
            self.probes.close()
            self.probes = None
        if self.gpu:
            try:
                self.gpu[0].nvml.shutdown()
            except Exception:  # pragma: no cover
                pass

    # ---- agents -------------------------------------------------------------

    def add_agent(self, name: str, cgroup, *, apply_budgets: bool = True, agent_id: int | None = None,
                  labels: dict | None = None) -> int:
        """`agent_id`: the id the kernel gave a cgroup it marked at birth."""
        if agent_id is None and self.probes is not None:
            agent_id = self.probes.born_agent_id(cgroup.v2_path)
        if agent_id is None:
            agent_id = self._next_id
            self._next_id += 1
        b = self.policy.budgets if self.policy is not None else None
        if apply_budgets and b is not None:
            cgroup.set_budgets(cpu_cores=b.cpu, memory_bytes=b.memory_bytes,
                               memory_high_bytes=b.memory_high_bytes, pids=b.pids)
        if self.gpu_devices is not None:
            self.gpu_devices.confine(name, cgroup)     # before the agent runs / is tracked
        assert self.probes is not None, "add_agent before start()"
        self.probes.track_cgroup(cgroup.v2_path, agent_id)
        if self.engine is not None:
            self.engine.add_agent(agent_id, name)    # the engine's names map is self.names
            self.engine.set_agent_since(name, self.clock.wall())
        else:
            self.names[agent_id] = name
        self.cgroups[name] = cgroup
        self.audit.set_agent(name, cgroup.v2_path)     # pod / job identity in its audit lines
        with self.state.lock:
            self.state.agents[name] = AgentState(name=name, cgroup=cgroup.v2_path, agent_id=agent_id,
                                                 cpu_limit_cores=b.cpu if b else None,
                                                 memory_limit_bytes=b.memory_bytes if b else None,
                                                 labels=dict(labels or {}))
        self._record({"ts": self.clock.wall(), "agent": name, "kind": "agent-start", "pid": None,
                      "cgroup": cgroup.v2_path, **({"labels": labels} if labels else {})})
        return agent_id

    def remove_agent(self, name: str) -> None:
        cg = self.cgroups.pop(name, None)
        if cg is None:
            return
        try:
            assert self.probes is not None
            self.probes.untrack_cgroup(cg.v2_path)
        except Exception as e:  # the cgroup may be gone already
            log.debug("untrack %s: %s", name, e)
        if self.routine is not None:      # an agent id may be reused: its destinations go
            for agent_id in [k for k, v in self.names.items() if v == name]:
                self.routine.forget(agent_id)
        if self.engine is not None:
            self.engine.remove_agent(name)
        if self.gpu_devices is not None:
            self.gpu_devices.release(name)
        for k in [k for k, v in self.names.items() if v == name]:
            del self.names[k]
        with self.state.lock:
            self.state.agents.pop(name, None)
        self._record({"ts": self.clock.wall(), "agent": name, "kind": "agent-stop", "pid": None})
        self.audit.forget_agent(name)

    # ---- events and decisions ---------------------------------------------

    def on_event(self, ev: Event) -> None:
        """The ring-buffer callback: record, count, and collect the engine's
        decisions; they are carried out after the poll (apply_pending)."""
        h, kind = ev.h, ev.kind
        if kind == "cgroup_birth" and self.on_birth is not None:
            self.on_birth(ev)     # the daemon adopts it after the poll
        name = self.names.get(h.agent_id, "host")
        if self._routine_event(ev, name, kind):
            return
        if h.flags & FLAG_HELD:
            if isinstance(ev, ExecEvent) and not self.observe_only:
                ev = self._held_exec(ev)     # read before the record: it names the file and the whole argv
            if isinstance(ev, BoundaryEvent) and self.probes is not None:
                self._kill_held(ev.moved_pid)   # born into another cgroup (clone3): never released, only killed
        rec = event_record(ev, name, self._offset + h.ts_ns / 1e9, self.rules)
        allowed = h.verdict == Verdict.ALLOW
        # routine lines are flushed after the poll (drain); a denied one now
        self.audit.write(rec, flush=not allowed)
        key = (name, kind)
        self._counts[key] = self._counts.get(key, 0) + 1     # into state.events_total after the poll
        if h.flags & FLAG_KILLED or kind in _CONNECTION_KINDS:
            self._count_event(name, kind, h.flags, rec)
        if self.policy is None or (self.trace_all and name == "host"):     # observe only
            self.report(rec)
            return
        if not allowed or kind == "stratum":
            self.report(rec)
        assert self.engine is not None      # not observe-only: start() built it
        self._pending.extend(self.engine.on_event(ev, self.clock.monotonic()))
        if isinstance(ev, NetEvent) and self.routine is not None and self.engine.routine_net(ev):
            self.routine.note(ev)

    def _routine_event(self, ev: Event, name: str, kind: str) -> bool:
        """An allowed record with no rule nor kill (most records): its audit
        line written straight from the event (records.routine_line), counted,
        a connect kept for the state API, and the engine told as on the
        general path. False: the general path (observing, a verdict, a kill,
        a held exec)."""
        if self.policy is None or self.trace_all:
            return False
        ts = self._offset + ev.h.ts_ns / 1e9
        line = routine_line(ev, name, ts, self.audit.line_tail(name))
        if line is None:
            return False
        self.audit.write_line(line)
        key = (name, kind)
        self._counts[key] = self._counts.get(key, 0) + 1
        if kind in _CONNECTION_KINDS:
            assert isinstance(ev, NetEvent)
            self._connections.append((name, routine_connection(ev, ts)))
        assert self.engine is not None
        self._pending.extend(self.engine.on_event(ev, self.clock.monotonic()))
        if isinstance(ev, NetEvent) and self.routine is not None and self.engine.routine_net(ev):
            self.routine.note(ev)
        return True

    def _count_event(self, name: str, kind: str, flags: int, rec: dict) -> None:
        if flags & FLAG_KILLED:      # the kernel killed it (exec deny): an action like any other
            with self.state.lock:
                self.state.actions_total[(name, "kill")] += 1
        if kind in _CONNECTION_KINDS:
            self._connections.append((name, connection_entry(rec)))

    def _fold_counts(self) -> None:
        """The poll's event counts into state.events_total and its connects
        into the agents' recent connections: one lock per poll, not one per
        record (scripts/bench_records.py)."""
        counts, self._counts = self._counts, {}
        conns, self._connections = self._connections, []
        if counts or conns:
            with self.state.lock:
                self.state.events_total.update(counts)
                for name, conn in conns:
                    agent = self.state.agents.get(name)
                    if agent is not None:
                        agent.connections.append(conn)

    def _held_exec(self, ev: ExecEvent) -> ExecEvent:
        """An exec the kernel holds for this verdict (issue 11): judged on the
        whole argv and the kernel's path of the file, read while it cannot run."""
        self._held.append((ev.h.pid, ev.h.ts_ns))
        argv = held.full_argv(ev.h.pid) if ev.args_truncated else None
        ev = dataclasses.replace(ev, real_path=held.real_path(ev.h.pid), argv=argv or ev.argv,
                                 full_argv=argv is not None)
        if ev.h.flags & FLAG_SCRIPT and self.policy is not None and self.engine is not None:
            since = self.engine.agent_since.get(self.engine.names.get(ev.h.agent_id, ""))
            ev = dataclasses.replace(ev, untrusted_script=script_verdict(ev, self.policy.exec.trusted, since))
        return dataclasses.replace(ev, ssh_forward=ssh_forward(ev))

    def apply_pending(self) -> None:
        """Carry out the decisions collected during the last poll. One that
        fails is logged and counted (handler errors), the rest still go."""
        pending, self._pending = self._pending, []
        self.dispatch(pending)
        self._settle_held(pending)

    def dispatch(self, decisions: list[Decision]) -> None:
        """From the intake path: slow actions to the worker, the rest now."""
        for d in decisions:
            if self.worker is not None and d.action in SLOW_ACTIONS and not d.monitor:
                self.worker.submit(functools.partial(self._apply_guarded, d))
            else:
                self._apply_guarded(d)

    def _apply_guarded(self, d: Decision) -> None:
        try:
            self.apply([d])
        except Exception:
            self.handler_errors += 1
            log.exception("carrying out %s for %s failed", d.action.value, d.agent)

    def _settle_held(self, decided: list[Decision]) -> None:
        """Release the held execs of this batch that no decision stopped; the
        others are killed here too (a kill the actuator skipped or that failed
        must not leave a held program to be continued by someone else)."""
        held_pids, self._held = self._held, []
        if not held_pids or self.probes is None:
            return
        stop = {d.pid for d in decided if d.action == Action.KILL_PROCESS and not d.monitor}
        stop_agents = {d.agent for d in decided if d.action == Action.KILL and not d.monitor}
        for pid, ts_ns in held_pids:
            info = self.engine.processes.lookup(pid) if self.engine is not None else None
            if pid in stop or (info is not None and info.agent in stop_agents):
                self._kill_held(pid)
            elif self.probes.release_held(pid):
                self.hold_ns.append(self.clock.boot_ns() - ts_ns)

    def _kill_held(self, pid: int) -> None:
        assert self.probes is not None
        try:
            # stopped since its exec: the pid cannot have been reused. A child
            # born into another cgroup (clone3) may be dead and reaped already
            # (the gate killed it): its pid comes back only after pid_max wraps
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.probes.settle_held(pid)

    def _expire_held(self) -> None:
        """Fail closed: a held exec whose record never arrived (ring full,
        decode error) is killed after HOLD_TIMEOUT_S."""
        assert self.probes is not None
        now_ns = self.clock.boot_ns()
        for pid, since_ns in self.probes.held_pids().items():
            if now_ns - since_ns > HOLD_TIMEOUT_S * 1e9:
                log.warning("held exec %d undecided after %.1fs: killed", pid, HOLD_TIMEOUT_S)
                self._kill_held(pid)

    def apply(self, decisions: list[Decision]) -> None:
        for d in decisions:
            result = None
            if d.action not in (Action.ALERT, Action.DENY):
                result = self.actuator.apply(d) if self.actuator else "failed: no actuator"
            now = self.clock.wall()
            for rec in decision_records(d, now, result):
                self._record(rec)
            self._count(d, now, result)

    def _count(self, d: Decision, now: float, result: str | None) -> None:
        with self.state.lock:
            self.state.violations_total[(d.agent, d.rule)] += 1
            if result is not None and result == "done":
                self.state.actions_total[(d.agent, d.action.value)] += 1
            a = self.state.agents.get(d.agent)
            if a is None:
                return
            a.violations.append({"ts": now, "rule": d.rule, "action": d.action.value,
                                 "reason": d.reason, "pid": d.pid, "monitor": d.monitor,
                                 "result": result})
            if result == "done":
                if d.action == Action.FREEZE:
                    a.frozen = True
                elif d.action == Action.THAW:
                    a.frozen = False
                    a.throttled = False
                elif d.action == Action.THROTTLE:
                    a.throttled = True

    def _nvml(self):
        return self.gpu[0].nvml if self.gpu else None

    def _record_kill_retry(self, agent: str, result: str) -> None:
        self._record({"ts": self.clock.wall(), "agent": agent, "kind": "action", "rule": "kill-retry",
                      "action": "kill", "result": result, "pid": None})

    def _record(self, rec: dict) -> None:
        self.audit.write(rec)
        if rec.get("kind") in ("violation", "action", "gpu-use", "notice"):
            self.report(rec)

    # ---- the loop -------------------------------------------------------------

    def drain(self, timeout_ms: int = 0) -> None:
        """Poll the ring, then carry out what the events called for."""
        assert self.probes is not None
        self.probes.poll(timeout_ms)
        self.audit.flush()
        self._fold_counts()
        self.apply_pending()
        self.loss.check()

    def step(self, timeout_ms: int = 100) -> None:
        self.drain(timeout_ms)
        now = self.clock.monotonic()
        if now - self._last_sample >= SAMPLE_INTERVAL_S:
            self._last_sample = now
            if self.engine is not None:
                self._sample_cgroups(now)
            self._publish_losses()
        if self.routine is not None and self.routine.due(now):
            self.routine.report(now)
            if self.engine is not None:
                self._expire_held()
            if self.resolver and self.resolver.due(now) and self.resolver.refresh(now):
                self._rewrite_tables()
        gpu_interval = self.policy.gpu.sample_interval_s if self.policy is not None else SAMPLE_INTERVAL_S
        if self.gpu and now - self._last_gpu >= gpu_interval:
            self._last_gpu = now
            self._gpu_step(now)
        if self.engine is not None:
            self.dispatch(self.engine.tick(now))

    def _count_repeats(self, name: str, n: int) -> None:
        with self.state.lock:
            self.state.events_total[(name, "net-repeat")] += n

    def _publish_losses(self) -> None:
        assert self.probes is not None
        with self.state.lock:
            self.state.lost_kernel = self.probes.lost_kernel()
            self.state.lost_user = self.probes.decode_errors
            self.state.handler_errors = self.probes.handler_errors + self.handler_errors

    def _sample_cgroups(self, now: float) -> None:
        for name, cg in list(self.cgroups.items()):
            try:
                s = cg.sample()
            except OSError:
                continue
            with self.state.lock:
                a = self.state.agents.get(name)
                if a is not None:
                    a.pids, a.cpu_usage_seconds, a.memory_bytes = s.pids, s.cpu_usage_seconds, s.memory_bytes
                    if s.cpu_limit_cores is not None:
                        a.cpu_limit_cores = s.cpu_limit_cores
                    if s.memory_max_bytes is not None:
                        a.memory_limit_bytes = s.memory_max_bytes
            assert self.engine is not None
            self.dispatch(self.engine.on_cgroup_sample(name, s, now))

    def _gpu_step(self, now: float) -> None:
        assert self.gpu is not None
        sampler, rules = self.gpu
        self.dispatch(gpu_step(sampler, rules, self.engine, self.cgroups, now, on_use=self._on_gpu_use,
                               on_unattributed=self._on_gpu_unattributed))

    def _on_gpu_unattributed(self, samples) -> None:
        """Utilisation of pids that exited unseen: not an agent's as far as
        anyone can tell, but counted, so a miner's short processes escaping
        attribution shows on the metrics rather than nowhere."""
        with self.state.lock:
            self.state.gpu_unattributed += len(samples)
        log.debug("GPU: %d reading(s) of exited pids no record names", len(samples))

    def _on_gpu_use(self, sample, attributed) -> None:
        for rec in self._gpu_use_log.new_records(sample, attributed, self.clock.wall()):
            self._record(rec)
        per = use_by_agent(sample, attributed)
        with self.state.lock:
            self.state.gpu_status = sample.status
            for name, agent in self.state.agents.items():
                agent.gpu = [GpuUse(device=d, uuid=u, memory_bytes=m, sm_util=s) for d, u, m, s in per.get(name, [])]

    def _compile(self, policy) -> KernelTables:
        """The policy's kernel tables with the current DNS answers, written to
        the maps; raises before anything changes."""
        tables = compile_policy(policy, self.resolver.addresses if self.resolver else None)
        assert self.probes is not None
        self.probes.set_tables(tables)
        return tables

    def _rewrite_tables(self) -> None:
        """New DNS answers into the maps. Tables that no longer fit are
        refused before any write (Probes.set_tables): the old addresses stay."""
        try:
            tables = self._compile(self.policy)
        except PycontainError as e:
            log.warning("new DNS answers not written, the previous addresses stay in force: %s", e.message)
            return
        assert self.engine is not None and self.resolver is not None
        self.engine.set_resolved(self.resolver.addresses, rules=tables.rules)
        if self.routine is not None:
            self.routine.forget()     # approvals may have changed: see each destination again

    def reload(self, policy) -> None:
        """Swap the policy in place: maps are rewritten entry by entry, so
        enforcement never has a gap. The policy is compiled once."""
        tables = self._compile(policy)
        assert self.engine is not None, "reload needs a policy at start"
        self.engine.replace_policy(policy, rules=tables.rules)
        self.policy = policy
        if self.routine is not None:
            self.routine.forget()     # approvals may have changed: see each destination again
        self.audit.rule_meta = meta_by_id(policy)
        self._publish_hooks()
        with self.state.lock:
            self.state.policy_name = policy.name
            self.state.mode = policy.mode
        self._record({"ts": self.clock.wall(), "agent": "-", "kind": "policy-reload", "pid": None,
                      "policy": policy.name})
